"""The processes of backfill and reconcile: how a worker process starts, and the heap of a
process that has built what it keeps.

Both commands are CPU-bound per item (the synthesized record, the Pipe's filter and template,
the runtime's decoder), so what a process spends besides its items is worth keeping small:

- a worker started by `spawn` imports SQLAlchemy, the driver and the tools again (0.3-0.5 s of
  CPU per worker on a 2-core machine); `fork` starts it with this process's imports done. It
  is used on Linux when this process runs no other thread (a thread holding a lock at the fork
  would leave it held in the child for good), spawn otherwise;
- the objects a process built before its items (modules, the registry, the Pipe, compiled
  statements) are moved out of the garbage collector's generations (gc.freeze): otherwise
  every full collection, triggered by the items' short-lived objects, walks them all again.
"""

from __future__ import annotations

import gc
import multiprocessing
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


def pool_context(start: str | None = None) -> Any:
    """The multiprocessing context for worker processes: `start` ("fork" or "spawn") when
    given, else fork on Linux in a process of one thread and spawn otherwise. A forked worker
    builds its own connections and clients (the recipes do): it never uses what it inherited."""
    if start is None:
        start = "fork" if sys.platform == "linux" and threading.active_count() == 1 else "spawn"
    return multiprocessing.get_context(start)


@contextmanager
def settled() -> Iterator[None]:
    """For the length of the block, what this process holds now is out of the collector's
    generations (and a worker forked inside it does not copy the pages a collection would
    write); given back on the way out, so a caller that lives on (a test) collects it again."""
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def settle_worker() -> None:
    """In a worker process, once it has built what it keeps for its units: out of the
    collector's generations for the rest of the process."""
    gc.freeze()
