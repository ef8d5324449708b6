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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from multiprocessing.util import Finalize
from typing import Any, TypeVar, cast

T = TypeVar("T")


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


# In a worker process: what it built for its units, per kind, with the recipe it was built
# from. (A forked worker inherits this: what was built for another recipe is not used.)
_BUILT: dict[str, tuple[Any, Any]] = {}


def built_once(kind: str, recipe: Any, build: Callable[[], T], engine: Callable[[T], Any]) -> T:
    """In a worker process, what `build()` makes for this recipe: made for the worker's first
    unit and kept for every later one of the run (one engine, its statements compiled and
    prepared once); `engine(it)` is disposed as the process ends. Once built, it is out of
    the collector's generations for the rest of the process."""
    got = _BUILT.get(kind)
    if got is not None and got[0] == recipe:
        return cast(T, got[1])
    it = build()
    _BUILT[kind] = (recipe, it)
    eng = engine(it)
    if eng is not None:
        Finalize(None, eng.dispose, exitpriority=0)
    gc.freeze()
    return it
