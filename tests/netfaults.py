"""Network faults for the runtime's time-budget tests: a TCP proxy whose path can be frozen
(bytes stop flowing both ways, every socket stays open, as when a route or a NAT entry
vanishes), and a server that accepts connections and never says a word."""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading


class FreezableProxy:
    """Forwards 127.0.0.1:<port> to `target` until `freeze()`; afterwards it reads nothing
    and sends nothing, so the client waits on a connection that is open and silent.
    `cut()` closes every connection open at that moment, both ways (as a NAT or a load
    balancer dropping them would); new connections are forwarded as before."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.setblocking(False)
        self.port = self.listener.getsockname()[1]
        self.frozen = threading.Event()
        self._cut = threading.Event()
        self._stop = threading.Event()
        self._sockets: list[socket.socket] = []
        self._thread = threading.Thread(target=self._loop, name="freezable-proxy", daemon=True)

    def __enter__(self) -> FreezableProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        for s in [self.listener, *self._sockets]:
            with contextlib.suppress(OSError):
                s.close()

    def freeze(self) -> None:
        self.frozen.set()

    def cut(self) -> None:
        self._cut.set()

    def _loop(self) -> None:
        sel = selectors.DefaultSelector()
        sel.register(self.listener, selectors.EVENT_READ, None)
        while not self._stop.is_set():
            if self.frozen.is_set():  # hold everything open, move nothing
                self._stop.wait(0.05)
                continue
            if self._cut.is_set():
                self._cut.clear()
                for s in self._sockets:
                    with contextlib.suppress(KeyError, ValueError):
                        sel.unregister(s)
                    with contextlib.suppress(OSError):
                        s.close()
                self._sockets.clear()
            for key, _ in sel.select(0.05):
                if key.data is None:
                    client, _ = self.listener.accept()
                    server = socket.create_connection(self.target)
                    self._sockets += [client, server]
                    sel.register(client, selectors.EVENT_READ, server)
                    sel.register(server, selectors.EVENT_READ, client)
                    continue
                src: socket.socket = key.fileobj  # type: ignore[assignment]
                try:
                    data = src.recv(65536)
                except OSError:
                    data = b""
                if not data:
                    sel.unregister(src)
                    with contextlib.suppress(KeyError, ValueError):
                        sel.unregister(key.data)
                    continue
                try:
                    key.data.sendall(data)
                except OSError:  # the other side is gone: so is this connection
                    for end in (src, key.data):
                        with contextlib.suppress(KeyError, ValueError):
                            sel.unregister(end)
                        with contextlib.suppress(OSError):
                            end.close()


class SilentServer:
    """Accepts every connection on 127.0.0.1:<port> and never sends a byte."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self._accepted: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="silent-server", daemon=True)

    def __enter__(self) -> SilentServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            self.listener.close()
        self._thread.join(5)
        for s in self._accepted:
            with contextlib.suppress(OSError):
                s.close()

    def _loop(self) -> None:
        self.listener.settimeout(0.05)
        while not self._stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except (TimeoutError, OSError):
                continue
            self._accepted.append(conn)
