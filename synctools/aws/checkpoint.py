"""The pump's checkpoint: per entity, stream and shard, the last sequence number handled.

"Handled" means sent to the queue (SQS accepted it), dropped by the filter, or sent to the
Pipe's DLQ as a stream position; a record that may not have reached one of those is never
behind the checkpoint. A restart resumes AFTER_SEQUENCE_NUMBER of it, so nothing is skipped and
at most the batch that was in flight when the pump stopped is sent again (its deduplication
ids, and else the runtime's ledger, absorb it).

The file is JSON, rewritten atomically (temporary file, fsync, rename) after each batch:

    {"version": 1,
     "entities": {"orders": {"<stream ARN>": {"<shard id>": {"sequenceNumber": "...",
                                                            "ended": false}}}}}

`ended` marks a closed shard read to its end: its children may start (AWS: Streams, records for
an item are in order across a parent and its children only if the parent is drained first).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from synctools.aws.session import ToolError

VERSION = 1


class Checkpoint:
    def __init__(self, path: str | os.PathLike[str] | None) -> None:
        self.path = Path(path) if path is not None else None
        self.data: dict[str, Any] = {"version": VERSION, "entities": {}}
        self.dirty = False
        self._lock: Any = None
        if self.path is not None and self.path.exists():
            try:
                data = json.loads(self.path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise ToolError(f"cannot read the checkpoint {self.path}: {exc}") from None
            if not isinstance(data, dict) or data.get("version") != VERSION:
                raise ToolError(
                    f"checkpoint {self.path} is not a version-{VERSION} pump checkpoint; "
                    "move it away to start again from --from"
                )
            if not isinstance(data.get("entities"), dict):
                raise ToolError(f"checkpoint {self.path} has no 'entities' object")
            self.data = data

    def _shard(self, entity: str, stream: str, shard: str, create: bool = False) -> dict[str, Any] | None:
        streams = self.data["entities"].get(entity)
        if streams is None:
            if not create:
                return None
            streams = self.data["entities"][entity] = {}
        shards = streams.get(stream)
        if shards is None:
            if not create:
                return None
            shards = streams[stream] = {}
        pos: dict[str, Any] | None = shards.get(shard)
        if pos is None and create:
            pos = shards[shard] = {"sequenceNumber": None, "ended": False}
        return pos

    def position(self, entity: str, stream: str, shard: str) -> str | None:
        pos = self._shard(entity, stream, shard)
        return pos.get("sequenceNumber") if pos else None

    def ended(self, entity: str, stream: str, shard: str) -> bool:
        pos = self._shard(entity, stream, shard)
        return bool(pos and pos.get("ended"))

    def known(self, entity: str, stream: str, shard: str) -> bool:
        return self._shard(entity, stream, shard) is not None

    def advance(self, entity: str, stream: str, shard: str, sequence: str) -> None:
        pos = self._shard(entity, stream, shard, create=True)
        assert pos is not None
        current = pos.get("sequenceNumber")
        if current is not None and int(sequence) < int(current):
            # A checkpoint only moves forward; going back would re-send, going forward past an
            # unsent record would lose it. Either means a bug in the caller.
            raise ValueError(f"checkpoint of {shard} would move back from {current} to {sequence}")
        if current != sequence:
            pos["sequenceNumber"] = sequence
            self.dirty = True

    def end(self, entity: str, stream: str, shard: str) -> None:
        pos = self._shard(entity, stream, shard, create=True)
        assert pos is not None
        if not pos.get("ended"):
            pos["ended"] = True
            self.dirty = True

    def save(self) -> None:
        """Write atomically: a crash leaves the previous checkpoint or the new one, never half."""
        if self.path is None or not self.dirty:
            return
        directory = self.path.parent if str(self.path.parent) else Path(".")
        directory.mkdir(parents=True, exist_ok=True)
        text = json.dumps(self.data, indent=2, sort_keys=True) + "\n"
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=directory)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        with contextlib.suppress(OSError):  # make the rename itself durable
            dfd = os.open(directory, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        self.dirty = False

    def lock(self) -> None:
        """One pump per checkpoint file: two would overwrite each other's positions."""
        if self.path is None:
            return
        try:
            import fcntl
        except ImportError:  # not on POSIX: no lock
            return
        lock_path = self.path.with_name(self.path.name + ".lock")
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(lock_path, "a+")  # noqa: SIM115 - held for the life of the process
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.close()
            raise ToolError(f"another pump is using the checkpoint {self.path} (lock {lock_path})") from None
        self._lock = fh

    def unlock(self) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None
