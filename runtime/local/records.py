"""Streaming reader of DynamoDB stream records: JSON lines, GetRecords documents, bare arrays.

Accepted input, in any mix and never loaded whole into memory:
- JSON lines (or any concatenation of JSON objects), one stream record each;
- the document GetRecords returns, `{"Records": [...], "NextShardIterator": "..."}`, possibly
  pretty-printed and possibly several of them back to back (one per page);
- a bare JSON array of records (what a DynamoDB-sourced Pipe hands downstream: facts 1.7).

A top-level value that cannot be parsed is reported and skipped up to the next line break
(JSON lines recover; a broken document ends the input with an error).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from typing import Any, TextIO

CHUNK = 1 << 16
MAX_VALUE_CHARS = 16 << 20  # a stream record is at most a 400 KB item, twice
_WS = " \t\r\n"
_DOC_KEY = re.compile(r'\{\s*"(Records|NextShardIterator)"\s*:')
_STREAM_ARN = re.compile(r"^arn:aws[\w-]*:dynamodb:([^:]*):([^:]*):table/([^/]+)/stream/")


class InputError(ValueError):
    pass


_TABLES: dict[str, str | None] = {}


def table_of(record: dict[str, Any]) -> str | None:
    """The table name in a stream record's eventSourceARN (arn:...:table/<name>/stream/...)."""
    arn = record.get("eventSourceARN")
    if isinstance(arn, str) and arn in _TABLES:
        return _TABLES[arn]
    m = _STREAM_ARN.match(str(arn or ""))
    table = m.group(3) if m else None
    if isinstance(arn, str) and len(_TABLES) < 1024:  # a stream has one ARN: a tiny cache
        _TABLES[arn] = table
    return table


def region_account(record: dict[str, Any]) -> tuple[str, str] | None:
    m = _STREAM_ARN.match(str(record.get("eventSourceARN") or ""))
    return (m.group(1), m.group(2)) if m else None


class RecordReader:
    """Iterate the records of a text stream. `errors` counts skipped unreadable values;
    `on_error(message)` is told about each."""

    def __init__(self, fh: TextIO, *, on_error: Callable[[str], None] | None = None) -> None:
        self.fh = fh
        self.buf = ""
        self.pos = 0
        self.base = 0  # characters consumed before buf[0]
        self.eof = False
        self.errors = 0
        self.on_error = on_error
        self._decoder = json.JSONDecoder()
        self._keep = -1  # a position fill() must not discard

    # -- buffer ----------------------------------------------------------------------------

    def _fill(self, size: int = CHUNK) -> bool:
        if self.eof:
            return False
        data = self.fh.read(size)
        cut = self.pos if self._keep < 0 else min(self.pos, self._keep)
        if cut:
            self.buf = self.buf[cut:]
            self.base += cut
            self.pos -= cut
            if self._keep >= 0:
                self._keep -= cut
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    def _skip_ws(self) -> str:
        while True:
            buf, pos, n = self.buf, self.pos, len(self.buf)
            while pos < n and buf[pos] in _WS:
                pos += 1
            self.pos = pos
            if pos < n:
                return buf[pos]
            if not self._fill():
                return ""

    def _value(self) -> Any:
        size = CHUNK
        while True:
            try:
                value, end = self._decoder.raw_decode(self.buf, self.pos)
            except json.JSONDecodeError as exc:
                # Only a value cut by the end of the buffer may complete with more input; an
                # error well inside what is buffered is malformed input (no reading ahead to
                # the end of a large file to find that out).
                truncated = exc.msg.startswith("Unterminated string") or exc.pos >= len(self.buf) - 8
                if self.eof or not truncated:
                    raise InputError(f"{exc.msg} at character {self.base + exc.pos}") from None
                if len(self.buf) - self.pos > MAX_VALUE_CHARS:
                    raise InputError(
                        f"a value at character {self.base + self.pos} is over {MAX_VALUE_CHARS} characters"
                    ) from None
                self._fill(size)
                size *= 2  # a long value: read more at a time, so re-parsing stays linear
                continue
            if end == len(self.buf) and not self.eof and not isinstance(value, (dict, list, str)):
                # A number or literal cut by the buffer end may continue in the next chunk.
                self._fill()
                continue
            self.pos = end
            return value

    def _expect(self, chars: str) -> str:
        c = self._skip_ws()
        if c == "" or c not in chars:
            raise InputError(f"expected one of {chars!r} at character {self.base + self.pos}, got {c!r}")
        self.pos += 1
        return c

    def _resync(self, message: str) -> None:
        self.errors += 1
        if self.on_error:
            self.on_error(message)
        while True:
            nl = self.buf.find("\n", self.pos)
            if nl >= 0:
                self.pos = nl + 1
                return
            self.pos = len(self.buf)
            if not self._fill():
                return

    # -- structure -------------------------------------------------------------------------

    def _array(self) -> Iterator[Any]:
        self.pos += 1  # '['
        if self._skip_ws() == "]":
            self.pos += 1
            return
        while True:
            self._skip_ws()
            yield self._value()
            if self._expect(",]") == "]":
                return

    def _document(self) -> Iterator[Any]:
        self.pos += 1  # '{'
        if self._skip_ws() == "}":
            self.pos += 1
            return
        while True:
            self._skip_ws()
            key = self._value()
            self._expect(":")
            if key == "Records" and self._skip_ws() == "[":
                yield from self._array()
            else:
                self._skip_ws()
                self._value()  # NextShardIterator and the like
            if self._expect(",}") == "}":
                return

    def _is_document(self) -> bool:
        self._keep = self.pos
        try:
            while len(self.buf) - self.pos < 64 and self._fill():
                pass
        finally:
            self._keep = -1
        return _DOC_KEY.match(self.buf, self.pos) is not None

    def __iter__(self) -> Iterator[dict[str, Any]]:
        while True:
            c = self._skip_ws()
            if c == "":
                return
            try:
                if c == "{" and self._is_document():
                    yield from self._document()
                elif c == "[":
                    yield from self._array()
                else:
                    start = self.base + self.pos
                    try:
                        value = self._value()
                    except InputError as exc:
                        self._resync(f"unreadable input at character {start}: {exc}")
                        continue
                    if isinstance(value, dict):
                        yield value
                    else:
                        self._resync(
                            f"a JSON {type(value).__name__} at character {start} is not a stream record"
                        )
            except InputError as exc:
                raise InputError(f"malformed GetRecords document or array: {exc}") from None
