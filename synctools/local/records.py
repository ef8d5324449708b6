"""Streaming reader of DynamoDB stream records: JSON lines, GetRecords documents, bare arrays.

Accepted input, in any mix and never loaded whole into memory (docs/local-tools.md, "Input"):
- JSON lines (or any concatenation of JSON objects), one stream record each;
- the document GetRecords returns, `{"Records": [...], "NextShardIterator": "..."}`, possibly
  pretty-printed and possibly several of them back to back (one per page);
- a bare JSON array of records (what a DynamoDB-sourced Pipe hands downstream: AWS: eb-pipes-batching-concurrency).

The input is UTF-8, read as bytes; a UTF-8 byte order mark is skipped. Every problem is told
to `on_error` as `<name>:<line>: <what is wrong> - <how to fix>`, the line being where the
record starts, and counted: `errors` for what cannot be read (bytes that are not UTF-8, text
that is not JSON), `invalid` for JSON values that are not stream records. A bad line of JSON
lines is skipped and reading goes on; a bad record inside a document or array is skipped when
the JSON around it is intact; JSON broken inside a document or array ends the input there (where
the next record starts cannot be known); UTF-16 or UTF-32 input is refused as a whole.
"""

from __future__ import annotations

import codecs
import json
import re
from collections import deque
from collections.abc import Callable, Iterator
from typing import IO, Any, NamedTuple

CHUNK = 1 << 16
MAX_VALUE_CHARS = 16 << 20  # a stream record is at most a 400 KB item, twice
_WS = " \t\r\n"
_BOM = "\ufeff"
_DOC_KEY = re.compile(r'\{\s*"(Records|NextShardIterator)"\s*:')
_STREAM_ARN = re.compile(r"^arn:aws[\w-]*:dynamodb:([^:]*):([^:]*):table/([^/]+)/stream/")
# What the surrogateescape error handler makes of each byte that is not UTF-8.
_ESCAPED = re.compile("[\udc80-\udcff]")
_utf8 = codecs.utf_8_decode
_WIDE_BOMS = (
    (b"\xff\xfe\x00\x00", "UTF-32LE"),
    (b"\x00\x00\xfe\xff", "UTF-32BE"),
    (b"\xff\xfe", "UTF-16LE"),
    (b"\xfe\xff", "UTF-16BE"),
)

EVENT_NAMES = ("INSERT", "MODIFY", "REMOVE")
_IMAGES = ("Keys", "NewImage", "OldImage")
_ABSENT: Any = object()
_NO_MAP: dict[str, Any] = {}  # what an absent Keys/NewImage/OldImage reads as: fine

FIX_UTF8 = (
    "the input must be UTF-8 (docs/local-tools.md#input); convert it, e.g. iconv -f WINDOWS-1252 -t UTF-8"
)
FIX_JSON_LINE = "each line must be one JSON object, a DynamoDB stream record (docs/local-tools.md#input)"
FIX_RECORD = (
    'write each record as a JSON object as DynamoDB Streams delivers it, {"eventName": ..., '
    '"eventSourceARN": ..., "dynamodb": {...}} (docs/local-tools.md#input)'
)
FIX_EVENT_NAME = 'set "eventName" to "INSERT", "MODIFY" or "REMOVE", as DynamoDB Streams does'
FIX_DYNAMODB = (
    'add the "dynamodb" object DynamoDB Streams sends: {"Keys": {...}, "NewImage": {...}, '
    '"SequenceNumber": "..."} (docs/local-tools.md#input)'
)
FIX_IMAGE = (
    'write it in DynamoDB JSON, {"attr": {"S": "text"}, "n": {"N": "1"}, ...} (docs/local-tools.md#input)'
)
FIX_SOURCE_ARN = (
    "give the stream ARN, arn:aws:dynamodb:<region>:<account>:table/<table>/stream/<label>, "
    "which names the table the record is routed by, or pass --entity NAME"
)


class InputError(ValueError):
    """Text that cannot be parsed; `pos` is the character position of the problem."""

    def __init__(self, msg: str, pos: int) -> None:
        super().__init__(f"{msg} at character {pos}")
        self.msg = msg
        self.pos = pos


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


def json_kind(value: Any) -> str:
    """'a JSON number', 'a JSON array', ...: what a value is, in JSON's words."""
    if isinstance(value, dict):
        return "a JSON object"
    if isinstance(value, list):
        return "a JSON array"
    if isinstance(value, str):
        return "a JSON string"
    if isinstance(value, bool):
        return "a JSON boolean"
    if value is None:
        return "JSON null"
    return "a JSON number"


def _shown(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 60 else text[:57] + "..."


class RecordProblem(NamedTuple):
    """Why a value cannot be a stream record: what is wrong, how to fix it, and the keys leading
    to the wrong part (() for the value itself)."""

    what: str
    fix: str
    path: tuple[str, ...] = ()


def record_problem(value: Any, *, require_source_arn: bool = False) -> RecordProblem | None:
    """Why `value` cannot be a DynamoDB stream record, or None.

    Checks what the local pipeline relies on, the shape DynamoDB Streams always gives (the
    Record and StreamRecord types of the DynamoDB Streams API reference): an object with an
    eventName of INSERT/MODIFY/REMOVE and a `dynamodb` object whose Keys/NewImage/OldImage, when
    present, are maps; with `require_source_arn`, an eventSourceARN naming a table (routing)."""
    # The common case first, in one expression: a record as DynamoDB Streams writes it.
    if (
        type(value) is dict
        and value.get("eventName") in EVENT_NAMES
        and type(dyn := value.get("dynamodb")) is dict
        and type(dyn.get("Keys", _NO_MAP)) is dict
        and type(dyn.get("NewImage", _NO_MAP)) is dict
        and type(dyn.get("OldImage", _NO_MAP)) is dict
        and (not require_source_arn or table_of(value) is not None)
    ):
        return None
    if type(value) is not dict:
        return RecordProblem(f"{json_kind(value)} is not a stream record", FIX_RECORD)
    name = value.get("eventName")
    if name not in EVENT_NAMES:
        if "eventName" not in value:
            return RecordProblem('the record has no "eventName"', FIX_EVENT_NAME)
        return RecordProblem(
            f"eventName {_shown(name)} is not INSERT, MODIFY or REMOVE", FIX_EVENT_NAME, ("eventName",)
        )
    dyn = value.get("dynamodb")
    if type(dyn) is not dict:
        if "dynamodb" not in value:
            return RecordProblem('the record has no "dynamodb" object', FIX_DYNAMODB)
        return RecordProblem(f'"dynamodb" is {json_kind(dyn)}, not an object', FIX_DYNAMODB, ("dynamodb",))
    for key in _IMAGES:
        image = dyn.get(key, _ABSENT)
        if image is not _ABSENT and type(image) is not dict:
            return RecordProblem(
                f'"dynamodb.{key}" is {json_kind(image)}, not a map of attribute values',
                FIX_IMAGE,
                ("dynamodb", key),
            )
    if require_source_arn and table_of(value) is None:
        arn = value.get("eventSourceARN", _ABSENT)
        if arn is _ABSENT:
            return RecordProblem(
                'the record has no "eventSourceARN", so no entity can be chosen for it', FIX_SOURCE_ARN
            )
        return RecordProblem(
            f"eventSourceARN {_shown(arn)} is not a DynamoDB stream ARN", FIX_SOURCE_ARN, ("eventSourceARN",)
        )
    return None


class RecordReader:
    """Iterate the stream records of a binary (UTF-8) or text stream; see the module docstring.
    `errors` counts unreadable input, `invalid` JSON values that are not stream records (both
    skipped); `on_error(message)` is told about each. `require_source_arn`: a record must name
    its table in eventSourceARN (the replay routes by it unless --entity is given)."""

    def __init__(
        self,
        fh: IO[Any],
        *,
        name: str = "<input>",
        on_error: Callable[[str], None] | None = None,
        require_source_arn: bool = False,
    ) -> None:
        self.fh = fh
        self.name = name
        self.on_error = on_error
        self.require_source_arn = require_source_arn
        self.buf = ""
        self.pos = 0
        self.base = 0  # characters consumed before buf[0]
        self.eof = False
        self.errors = 0
        self.invalid = 0
        self._decoder = json.JSONDecoder()
        self._keep = -1  # a position fill() must not discard
        self._binary = isinstance(fh.read(0), bytes)
        self._first = True
        self._pending = b""  # the start of a UTF-8 sequence cut by the chunk's end
        self._bytes = 0  # bytes decoded before the end of buf
        # (character position, byte offset, byte) of each byte that is not UTF-8, in order.
        self._bad: deque[tuple[int, int, int]] = deque()
        self._nl = 0  # line breaks before character position _nl_at
        self._nl_at = 0
        self._stopped = False

    # -- bytes -----------------------------------------------------------------------------

    def _read(self, size: int) -> str:
        """The next chunk of text ("" at the end). Bytes that are not UTF-8 become surrogate
        escapes (one character per byte) and are remembered in _bad, so that the record holding
        them can be skipped and reported with its byte offset, and nothing after it is lost."""
        if not self._binary:
            try:
                text: str = self.fh.read(size)  # a text stream: str
                return text
            except UnicodeDecodeError as exc:
                # A text stream decoded by its opener: where in the input is not known here.
                self._stop(
                    self.line_of(self.base + len(self.buf)),
                    f"the input is not UTF-8 ({exc.reason}); the rest of the input is not read",
                    FIX_UTF8,
                )
                return ""
        while True:
            raw: bytes = self.fh.read(size)
            if self._first:
                self._first = False
                if raw and not self._sniff(raw):
                    return ""
            data = self._pending + raw if self._pending else raw
            if not raw:
                # The end: a UTF-8 sequence cut short there is not UTF-8 either.
                self._pending = b""
                if not data:
                    return ""
                text, used = _utf8(data, "surrogateescape", True)
                self._escaped(text)
                self._bytes += used
                return text
            try:
                text, used = _utf8(data, "strict", False)
            except UnicodeDecodeError:
                text, used = _utf8(data, "surrogateescape", False)
                self._escaped(text)
            self._pending = data[used:]
            self._bytes += used
            if text:
                return text

    def _sniff(self, head: bytes) -> bool:
        """False, and reported, for UTF-16 or UTF-32 input (Windows PowerShell 5 redirects output
        as UTF-16): every line would fail alike. A NUL byte never starts JSON text in UTF-8."""
        if b"\x00" not in head[:8]:
            return True
        for bom, label in _WIDE_BOMS:
            if head.startswith(bom):
                found = f"{label} (it starts with the byte order mark {bom.hex(' ').upper()})"
                break
        else:
            label, found = "UTF-16", "UTF-16 or UTF-32 (it has NUL bytes)"
        self._stop(
            1,
            f"the input is {found}, not UTF-8; nothing is read",
            f"convert it, e.g. iconv -f {label} -t UTF-8 IN > OUT, or in PowerShell "
            "Get-Content IN | Set-Content -Encoding utf8 OUT (docs/local-tools.md#input)",
        )
        return False

    def _escaped(self, text: str) -> None:
        at = self.base + len(self.buf)  # where `text` will start (a cut in _fill keeps this)
        offset, last = self._bytes, 0
        for m in _ESCAPED.finditer(text):
            i = m.start()
            offset += len(text[last:i].encode("utf-8", "surrogateescape"))
            self._bad.append((at + i, offset, ord(text[i]) - 0xDC00))
            offset += 1
            last = i + 1

    def _bad_in(self, start: int, end: int) -> tuple[int, int, int] | None:
        """The first byte that is not UTF-8 within characters [start, end); those before are done."""
        bad = self._bad
        while bad and bad[0][0] < start:
            bad.popleft()
        return bad[0] if bad and bad[0][0] < end else None

    # -- buffer ----------------------------------------------------------------------------

    def _fill(self, size: int = CHUNK) -> bool:
        if self.eof:
            return False
        data = self._read(size)
        cut = self.pos if self._keep < 0 else min(self.pos, self._keep)
        if cut:
            at = self._nl_at - self.base
            if at < cut:  # count the line breaks about to be discarded
                self._nl += self.buf.count("\n", at, cut)
                self._nl_at = self.base + cut
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

    def line_of(self, pos: int) -> int:
        """The 1-based line of character position `pos`, which must still be buffered.
        Counting is lazy (only where a problem is reported) and never goes over a line twice."""
        rel = max(pos - self.base, 0)
        at = self._nl_at - self.base
        if rel >= at:
            self._nl += self.buf.count("\n", at, rel)
            self._nl_at = self.base + rel
            return self._nl + 1
        return self._nl - self.buf.count("\n", rel, at) + 1

    def _column(self, pos: int) -> str:
        rel = pos - self.base
        start = self.buf.rfind("\n", 0, rel) + 1
        return f"column {rel - start + 1}" if start or not self.base else ""

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
                    raise InputError(exc.msg, self.base + exc.pos) from None
                if len(self.buf) - self.pos > MAX_VALUE_CHARS:
                    raise InputError(
                        f"a value over {MAX_VALUE_CHARS:,} characters", self.base + self.pos
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
            got = repr(c) if c else "the end of the input"
            raise InputError(f"Expecting {' or '.join(map(repr, chars))}, got {got}", self.base + self.pos)
        self.pos += 1
        return c

    def _skip_line(self) -> int:
        """Skip to the next line break; the position after it."""
        while True:
            nl = self.buf.find("\n", self.pos)
            if nl >= 0:
                self.pos = nl + 1
                return self.base + self.pos
            self.pos = len(self.buf)
            if not self._fill():
                return self.base + self.pos

    # -- problems --------------------------------------------------------------------------

    def _report(self, line: int, what: str, fix: str, *, invalid: bool = False) -> None:
        if self._stopped:
            return  # what follows a fatal problem is its consequence
        if invalid:
            self.invalid += 1
        else:
            self.errors += 1
        if self.on_error:
            self.on_error(f"{self.name}:{line}: {what} - {fix}")

    def _stop(self, line: int, what: str, fix: str) -> None:
        self._report(line, what, fix)
        self._stopped = self.eof = True

    def _not_utf8(
        self, line: int, bad: tuple[int, int, int], prefix: str, skipped: str, *, same_line: bool = False
    ) -> None:
        pos, offset, byte = bad
        bad_line = line if same_line else self.line_of(pos)
        on = f" (line {bad_line})" if bad_line != line else ""
        self._report(
            line, f"{prefix}byte 0x{byte:02X} at byte offset {offset}{on} is not UTF-8; {skipped}", FIX_UTF8
        )

    def _unreadable_line(self, start: int, exc: InputError) -> None:
        """A top-level value that is not JSON: skip its line, report why."""
        line = self.line_of(start)
        err_line = self.line_of(exc.pos)
        where = ", ".join(
            p for p in (f"line {err_line}" if err_line != line else "", self._column(exc.pos)) if p
        )
        nul = "\x00" in self.buf[start - self.base : exc.pos - self.base + 1]
        end = self._skip_line()
        bad = self._bad_in(start, end) if self._bad else None
        if bad is not None:
            # [start, end) is one line: the byte is on it.
            self._not_utf8(line, bad, "", "line skipped", same_line=True)
        elif nul:
            self._report(
                line,
                "not valid JSON: it holds NUL characters, as UTF-16 text read as UTF-8 does; line skipped",
                FIX_UTF8,
            )
        else:
            self._report(
                line,
                f"not valid JSON ({exc.msg}{', ' + where if where else ''}); line skipped",
                FIX_JSON_LINE,
            )

    # -- structure -------------------------------------------------------------------------

    def _array(self) -> Iterator[tuple[int, int, Any]]:
        """(start, index, value) of each element."""
        self.pos += 1  # '['
        if self._skip_ws() == "]":
            self.pos += 1
            return
        i = 0
        while True:
            self._skip_ws()
            start = self.base + self.pos
            yield start, i, self._value()
            i += 1
            if self._expect(",]") == "]":
                return

    def _document(self) -> Iterator[tuple[int, int, Any]]:
        """(start, index, value) of each element of Records."""
        self.pos += 1  # '{'
        if self._skip_ws() == "}":
            self.pos += 1
            return
        while True:
            self._skip_ws()
            key = self._value()
            self._expect(":")
            c = self._skip_ws()
            if key == "Records" and c == "[":
                yield from self._array()
            else:
                start = self.base + self.pos
                value = self._value()  # NextShardIterator and the like
                if key == "Records":
                    self._report(
                        self.line_of(start),
                        f'"Records" is {json_kind(value)}, not an array of stream records; skipped',
                        'a GetRecords page is {"Records": [...], "NextShardIterator": ...} (docs/local-tools.md#input)',
                        invalid=True,
                    )
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
        arn = self.require_source_arn
        while True:
            c = self._skip_ws()
            if c == "":
                return
            start = self.base + self.pos
            if c != "[" and not (c == "{" and self._is_document()):
                # A value of JSON lines: most often a record, else anything at all.
                if c == _BOM:
                    self.pos += 1  # a byte order mark, as Windows editors write first: not content
                    continue
                try:
                    value = self._value()
                except InputError as exc:
                    self._unreadable_line(start, exc)
                    continue
                problem = record_problem(value, require_source_arn=arn)
                # No byte that is not UTF-8 pending, no backslash (so no surrogate escape): the
                # common case; anything else is looked at closely by _rejected.
                fine = (
                    problem is None and not self._bad and self.buf.find("\\", start - self.base, self.pos) < 0
                )
                if fine or not self._rejected(start, value, problem, ""):
                    yield value
                continue
            # A GetRecords document or an array: its elements are the records.
            line = self.line_of(start)
            document = c == "{"
            label = "Records" if document else "array element "
            try:
                for at, i, value in self._document() if document else self._array():
                    problem = record_problem(value, require_source_arn=arn)
                    fine = (
                        problem is None
                        and not self._bad
                        and self.buf.find("\\", at - self.base, self.pos) < 0
                    )
                    if fine or not self._rejected(at, value, problem, f"{label}[{i}]: "):
                        yield value
            except InputError as exc:
                self._broken(line, "GetRecords document" if document else "JSON array", exc)
                return

    def _escapes(self, start: int) -> bool:
        """Whether the value from `start` to here holds a \\uD800-\\uDFFF escape: only then can it
        hold a lone surrogate, which is valid JSON but not text (it cannot be encoded as UTF-8).
        """
        buf, s, e = self.buf, start - self.base, self.pos
        return buf.find("\\ud", s, e) >= 0 or buf.find("\\uD", s, e) >= 0

    def _rejected(self, start: int, value: Any, problem: RecordProblem | None, prefix: str) -> bool:
        """Report the value from `start` to here and say True, or False when it is a record after
        all (its surrogate escapes are pairs, its bytes that are not UTF-8 lie outside it)."""
        bad = self._bad_in(start, self.base + self.pos) if self._bad else None
        if bad is not None:
            self._not_utf8(self.line_of(start), bad, prefix, "skipped")
            return True
        if problem is not None:
            self._report(self.line_of(start), f"{prefix}{problem.what}; skipped", problem.fix, invalid=True)
            return True
        if self._escapes(start):
            try:
                json.dumps(value, ensure_ascii=False).encode("utf-8")
            except UnicodeEncodeError as exc:
                self._report(
                    self.line_of(start),
                    f"{prefix}the record holds the escape \\u{ord(exc.object[exc.start]):04X}, a lone "
                    "UTF-16 surrogate, which is not a character; skipped",
                    "escape a character beyond U+FFFF as a surrogate pair (\\uD83D\\uDE00) or write "
                    "it as UTF-8 (docs/local-tools.md#input)",
                    invalid=True,
                )
                return True
        return False

    def _broken(self, line: int, kind: str, exc: InputError) -> None:
        """JSON broken inside a document or array: where the next record starts is unknown."""
        # The parse stops right at a byte that is not UTF-8 where it breaks the structure.
        bad = next((b for b in self._bad if b[0] == exc.pos), None)
        if bad is not None:
            what = f"byte 0x{bad[2]:02X} at byte offset {bad[1]} is not UTF-8"
            fix = FIX_UTF8
        else:
            column = self._column(exc.pos)
            what = f"not valid JSON ({exc.msg}{', ' + column if column else ''})"
            fix = "fix the JSON (docs/local-tools.md#input)"
        self._stop(
            self.line_of(exc.pos),
            f"{what}, in the {kind} that starts on line {line}; the rest of the input is not read",
            fix,
        )
