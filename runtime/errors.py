"""Transient or permanent: how a failure is classified decides what the logs and metrics say,
whether the rest of the batch can go on, and whether the Lambda fetches its credentials again.

Transient: the same message may succeed later (connection lost, deadlock, lock timeout,
serialization failure, a missing table during a deployment, a login refused while a secret
rotates, and by default a foreign-key violation, because the parent row may simply not have
arrived yet). Permanent: the message itself is wrong (undecodable, a constraint it breaks, a
value the column refuses: SQLSTATE classes 22 and 23 on PostgreSQL, their MySQL equivalents).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sqlalchemy.exc import DBAPIError

from runtime.redact import REASON_MAX, cut, show_values

TRANSIENT = "transient"
PERMANENT = "permanent"

# PostgreSQL SQLSTATE classes and codes.
PG_TRANSIENT_CLASSES = ("08", "53", "57", "58")  # connection, resources, operator intervention, system
PG_TRANSIENT_CODES = {"40001", "40P01", "55P03", "55006", "42P01", "42703", "3D000", "3F000"}
PG_FK = {"23503"}
PG_UNIQUE = {"23505"}
PG_LOCK = {"55P03", "57014"}  # lock_not_available (lock_timeout), query_canceled (statement_timeout)
PG_AUTH_CLASS = "28"  # invalid authorization specification / invalid password
# A refused login arrives before any SQLSTATE can (psycopg reports libpq's connection error text).
PG_AUTH_TEXT = re.compile(
    r"password authentication failed|role \"[^\"]*\" does not exist|no pg_hba\.conf entry|"
    r"authentication failed|PAM authentication|SCRAM"
)

# MySQL / MariaDB error numbers.
MY_TRANSIENT = {
    1205,  # lock wait timeout
    1213,  # deadlock
    1040,
    1053,
    1077,
    1080,
    1152,
    1153,
    1158,
    1159,
    1160,
    1161,
    1317,
    1927,
    2002,
    2003,
    2006,
    2013,
    2055,
    4031,
    1146,
    1054,
    1049,  # missing table/column/database: a deployment problem, not the message's
    1045,  # access denied: the password rotated
    1698,
}
MY_FK = {1451, 1452, 1216, 1217}
MY_UNIQUE = {1062, 1586}
MY_LOCK = {1205, 3024, 1969}  # lock wait timeout; max_execution_time / max_statement_time exceeded
MY_AUTH = {1045, 1698}

# Values the databases put in their messages (MySQL's "Duplicate entry 'x' for key ...",
# PostgreSQL's 'invalid input syntax for type integer: "x"'): replaced by their size.
_QUOTED_VALUE = re.compile(
    r"(?P<lead>Duplicate entry |value: |for type [\w ]+: |Incorrect [\w ]+ value: |Key \([^)]*\)=\()"
    r"(?P<q>['\"(]?)(?P<value>.*?)(?P=q)(?= for |\)| at |$)",
    re.DOTALL,
)


@dataclass(frozen=True)
class Classified:
    kind: str
    reason: str
    whole_transaction: bool = False  # the error ended the transaction (connection lost, MySQL deadlock)
    unique: bool = False  # a unique key refused the row (on the ledger: the event is recorded already)
    lock: bool = False  # a lock wait or statement ran out of time: trying again now would wait again
    auth: bool = False  # the login was refused: the credentials may have rotated


def _redact_values(text: str) -> str:
    if show_values():
        return text

    def size(m: re.Match[str]) -> str:
        return f"{m.group('lead')}<a value of {len(m.group('value')):,} characters>"

    return _QUOTED_VALUE.sub(size, text)


def _first_line(text: str) -> str:
    line = text.strip().splitlines()[0] if text.strip() else text
    return cut(_redact_values(line), 300)


def classify(exc: BaseException, *, foreign_key_transient: bool = True) -> Classified:
    orig = exc.orig if isinstance(exc, DBAPIError) else exc
    invalidated = isinstance(exc, DBAPIError) and exc.connection_invalidated
    reason = _first_line(str(orig) or type(orig).__name__)
    sqlstate = getattr(orig, "sqlstate", None) or getattr(getattr(orig, "diag", None), "sqlstate", None)
    args = getattr(orig, "args", ())
    errno = args[0] if args and isinstance(args[0], int) else None
    if errno in MY_AUTH or (isinstance(sqlstate, str) and sqlstate.startswith(PG_AUTH_CLASS)):
        return Classified(TRANSIENT, f"login refused: {reason}", True, auth=True)
    if errno is None and not isinstance(sqlstate, str) and PG_AUTH_TEXT.search(str(orig)):
        return Classified(TRANSIENT, f"login refused: {reason}", True, auth=True)
    if invalidated:
        return Classified(TRANSIENT, f"connection lost: {reason}", True)
    if errno is not None:
        reason = f"({errno}) {_first_line(str(args[1])) if len(args) > 1 else reason}"
        if errno in MY_FK:
            return Classified(
                TRANSIENT if foreign_key_transient else PERMANENT, f"foreign key violation: {reason}"
            )
        if errno in MY_UNIQUE:
            return Classified(PERMANENT, reason, unique=True)
        if errno in MY_TRANSIENT or errno in MY_LOCK:
            # InnoDB rolls the whole transaction back on a deadlock (not on a lock wait timeout).
            return Classified(
                TRANSIENT,
                reason,
                errno == 1213 or errno >= 2000 or errno in (1927, 1053, 4031),
                lock=errno in MY_LOCK,
            )
        return Classified(PERMANENT, reason)
    if isinstance(sqlstate, str):
        reason = f"{sqlstate} {reason}"
        if sqlstate in PG_FK:
            return Classified(
                TRANSIENT if foreign_key_transient else PERMANENT, f"foreign key violation: {reason}"
            )
        if sqlstate in PG_UNIQUE:
            return Classified(PERMANENT, reason, unique=True)
        if sqlstate[:2] in PG_TRANSIENT_CLASSES:
            return Classified(
                TRANSIENT,
                reason,
                sqlstate[:2] == "08" or sqlstate.startswith("57P"),
                lock=sqlstate in PG_LOCK,
            )
        if sqlstate in PG_TRANSIENT_CODES:
            return Classified(TRANSIENT, reason, lock=sqlstate in PG_LOCK)
        return Classified(PERMANENT, reason)
    # SQLite and drivers without codes.
    text = reason.lower()
    if "foreign key" in text:
        return Classified(
            TRANSIENT if foreign_key_transient else PERMANENT, f"foreign key violation: {reason}"
        )
    if "unique constraint" in text or "primary key must be unique" in text:
        return Classified(PERMANENT, reason, unique=True)
    if "locked" in text or "busy" in text:
        return Classified(TRANSIENT, reason, lock=True)
    if "interrupted" in text:  # sqlite3_interrupt: SQLite rolls the whole transaction back
        return Classified(TRANSIENT, reason, True)
    if "disk i/o" in text or "no such table" in text:
        return Classified(TRANSIENT, reason)
    from sqlalchemy.exc import DataError, IntegrityError, OperationalError

    if isinstance(exc, OperationalError):
        return Classified(TRANSIENT, reason)
    if isinstance(exc, (IntegrityError, DataError)):
        return Classified(PERMANENT, reason)
    return Classified(TRANSIENT, reason)


def unexpected(exc: BaseException, what: str) -> str:
    """The reason for an exception nothing expected (a defect, or a driver's surprise)."""
    return cut(f"{what}: {type(exc).__name__}: {_first_line(str(exc))}", REASON_MAX - 30)
