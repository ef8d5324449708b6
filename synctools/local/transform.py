"""The Pipes input transformer and the dynamic SQS target parameters, applied to one record.

The input template (AWS: eb-pipes-input-transformation) is text with `<path>` placeholders, rendered once per
stream record, never on the batch (AWS: eb-pipes-batching-concurrency). What a placeholder becomes depends on what
its path resolves to and on whether it sits inside a JSON string of the template (AWS: eb-pipes-input-transformation):

| resolved value | unquoted `{"k": <p>}`          | inside quotes `"..<p>.."`         |
|----------------|--------------------------------|-----------------------------------|
| string         | JSON string, quotes added      | spliced raw                       |
| object / array | JSON                           | quotes stripped: {k:v}, [A,B]     |
| boolean        | true / false                   | true / false                      |
| number         | number literal                 | digits                            |
| null           | null                           | null                              |
| missing path   | "" (an empty JSON string)      | nothing                           |

Paths are the subset Pipes accepts (AWS: eb-pipes-input-transformation): `$`, then dot segments of [A-Za-z0-9_/-]
each optionally followed by `[n]` or `[*]`; `[*]` yields an array of the matches (its real
shape is undocumented: open question 2). Reserved variables are those of AWS: eb-pipes-input-transformation.

The SQS target's MessageGroupId / MessageDeduplicationId are dynamic parameters (AWS: API_PipeTargetSqsQueueParameters):
the whole value is one JSON path, evaluated on the ORIGINAL record (never the template's
output); a value not starting with `$` is a literal; the parameter is at most 100 characters
(the Pipes API cap) and the resolved id at most 128 (SQS's own limit).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from json.encoder import encode_basestring as _encode_string  # json.dumps(s, ensure_ascii=False)
from typing import Any

from runtime.aws_limits import PIPES_DYNAMIC_PARAMETER_CHARS, PIPES_TEMPLATE_CHARS, SQS_ID_CHARS
from synctools import awsdocs

# facts 1.2: Terraform's validation regex for dynamic paths (Go's \w is ASCII [0-9A-Za-z_]).
PATH_RE = re.compile(r"^\$(\.[A-Za-z0-9_/-]+(\[(\d+|\*)\])*)*$")
_SEGMENT_RE = re.compile(r"\.([A-Za-z0-9_/-]+)|\[(\d+|\*)\]")
_PLACEHOLDER_RE = re.compile(r"<([^<>]*)>")
# SQS: ids are 1..128 characters of alphanumerics and ASCII punctuation (no spaces); not in
# the facts file, but SendMessageBatch refuses anything else.
_SQS_ID_RE = re.compile(r"^[A-Za-z0-9!\"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~]+$")

RESERVED = (
    "aws.pipes.pipe-arn",
    "aws.pipes.pipe-name",
    "aws.pipes.source-arn",
    "aws.pipes.enrichment-arn",
    "aws.pipes.target-arn",
    "aws.pipes.event.ingestion-time",
    "aws.pipes.event",
    "aws.pipes.event.json",
)


class TemplateError(ValueError):
    """A template or dynamic parameter Pipes would refuse."""


class TargetError(ValueError):
    """A record the SQS target refuses (e.g. its MessageGroupId resolves to nothing)."""


class _Missing:
    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()
_WILDCARD = object()


@dataclass(frozen=True)
class PipeContext:
    """What the reserved variables resolve to (AWS: eb-pipes-input-transformation). `clock` gives epoch seconds (the
    replay passes its virtual clock)."""

    pipe_name: str = "local-pipe"
    pipe_arn: str = "arn:aws:pipes:us-east-1:000000000000:pipe/local-pipe"
    source_arn: str = ""
    target_arn: str = ""
    enrichment_arn: str = ""
    clock: Callable[[], float] | None = None

    def ingestion_time(self) -> str:
        t = self.clock() if self.clock else datetime.now(UTC).timestamp()
        return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_path(path: str) -> tuple[Any, ...]:
    """`$.a.b[0][*]` -> ("a", "b", 0, WILDCARD). Raises TemplateError outside AWS: eb-pipes-input-transformation."""
    if not PATH_RE.match(path):
        raise TemplateError(
            f"{path!r} is not a JSON path Pipes supports (see {awsdocs.PIPES_INPUT_TRANSFORM}: $ then .segment of "
            "[A-Za-z0-9_/-], each optionally followed by [n] or [*])"
        )
    steps: list[Any] = []
    for name, index in _SEGMENT_RE.findall(path[1:]):
        if name:
            steps.append(name)
        elif index == "*":
            steps.append(_WILDCARD)
        else:
            steps.append(int(index))
    return tuple(steps)


def resolve(steps: tuple[Any, ...], doc: Any) -> Any:
    """The value at a parsed path, or MISSING. A `[*]` step makes the result an array of every
    match (open question 2 in the facts: assumed, as emulators do)."""
    if _WILDCARD not in steps:
        node = doc
        for step in steps:
            if isinstance(step, str):
                if not isinstance(node, dict):
                    return MISSING
                node = node.get(step, MISSING)
                if node is MISSING:
                    return MISSING
            else:
                if not isinstance(node, list) or step >= len(node):
                    return MISSING
                node = node[step]
        return node
    nodes = [doc]
    for step in steps:
        nxt: list[Any] = []
        for node in nodes:
            if step is _WILDCARD:
                if isinstance(node, list):
                    nxt.extend(node)
            elif isinstance(step, str):
                if isinstance(node, dict) and step in node:
                    nxt.append(node[step])
            elif isinstance(node, list) and step < len(node):
                nxt.append(node[step])
        nodes = nxt
    return nodes


def compact_encoder(*, sort_keys: bool) -> Callable[[Any], str]:
    """JSONEncoder(sort_keys=..., separators=(",", ":"), ensure_ascii=False).encode, without
    its per-call set-up: encode() makes a new C encoder (json.encoder.c_make_encoder) for
    every object, a third to a half of the cost of a small object's text. The C encoder is
    made once here with the same settings, and without the check for circular references (a
    value parsed from JSON or read through boto3 cannot refer to itself). It is the json
    module's own C encoder, not a rewrite; where it is missing (another Python
    implementation) or does not write what encode() writes, encode() is used."""
    enc = json.JSONEncoder(sort_keys=sort_keys, separators=(",", ":"), ensure_ascii=False)
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:
        return enc.encode
    try:
        c_encode = make(
            None, enc.default, json.encoder.encode_basestring, None, ":", ",", sort_keys, False, True
        )
    except TypeError:  # another signature
        return enc.encode

    def encode(value: Any) -> str:
        return "".join(c_encode(value, 0))

    probe = {"b": [1, 2.5, -0.0, 1e300, True, None], "a": {"S": 'x"\\\n\u00e9\u2028'}, "c": {}, "": []}
    try:
        same = encode(probe) == enc.encode(probe)
    except Exception:  # noqa: BLE001 (any failure means: not usable here)
        same = False
    return encode if same else enc.encode


_json = compact_encoder(sort_keys=False)


def _object(value: dict[Any, Any]) -> str:
    """_json of an object; an attribute value of strings ({"S": "x"}, the common case) is
    written directly, with the encoder's own string escaping."""
    parts = []
    for k, v in value.items():
        if type(k) is not str or type(v) is not str:
            return _json(value)
        parts.append(_encode_string(k) + ":" + _encode_string(v))
    return "{" + ",".join(parts) + "}"


def _stripped(value: Any) -> str:
    """An object or array inside quotes: EventBridge strips the inner quotes and compacts it,
    {"a":"x","b":["y"]} -> {a:x,b:[y]} (AWS: eb-pipes-input-transformation, validated on EventBridge rules)."""
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{_stripped(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_stripped(v) for v in value) + "]"
    return _quoted(value)


def _quoted(value: Any) -> str:
    if value is MISSING:
        return ""  # facts 1.3: a missing path inside quotes leaves nothing
    if isinstance(value, str):
        return value  # spliced raw, never escaped (facts 1.3, "doesn't escape values")
    if isinstance(value, (dict, list)):
        return _stripped(value)
    return _json(value)


def _unquoted(value: Any, escape: bool = True) -> str:
    if value is MISSING:
        return '""'  # facts 1.3: {"command": <cmd>} -> {"command": ""}
    if isinstance(value, str):
        # Open question 6 (facts 8): whether Pipes JSON-escapes a string it quotes is not
        # documented. We escape (json.dumps) by default: the generated templates place every
        # placeholder unquoted precisely so that Pipes produces valid JSON, and quoting
        # without escaping would make a value containing '"' or '\' an invalid body that the
        # runtime rejects as a poison message. escape=False models the other reading.
        return _encode_string(value) if escape else f'"{value}"'
    if value is True:
        return "true"
    if value is False:
        return "false"
    if type(value) is int:
        return str(value)
    return _json(value)  # float, null, object, array


# One placeholder of a compiled template: (record, context) -> its text in the body.
_Part = Callable[[dict[str, Any], "PipeContext | None"], str]


def _reserved_part(name: str, quoted: bool, escape: bool) -> _Part:
    """A reserved variable (<aws.pipes.*>), inside a JSON string or bare."""
    if quoted:
        return lambda r, c: _quoted(_reserved(name, r, c))
    return lambda r, c: _unquoted(_reserved(name, r, c), escape)


def _quoted_part(steps: tuple[Any, ...]) -> _Part:
    """A path placeholder inside a JSON string."""
    return lambda r, c: _quoted(resolve(steps, r))


def _unquoted_part(steps: tuple[Any, ...], escape: bool) -> _Part:
    """A bare path placeholder."""
    return lambda r, c: _unquoted(resolve(steps, r), escape)


def _fast_unquoted(keys: tuple[str, ...]) -> _Part:
    """The common case, specialised: a path of object keys only, placed unquoted. Same output
    as _unquoted(resolve(...)): a KeyError or TypeError on the way means the path is missing."""

    def part(record: dict[str, Any], ctx: PipeContext | None) -> str:
        node: Any = record
        try:
            for k in keys:
                node = node[k]
        except (KeyError, TypeError):
            return '""'
        t = type(node)
        if t is str:
            return _encode_string(node)
        if t is int:
            return str(node)
        if t is dict:
            return _object(node)
        return _unquoted(node)

    return part


@dataclass(frozen=True)
class _Slot:
    text: str  # the placeholder as written, "<$.x>"
    steps: tuple[Any, ...] | None  # a path, or None for a reserved variable
    reserved: str | None
    quoted: bool


class Template:
    """A parsed input template; `render(record)` gives the SQS message body."""

    def __init__(self, text: str, *, escape_strings: bool = True) -> None:
        if len(text) > PIPES_TEMPLATE_CHARS:
            raise TemplateError(f"template is {len(text)} characters, over the {PIPES_TEMPLATE_CHARS} limit")
        self.text = text
        self.escape_strings = escape_strings
        self.literals: list[str] = []
        self.slots: list[_Slot] = []
        in_string = False
        pos = 0
        for m in _PLACEHOLDER_RE.finditer(text):
            literal = text[pos : m.start()]
            in_string = _scan_quotes(literal, in_string)
            self.literals.append(literal)
            self.slots.append(_slot(m.group(0), m.group(1).strip(), in_string))
            pos = m.end()
        tail = text[pos:]
        if _scan_quotes(tail, in_string):
            raise TemplateError("template has an unterminated string")
        self.literals.append(tail)
        for i, slot in enumerate(self.slots):
            after = self.literals[i + 1].lstrip()
            if not slot.quoted and after.startswith(":"):
                raise TemplateError(
                    f"{slot.text}: a placeholder cannot be a JSON object key (see {awsdocs.PIPES_INPUT_TRANSFORM})"
                )
        self._render = self._compile()

    def _compile(self) -> Callable[[dict[str, Any], PipeContext | None], str]:
        lits = self.literals
        if not self.text:
            # An empty template means no transformation: the record itself is the body (facts 4).
            return lambda record, ctx: _json(record)
        escape = self.escape_strings
        parts: list[_Part] = []
        for slot in self.slots:
            if slot.reserved is not None:
                parts.append(_reserved_part(slot.reserved, slot.quoted, escape))
            elif slot.steps is None:  # _slot gives every other placeholder a path
                raise TemplateError(f"{slot.text}: neither a JSON path nor a reserved variable")
            elif slot.quoted:
                parts.append(_quoted_part(slot.steps))
            elif escape and slot.steps and all(isinstance(k, str) for k in slot.steps):
                parts.append(_fast_unquoted(slot.steps))
            else:
                parts.append(_unquoted_part(slot.steps, escape))
        pairs = list(zip(lits[:-1], parts, strict=True))
        last = lits[-1]

        def render(record: dict[str, Any], ctx: PipeContext | None) -> str:
            out = []
            for lit, part in pairs:
                out.append(lit)
                out.append(part(record, ctx))
            out.append(last)
            return "".join(out)

        return render

    def render(self, record: dict[str, Any], ctx: PipeContext | None = None) -> str:
        return self._render(record, ctx)


def _scan_quotes(literal: str, in_string: bool) -> bool:
    """Whether we are inside a JSON string after `literal` (backslash escapes honoured)."""
    i, n = 0, len(literal)
    while i < n:
        ch = literal[i]
        if in_string and ch == "\\":
            i += 2
            continue
        if ch == '"':
            in_string = not in_string
        i += 1
    return in_string


def _slot(text: str, inner: str, quoted: bool) -> _Slot:
    if inner in RESERVED:
        if inner == "aws.pipes.event.json" and quoted:
            raise TemplateError(
                f"{text}: can only be used as a value for a JSON field, not inside quotes (see {awsdocs.PIPES_INPUT_TRANSFORM})"
            )
        return _Slot(text, None, inner, quoted)
    if inner.startswith("aws."):
        raise TemplateError(
            f"{text}: unknown reserved variable ({', '.join(RESERVED)}; see {awsdocs.PIPES_INPUT_TRANSFORM})"
        )
    try:
        return _Slot(text, parse_path(inner), None, quoted)
    except TemplateError:
        raise TemplateError(
            f"{text}: not a JSON path Pipes supports (see {awsdocs.PIPES_INPUT_TRANSFORM}); '<' and '>' cannot be escaped in a "
            "template, so every <...> is a placeholder"
        ) from None


def _reserved(name: str, record: dict[str, Any], ctx: PipeContext | None) -> Any:
    ctx = ctx or PipeContext()
    if name in ("aws.pipes.event", "aws.pipes.event.json"):
        return record
    if name == "aws.pipes.event.ingestion-time":
        return ctx.ingestion_time()
    value = {
        "aws.pipes.pipe-arn": ctx.pipe_arn,
        "aws.pipes.pipe-name": ctx.pipe_name,
        "aws.pipes.source-arn": ctx.source_arn,
        "aws.pipes.enrichment-arn": ctx.enrichment_arn,
        "aws.pipes.target-arn": ctx.target_arn,
    }[name]
    return value if value else MISSING


class DynamicParameter:
    """One SQS target parameter (MessageGroupId / MessageDeduplicationId), AWS: API_PipeTargetSqsQueueParameters."""

    def __init__(self, name: str, value: str) -> None:
        self.name = name
        self.value = value
        if not value:
            raise TemplateError(f"{name}: empty")
        if len(value) > PIPES_DYNAMIC_PARAMETER_CHARS:
            raise TemplateError(
                f"{name}: {len(value)} characters; the Pipes API takes at most {PIPES_DYNAMIC_PARAMETER_CHARS} (see {awsdocs.PIPES_SQS_TARGET})"
            )
        # "The entire value has to be a JSON path": a value starting with $ must be one whole
        # path; anything else is a literal, sent as written ("order-$.x" included).
        self.steps = parse_path(value) if value.startswith("$") else None
        # A path of object keys only (the common case) is walked without resolve()'s checks.
        self._keys = self.steps if self.steps and all(type(k) is str for k in self.steps) else None

    def resolve(self, record: dict[str, Any]) -> str:
        """The id for one ORIGINAL (untransformed) stream record; TargetError if SQS would refuse it."""
        keys = self._keys
        if keys is not None:
            # Only a usable id returns here; anything else takes the general path below,
            # which says what is wrong.
            v: Any = record
            for k in keys:
                v = v.get(k, MISSING) if type(v) is dict else MISSING
            if type(v) is str and v and len(v) <= SQS_ID_CHARS and _SQS_ID_RE.match(v):
                return v
        if self.steps is None:
            text = self.value
        else:
            v = resolve(self.steps, record)
            if isinstance(v, str):
                text = v
            elif isinstance(v, bool):
                text = "true" if v else "false"
            elif isinstance(v, (int, float)):
                text = _json(v)
            else:
                raise TargetError(
                    f"{self.name} {self.value} resolves to "
                    f"{'nothing' if v is MISSING else type(v).__name__} on record "
                    f"{record.get('eventID', '?')}; SQS FIFO requires it (see {awsdocs.PIPES_SQS_TARGET})"
                )
        if not text or len(text) > SQS_ID_CHARS or not _SQS_ID_RE.match(text):
            raise TargetError(
                f"{self.name} {text[:40]!r} is not 1..{SQS_ID_CHARS} characters of alphanumerics and "
                "punctuation; SQS refuses it"
            )
        return text


@dataclass
class SqsEntry:
    """One SendMessageBatch entry produced by the Pipe for one stream record."""

    body: str
    group_id: str
    dedup_id: str


class PipeTarget:
    """Template + dynamic parameters: stream record -> SQS entry (AWS: eb-pipes-batching-concurrency, API_PipeTargetSqsQueueParameters)."""

    def __init__(
        self,
        template: Template,
        message_group_id: str,
        deduplication_id: str,
        ctx: PipeContext | None = None,
    ) -> None:
        self.template = template
        self.group = DynamicParameter("MessageGroupId", message_group_id)
        self.dedup = DynamicParameter("MessageDeduplicationId", deduplication_id)
        self.ctx = ctx

    def entry(self, record: dict[str, Any]) -> SqsEntry:
        # Both ids are evaluated on the original record, before and apart from the template.
        return SqsEntry(
            self.template.render(record, self.ctx), self.group.resolve(record), self.dedup.resolve(record)
        )


def load_template(path: Any, **kw: Any) -> Template:
    """build/entities/<entity>/input-template.txt holds the template plus one trailing newline."""
    with open(path, encoding="utf-8", newline="") as fh:
        text = fh.read()
    if text.endswith("\n"):
        text = text[:-1]
    return Template(text, **kw)
