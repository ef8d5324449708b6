"""SQLite settings for local replays."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine


def tune_sqlite(engine: Engine) -> None:
    """WAL journal and synchronous=NORMAL on a SQLite engine (no-op for other databases).

    A replay commits once per batch; with the default rollback journal and synchronous=FULL
    each commit waits for several fsyncs, which is the whole cost of a local run. WAL with
    NORMAL keeps every commit atomic and durable against a process crash (only an OS crash can
    lose the last transactions), which is what a local replay needs.
    """
    if engine.url.get_backend_name() != "sqlite":
        return

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()
