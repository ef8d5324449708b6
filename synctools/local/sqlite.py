"""Database settings for local replays."""

from __future__ import annotations

from sqlalchemy.engine import Engine

from runtime import dialects


def tune_sqlite(engine: Engine) -> None:
    """The local tools' settings for the engine's database (WAL and synchronous=NORMAL on
    SQLite: see runtime.dialects.sqlite.SQLite.tune_for_tools; nothing on the servers)."""
    dialects.of(engine).tune_for_tools(engine)
