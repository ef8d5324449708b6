"""The time budget of one batch: the moment by which apply_batch must have answered (the
Lambda's deadline less a margin for logging and returning), and a watchdog that cuts the
database connection if a wait on it is still going at that moment.

Client-side timeouts (runtime.config.Limits) bound each wait; the watchdog bounds their sum,
and covers what no timeout sees: a network path that freezes with its sockets open (TCP
keepalives only notice after their own delay), a server that accepts and never answers.
Cutting the connection makes the blocked driver call fail as a lost connection; the runtime
then drops that connection (nothing uncommitted survives a closed connection) and reports
every message not yet committed as a transient failure, so SQS delivers it again.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field

# The deadline of the batch this thread is applying (time.monotonic()), for what runs inside
# SQLAlchemy where no argument reaches (runtime.config clamps a new connection's connect
# timeout to it).
CURRENT: ContextVar[float | None] = ContextVar("sync_deadline", default=None)


# The watchdog cuts this long before the deadline, so that the failure is handled, the
# connection dropped and the answer returned by the deadline itself.
CUT_LEAD_S = 0.1


@dataclass(frozen=True)
class Deadline:
    """`at`: a time.monotonic() value, or None for no deadline (local tools, tests)."""

    at: float | None = None

    def remaining(self) -> float:
        return float("inf") if self.at is None else self.at - time.monotonic()

    def allows(self, seconds: float) -> bool:
        """Whether work that may take `seconds` can still end before the deadline."""
        return self.at is None or time.monotonic() + seconds < self.at

    @property
    def passed(self) -> bool:
        return self.at is not None and time.monotonic() >= self.at


@dataclass
class Guard:
    """One armed deadline; `fired` once the watchdog cut the connection."""

    at: float
    interrupt: Callable[[], None]
    fired: bool = False
    done: bool = field(default=False, repr=False)


class Watchdog:
    """One daemon thread per process, asleep until the earliest armed deadline. Arming takes
    a lock and wakes the thread only when the new deadline is earlier than the one it sleeps
    towards (in a Lambda, about once per timeout, not once per batch); disarming never wakes it."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._guards: list[Guard] = []
        self._wake_at = float("inf")  # when the thread's current wait ends
        self._thread: threading.Thread | None = None

    def arm(self, at: float, interrupt: Callable[[], None]) -> Guard:
        """Until disarm(), CUT_LEAD_S before `at`, `interrupt()` is called once (from the
        watchdog's thread) and the guard marked fired."""
        g = Guard(at - CUT_LEAD_S, interrupt)
        with self._cond:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="sync-deadline", daemon=True)
                self._wake_at = float("inf")
                self._thread.start()
            self._guards.append(g)
            if g.at < self._wake_at:
                self._wake_at = g.at
                self._cond.notify()
        return g

    def disarm(self, g: Guard) -> None:
        with self._cond:
            g.done = True
            if g in self._guards:
                self._guards.remove(g)

    def _run(self) -> None:
        with self._cond:
            while True:
                now = time.monotonic()
                for g in [g for g in self._guards if g.at <= now]:
                    self._guards.remove(g)
                    g.fired = True
                    with contextlib.suppress(Exception):  # a connection already gone is cut enough
                        g.interrupt()
                self._wake_at = min((g.at for g in self._guards), default=float("inf"))
                self._cond.wait(None if self._wake_at == float("inf") else max(0.0, self._wake_at - now))


WATCHDOG = Watchdog()


def shutdown_socket(fd: int) -> None:
    """Shut a socket down in both directions: a thread blocked reading or writing it returns
    at once, and the peer sees the connection end. The descriptor itself stays with its
    owner (a duplicate is shut down, which acts on the shared socket)."""
    dup = os.dup(fd)
    try:
        s = socket.socket(fileno=dup)
    except OSError:
        os.close(dup)
        raise
    try:
        s.shutdown(socket.SHUT_RDWR)
    finally:
        s.close()
