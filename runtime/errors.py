"""Transient or permanent: how a failure is classified decides what the logs and metrics say,
whether the rest of the batch can go on, and whether the Lambda fetches its credentials again.

Transient: the same message may succeed later (connection lost, deadlock, lock timeout,
serialization failure, a missing table during a deployment, a login refused while a secret
rotates, and by default a foreign-key violation, because the parent row may simply not have
arrived yet). Permanent: the message itself is wrong (undecodable, a constraint it breaks, a
value the column refuses). Each database's codes are read by its dialect (runtime.dialects);
what is common to all of them is here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from runtime.kinds import Kind
from runtime.redact import REASON_MAX, cut, show_values

TRANSIENT = Kind.TRANSIENT
PERMANENT = Kind.PERMANENT

# Values the databases put in their messages (MySQL's "Duplicate entry 'x' for key ...",
# PostgreSQL's 'invalid input syntax for type integer: "x"'): replaced by their size.
_QUOTED_VALUE = re.compile(
    r"(?P<lead>Duplicate entry |value: |for type [\w ]+: |Incorrect [\w ]+ value: |Key \([^)]*\)=\()"
    r"(?P<q>['\"(]?)(?P<value>.*?)(?P=q)(?= for |\)| at |$)",
    re.DOTALL,
)


@dataclass(frozen=True)
class Classified:
    kind: Kind
    reason: str
    whole_transaction: bool = False  # the error ended the transaction (connection lost, MySQL deadlock)
    unique: bool = False  # a unique key refused the row (on the ledger: the event is recorded already)
    lock: bool = False  # a lock wait or statement ran out of time: trying again now would wait again
    auth: bool = False  # the login was refused: the credentials may have rotated
    lookup: bool = False  # a column's lookup found no row (its when_missing decides the kind)


def redact_values(text: str) -> str:
    """A database message without the values it quotes (unless SYNC_LOG_VALUES=1)."""
    if show_values():
        return text

    def size(m: re.Match[str]) -> str:
        return f"{m.group('lead')}<a value of {len(m.group('value')):,} characters>"

    return _QUOTED_VALUE.sub(size, text)


def first_line(text: str) -> str:
    """A message's first line, values redacted, cut short: what a reason quotes of it."""
    line = text.strip().splitlines()[0] if text.strip() else text
    return cut(redact_values(line), 300)


def foreign_key(reason: str, transient: bool) -> Classified:
    return Classified(TRANSIENT if transient else PERMANENT, f"foreign key violation: {reason}")


def login_refused(reason: str) -> Classified:
    return Classified(TRANSIENT, f"login refused: {reason}", True, auth=True)


def connection_lost(reason: str) -> Classified:
    return Classified(TRANSIENT, f"connection lost: {reason}", True)


def unexpected(exc: BaseException, what: str) -> str:
    """The reason for an exception nothing expected (a defect, or a driver's surprise)."""
    return cut(f"{what}: {type(exc).__name__}: {first_line(str(exc))}", REASON_MAX - 30)


class SetupError(Exception):
    """A connection the runtime could not set up as it must be (no login token could be
    signed; an RDS Proxy whose session settings are not the runtime's): the whole batch fails
    transiently with this message, which says what to fix."""
