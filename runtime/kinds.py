"""The runtime's categories as StrEnums: each member equals its string value, which is what
the registry file, the ledger's outcome column and the log lines carry."""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    """How one message ended in a batch."""

    APPLIED = "applied"
    DUPLICATE = "duplicate"  # its event is in the ledger already
    STALE = "stale"  # older than the row (or the row's tombstone)
    IGNORED = "ignored"  # its event type's rule says do: ignore, or unknown: ignore
    SKIPPED = "skipped"  # nothing to do (an update or delete of a row that is not there, if_missing: ignore)
    FAILED = "failed"
    BLOCKED = "blocked"  # held back behind a failed message of its group

    @property
    def done(self) -> bool:
        """Whether SQS may delete the message (it is not reported in batchItemFailures)."""
        return self not in _NOT_DONE


class Kind(StrEnum):
    """Whether the same message may succeed later."""

    PERMANENT = "permanent"
    TRANSIENT = "transient"


class Action(StrEnum):
    """What a rule does to a table (the registry's `action`)."""

    INSERT = "insert"
    UPSERT = "upsert"
    UPDATE = "update"
    DELETE = "delete"
    SOFT_DELETE = "soft_delete"
    # Never in a mapping (its schema has no such action): `backfill --columns` sets chosen
    # columns of a row that is there and no newer than the write, leaving its version as it is.
    FILL = "fill"


class IfMissing(StrEnum):
    """What an update or a soft delete does when its row is not there."""

    FAIL = "fail"
    IGNORE = "ignore"
    UPSERT = "upsert"


class WhenMissing(StrEnum):
    """What a write does when its lookup finds no row (generator: column lookup.when_missing)."""

    RETRY = "retry"  # a transient failure: the parent may arrive later
    NULL = "null"  # write NULL
    FAIL = "fail"  # a permanent failure


class OpKind(StrEnum):
    """A statement shape the planner asks for."""

    INSERT = "insert"
    UPSERT = "upsert"
    UPSERT_AS_UPDATE = "upsert_as_update"  # MySQL: an upsert of a row the read found, as an UPDATE
    UPDATE = "update"
    SOFT_DELETE = "soft_delete"
    DELETE = "delete"
    TOMBSTONE = "tombstone"
    FILL = "fill"  # an UPDATE of chosen columns that leaves the version (Action.FILL)
    # A child table's rows of one parent that the event's list or map no longer holds
    # (runtime.children): one DELETE for the whole set.
    PRUNE = "prune"


class VersionKind(StrEnum):
    SEQUENCE = "sequence"  # the stream's SequenceNumber, compared as zero-padded text
    INTEGER = "integer"  # a numeric item attribute


class SoftDeleteKind(StrEnum):
    TIMESTAMP = "timestamp"
    BOOLEAN = "boolean"


_NOT_DONE = frozenset({Status.FAILED, Status.BLOCKED})

# Every member also as a module constant, for the code that runs once per message or statement:
# on Python 3.11 reading a member from its class (Action.UPDATE) calls a descriptor, about 15
# times the cost of reading a global, and the planner alone reads a dozen per message.
APPLIED, DUPLICATE, STALE, IGNORED, SKIPPED, FAILED, BLOCKED = Status
PERMANENT, TRANSIENT = Kind
DO_INSERT, DO_UPSERT, DO_UPDATE, DO_DELETE, DO_SOFT_DELETE, DO_FILL = Action
IF_MISSING_FAIL, IF_MISSING_IGNORE, IF_MISSING_UPSERT = IfMissing
WHEN_MISSING_RETRY, WHEN_MISSING_NULL, WHEN_MISSING_FAIL = WhenMissing
(
    OP_INSERT,
    OP_UPSERT,
    OP_UPSERT_AS_UPDATE,
    OP_UPDATE,
    OP_SOFT_DELETE,
    OP_DELETE,
    OP_TOMBSTONE,
    OP_FILL,
    OP_PRUNE,
) = OpKind
VERSION_SEQUENCE, VERSION_INTEGER = VersionKind
SOFT_DELETE_TIMESTAMP, SOFT_DELETE_BOOLEAN = SoftDeleteKind
