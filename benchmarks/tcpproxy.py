"""A tiny TCP proxy that counts conversational "turns" between a client and a database.

A turn is one client->server burst: it starts whenever the client sends after the server
has sent (or for the first bytes of a connection). Everything the client sends before the
server's next reply belongs to the same turn, so a pipelined batch of statements is one
turn however many TCP segments it takes, and a statement-at-a-time exchange is one turn per
statement. Both directions are pumped by one selector thread, so the order in which the
proxy sees the bytes is the order the count uses.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading
from dataclasses import dataclass


@dataclass
class _Pair:
    client: socket.socket
    server: socket.socket
    last: str = ""  # "c2s" | "s2c"
    turns: int = 0
    closed: bool = False


class TurnCounter:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.listener.setblocking(False)
        self.port = self.listener.getsockname()[1]
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.listener, selectors.EVENT_READ, None)
        self.lock = threading.Lock()
        self.turns = 0
        self.bytes_c2s = 0
        self.bytes_s2c = 0
        self.connections = 0
        self.trace: list[bytearray] | None = None  # client bytes of each turn, when tracing
        self._stop = False
        self._wake_r, self._wake_w = socket.socketpair()
        self.sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        self.thread = threading.Thread(target=self._loop, name="turn-proxy", daemon=True)

    def __enter__(self) -> TurnCounter:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start_trace(self) -> None:
        with self.lock:
            self.trace = []

    def stop_trace(self) -> list[bytes]:
        with self.lock:
            out = [bytes(b) for b in self.trace or []]
            self.trace = None
        return out

    def reset(self) -> None:
        with self.lock:
            self.turns = 0
            self.bytes_c2s = 0
            self.bytes_s2c = 0
            self.connections = 0

    def snapshot(self) -> dict[str, int]:
        with self.lock:
            return {
                "turns": self.turns,
                "bytes_c2s": self.bytes_c2s,
                "bytes_s2c": self.bytes_s2c,
                "connections": self.connections,
            }

    def close(self) -> None:
        self._stop = True
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")
        if self.thread.is_alive():
            self.thread.join(timeout=5)
        for key in list(self.sel.get_map().values()):
            with contextlib.suppress(OSError):
                key.fileobj.close()  # type: ignore[union-attr]
        self.sel.close()
        self._wake_w.close()

    def _accept(self) -> None:
        client, _ = self.listener.accept()
        server = socket.create_connection(self.target)
        for s in (client, server):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            s.setblocking(True)
        pair = _Pair(client, server)
        self.sel.register(client, selectors.EVENT_READ, (pair, "c2s"))
        self.sel.register(server, selectors.EVENT_READ, (pair, "s2c"))
        with self.lock:
            self.connections += 1

    def _drop(self, pair: _Pair) -> None:
        if pair.closed:
            return
        pair.closed = True
        for s in (pair.client, pair.server):
            with contextlib.suppress(KeyError, ValueError, OSError):
                self.sel.unregister(s)
            with contextlib.suppress(OSError):
                s.close()

    def _loop(self) -> None:
        while not self._stop:
            for key, _ in self.sel.select(timeout=0.5):
                if key.data is None:
                    self._accept()
                    continue
                if key.data == "wake":
                    return
                pair, direction = key.data
                if pair.closed:
                    continue
                src, dst = (pair.client, pair.server) if direction == "c2s" else (pair.server, pair.client)
                try:
                    data = src.recv(65536)
                except OSError:
                    data = b""
                if not data:
                    self._drop(pair)
                    continue
                with self.lock:
                    if direction == "c2s":
                        if pair.last != "c2s":
                            self.turns += 1
                            pair.turns += 1
                            if self.trace is not None:
                                self.trace.append(bytearray())
                        if self.trace:
                            self.trace[-1] += data
                        self.bytes_c2s += len(data)
                    else:
                        self.bytes_s2c += len(data)
                pair.last = direction
                try:
                    dst.sendall(data)
                except OSError:
                    self._drop(pair)


# --- what the client said in a turn --------------------------------------------------------

NUL = bytes(1)


def _label(sql: str) -> str:
    words = sql.replace("(", " ").split()
    if not words:
        return "?"
    head = words[0].upper()
    upper = [w.upper() for w in words]
    if head == "SELECT" and "FROM" in upper:
        return f"SELECT {words[upper.index('FROM') + 1]}"
    if head == "INSERT" and len(words) > 2:
        return f"INSERT {words[2]}"
    if head in ("UPDATE", "DELETE") and len(words) > 1:
        return f"{head} {words[2] if head == 'DELETE' and len(words) > 2 else words[1]}"
    return " ".join(words[:2]).upper()


def _squash(labels: list[str]) -> str:
    """["A", "A", "B"] -> "A x2, B"."""
    runs: list[list] = []
    for lab in labels:
        if runs and runs[-1][0] == lab:
            runs[-1][1] += 1
        else:
            runs.append([lab, 1])
    return ", ".join(lab if n == 1 else f"{lab} x{n}" for lab, n in runs)


def describe_postgres(turn: bytes, names: dict[str, str]) -> str:
    """The frontend messages of one turn: each statement executed (by its Bind), Sync, Flush."""
    labels: list[str] = []
    i = 0
    while i + 5 <= len(turn):
        kind = chr(turn[i])
        length = int.from_bytes(turn[i + 1 : i + 5], "big")
        body = turn[i + 5 : i + 1 + length]
        i += 1 + length
        if kind == "Q":
            sql = body.split(NUL)[0].decode(errors="replace")
            labels.append(f"Query({_label(sql)})")
        elif kind == "P":
            name, rest = body.split(NUL, 1)
            sql = rest.split(NUL, 1)[0].decode(errors="replace")
            names[name.decode()] = sql  # the statement is labelled when it is bound
        elif kind == "B":
            _, rest = body.split(NUL, 1)
            stmt = rest.split(NUL, 1)[0].decode(errors="replace")
            labels.append(_label(names[stmt]) if stmt in names else f"statement {stmt or 'unnamed'}")
        elif kind == "S":
            labels.append("Sync")
        elif kind == "H":
            labels.append("Flush")
        elif kind == "X":
            labels.append("Terminate")
        # D (Describe), E (Execute), C (Close) add nothing to the picture
    return _squash(labels)


def describe_mysql(turn: bytes) -> str:
    labels: list[str] = []
    i = 0
    while i + 4 <= len(turn):
        length = int.from_bytes(turn[i : i + 3], "little")
        body = turn[i + 4 : i + 4 + length]
        i += 4 + length
        if not body:
            continue
        cmd = body[0]
        if cmd == 0x03:
            text = body[1:].decode(errors="replace")
            parts = [p for p in text.split(";\n") if p.strip()]
            inner = _squash([_label(p) for p in parts])
            labels.append(f"COM_QUERY({inner})" if len(parts) > 1 else f"COM_QUERY {inner}")
        elif cmd == 0x0E:
            labels.append("COM_PING")
        elif cmd == 0x01:
            labels.append("COM_QUIT")
        elif cmd == 0x1F:
            labels.append("COM_RESET_CONNECTION")
        else:
            labels.append(f"command 0x{cmd:02x}")
    return "; ".join(labels)


# --- a proxy that adds network latency -----------------------------------------------------


def _fine_timer_slack() -> None:
    """Ask Linux for 1 ns timer slack on this thread (default 50 us) so short sleeps end on time."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(29, 1, 0, 0, 0)  # PR_SET_TIMERSLACK
    except Exception:  # not Linux, or no prctl: sleeps just end a little late
        pass


SPIN_S = 0.0001  # the last 100 us of a hold are spun, not slept: wake-ups are not that precise


def _hold_until(deadline: float) -> None:
    import time

    left = deadline - time.perf_counter()
    if left > SPIN_S:
        time.sleep(left - SPIN_S)
    while time.perf_counter() < deadline:
        pass


class DelayProxy:
    """Forwards 127.0.0.1:<port> to a target, holding each chunk for `delay_s` before forwarding
    it, in each direction: one request/response round trip costs ~2 x delay_s more. It is a
    latency, not a bandwidth limit: a chunk that arrives while an earlier one is held is held
    for delay_s from its own arrival (order kept), as on a long network path.

    Each direction of each connection has a reader thread (timestamps what it receives) and a
    writer thread (forwards it when due). Run it in its own process (`python tcpproxy.py
    --target HOST:PORT --delay-ms D`) so the client's Python work does not hold its threads up.
    """

    def __init__(self, target_host: str, target_port: int, delay_s: float) -> None:
        self.target = (target_host, target_port)
        self.delay = delay_s
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]

    def serve_forever(self) -> None:
        while True:
            client, _ = self.listener.accept()
            try:
                server = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            for s in (client, server):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._pump(client, server)
            self._pump(server, client)

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        import queue
        import time

        q: queue.SimpleQueue[tuple[float, bytes] | None] = queue.SimpleQueue()
        delay = self.delay

        def reader() -> None:
            while True:
                try:
                    data = src.recv(65536)
                except OSError:
                    data = b""
                if not data:
                    q.put(None)
                    return
                q.put((time.perf_counter() + delay, data))

        def writer() -> None:
            _fine_timer_slack()
            while True:
                item = q.get()
                if item is None:
                    break
                _hold_until(item[0])
                try:
                    dst.sendall(item[1])
                except OSError:
                    break
            for s in (dst, src):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

        threading.Thread(target=reader, daemon=True).start()
        threading.Thread(target=writer, daemon=True).start()


def main(argv: list[str] | None = None) -> None:
    import argparse
    import sys

    ap = argparse.ArgumentParser(description="TCP proxy adding a fixed delay in each direction")
    ap.add_argument("--target", required=True, help="HOST:PORT to forward to")
    ap.add_argument("--delay-ms", type=float, required=True, help="hold per chunk and direction")
    args = ap.parse_args(argv)
    host, port = args.target.rsplit(":", 1)
    proxy = DelayProxy(host, int(port), args.delay_ms / 1000)
    print(proxy.port, flush=True)  # the parent reads the port from the first line
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    sys.stdin.read()  # runs until the parent closes our stdin (or ends us)


if __name__ == "__main__":
    main()
