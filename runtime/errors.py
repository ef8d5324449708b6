"""Transient or permanent: how a failure is classified decides what the logs and metrics say
and whether the rest of the batch can go on.

Transient: the same message may succeed later (connection lost, deadlock, lock timeout,
serialization failure, a missing table during a deployment, and by default a foreign-key
violation, because the parent row may simply not have arrived yet). Permanent: the message
itself is wrong (undecodable, a constraint it breaks, a value the column refuses).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.exc import DBAPIError

TRANSIENT = "transient"
PERMANENT = "permanent"

# PostgreSQL SQLSTATE classes and codes.
PG_TRANSIENT_CLASSES = ("08", "53", "57", "58")  # connection, resources, operator intervention, system
PG_TRANSIENT_CODES = {"40001", "40P01", "55P03", "55006", "42P01", "42703", "3D000", "3F000"}
PG_FK = {"23503"}

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
}
MY_FK = {1451, 1452, 1216, 1217}


@dataclass(frozen=True)
class Classified:
    kind: str
    reason: str
    whole_transaction: bool = False  # the error ended the transaction (connection lost, MySQL deadlock)


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0][:300] if text.strip() else text


def classify(exc: BaseException, *, foreign_key_transient: bool = True) -> Classified:
    orig = exc.orig if isinstance(exc, DBAPIError) else exc
    invalidated = isinstance(exc, DBAPIError) and exc.connection_invalidated
    reason = _first_line(str(orig) or type(orig).__name__)
    sqlstate = getattr(orig, "sqlstate", None) or getattr(getattr(orig, "diag", None), "sqlstate", None)
    if invalidated:
        return Classified(TRANSIENT, f"connection lost: {reason}", True)
    args = getattr(orig, "args", ())
    errno = args[0] if args and isinstance(args[0], int) else None
    if errno is not None:
        reason = f"({errno}) {args[1] if len(args) > 1 else reason}"
        if errno in MY_FK:
            return Classified(
                TRANSIENT if foreign_key_transient else PERMANENT, f"foreign key violation: {reason}"
            )
        if errno in MY_TRANSIENT:
            # InnoDB rolls the whole transaction back on a deadlock (not on a lock wait timeout).
            return Classified(
                TRANSIENT, reason, errno == 1213 or errno >= 2000 or errno in (1927, 1053, 4031)
            )
        return Classified(PERMANENT, reason)
    if isinstance(sqlstate, str):
        reason = f"{sqlstate} {reason}"
        if sqlstate in PG_FK:
            return Classified(
                TRANSIENT if foreign_key_transient else PERMANENT, f"foreign key violation: {reason}"
            )
        if sqlstate[:2] in PG_TRANSIENT_CLASSES:
            return Classified(TRANSIENT, reason, sqlstate[:2] == "08" or sqlstate.startswith("57P"))
        if sqlstate in PG_TRANSIENT_CODES:
            return Classified(TRANSIENT, reason)
        return Classified(PERMANENT, reason)
    # SQLite and drivers without codes.
    text = reason.lower()
    if "foreign key" in text:
        return Classified(
            TRANSIENT if foreign_key_transient else PERMANENT, f"foreign key violation: {reason}"
        )
    if "locked" in text or "busy" in text or "disk i/o" in text or "no such table" in text:
        return Classified(TRANSIENT, reason)
    from sqlalchemy.exc import DataError, IntegrityError, OperationalError

    if isinstance(exc, OperationalError):
        return Classified(TRANSIENT, reason)
    if isinstance(exc, (IntegrityError, DataError)):
        return Classified(PERMANENT, reason)
    return Classified(TRANSIENT, reason)
