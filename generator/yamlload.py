"""YAML loading that remembers where every value came from.

PyYAML's SafeLoader follows YAML 1.1, where `on`, `yes` and `no` are booleans and a bare
`2024-01-01` is a date. Mapping files use YAML 1.2 core-schema scalars instead: only
true/false are booleans and dates stay strings, so `on:` (a rule key) means what it says.
Duplicate keys and non-string keys are refused, never silently merged.

Files are parsed by libyaml (PyYAML's C parser) when it is installed. PyYAML's pure-Python
parser, the reference for what a file means, takes over without it, for a file libyaml
refuses (so syntax errors keep their wording) and for one holding something the two
parsers read differently (see _compose).

A file is text someone wrote, so what it may cost to load is bounded: collections nest at
most MAX_DEPTH deep, and aliases may repeat at most MAX_ALIASED_VALUES values in all (a
recursive alias is refused). Past either, the load stops with a located error at the node
or alias that went over, before anything is expanded (see _Guard).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import yaml

from generator.diagnostics import Diagnostic, PathT, Severity

# Collections nested deeper than this are refused. Mapping files nest under 10 levels; a
# mapping test may write a DynamoDB item, whose documents nest at most 32 levels (AWS:
# https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/ServiceQuotas.html), inside
# about 8 levels of its own. The bound also keeps the recursive composer and _Builder far
# from Python's recursion limit (5,000 levels raised RecursionError from PyYAML).
MAX_DEPTH = 64

# Values that aliases may repeat in one document, counted as expanded (an alias of an
# anchor holding aliases repeats all they repeat). Reusing a record or a list a few dozen
# times stays far below it; a "billion laughs" file of 1 KB, which expands to 10^9 values
# (60 s and 4.6 GB before it was killed), is refused at its first alias past the bound.
MAX_ALIASED_VALUES = 10_000


@dataclass(frozen=True)
class Loc:
    line: int
    col: int


@dataclass
class Located:
    """A loaded document: plain data plus the location of every key and value."""

    file: str
    data: object
    values: dict[PathT, Loc] = field(default_factory=dict)
    keys: dict[PathT, Loc] = field(default_factory=dict)
    # Where the text of a string scalar starts when it stands verbatim on one line (plain, or
    # quoted without escapes): a position inside the string is then a position in the file.
    verbatim: dict[PathT, Loc] = field(default_factory=dict)

    def loc(self, path: PathT, *, key: bool = False) -> Loc:
        """Location of a path; falls back to the nearest located ancestor."""
        path = tuple(path)
        while True:
            if key and path in self.keys:
                return self.keys[path]
            if path in self.values:
                return self.values[path]
            if not path:
                return Loc(1, 1)
            path = path[:-1]

    def loc_in(self, path: PathT, offset: int) -> Loc | None:
        """The location of character `offset` of the string at `path`, if its text stands
        verbatim on one line of the file."""
        start = self.verbatim.get(tuple(path))
        return Loc(start.line, start.col + offset) if start is not None else None


class LoadError(Exception):
    def __init__(self, diagnostics: list[Diagnostic]) -> None:
        super().__init__("\n".join(d.render() for d in diagnostics))
        self.diagnostics = diagnostics


def _construct_int(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> int:
    """YAML 1.2 integers: `010` is ten. PyYAML's YAML 1.1 constructor reads a leading 0 as
    octal, so a legacy code written `const: 010` would silently become 8."""
    text = str(loader.construct_scalar(node))
    if text.startswith("0o"):
        return int(text[2:], 8)
    if text.startswith("0x"):
        return int(text[2:], 16)
    return int(text, 10)


# The two loader classes (the C one exists only where PyYAML was built with libyaml).
_LoaderT = TypeVar("_LoaderT", bound=type[yaml.SafeLoader] | type[yaml.CSafeLoader])


def _core_schema(cls: _LoaderT) -> _LoaderT:
    """Give a loader class YAML 1.2 core-schema scalar resolution and integers."""
    cls.yaml_implicit_resolvers = {}
    cls.add_implicit_resolver(
        "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
    )
    cls.add_implicit_resolver(
        "tag:yaml.org,2002:int",
        re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$"),
        list("-+0123456789"),
    )
    cls.add_implicit_resolver(
        "tag:yaml.org,2002:float",
        re.compile(
            r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
        ),
        list("-+0123456789."),
    )
    cls.add_implicit_resolver(
        "tag:yaml.org,2002:null", re.compile(r"^(?:~|null|Null|NULL|)$"), ["~", "n", "N", ""]
    )
    cls.add_constructor("tag:yaml.org,2002:int", _construct_int)
    return cls


class _Refused(yaml.MarkedYAMLError):
    """Valid YAML the loader will not take, with the mark where it is written."""

    def __init__(self, event: yaml.Event, message: str, hint: str, code: str) -> None:
        # _Guard runs under the pure-Python parser only, which marks every event it makes.
        mark = event.start_mark
        assert isinstance(mark, yaml.error.Mark)
        super().__init__(problem=message, problem_mark=mark)
        self.mark = mark
        self.message = message
        self.hint = hint
        self.code = code


class _Guard(yaml.composer.Composer):
    """Composer bounds, checked as each node is composed and before anything is expanded:
    collections nest at most MAX_DEPTH deep; aliases repeat at most MAX_ALIASED_VALUES values
    in all; an alias inside its own anchor (a recursive structure) is refused.

    The composer shares an anchored node between its aliases, so composing costs what was
    written; expanding happens later, in _Builder, and is what these bounds keep small."""

    if TYPE_CHECKING:  # from the Parser every loader class combines with this composer

        def peek_event(self) -> yaml.Event: ...

    def compose_document(self) -> yaml.Node | None:
        self._depth = 0
        self._values = 0  # values composed so far, aliases counted as expanded
        self._aliased = 0  # of which repeated by aliases
        self._sizes: dict[str | None, int] = {}  # anchor -> values its node expands to
        self._open: set[str | None] = set()  # anchors whose node is being composed
        return super().compose_document()

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        event = self.peek_event()
        assert isinstance(event, yaml.NodeEvent)  # compose_node is called where a node starts
        if isinstance(event, yaml.AliasEvent):
            if event.anchor in self._open:
                raise _Refused(
                    event,
                    f"alias *{event.anchor} is inside the value anchored as &{event.anchor}: "
                    "a recursive structure",
                    "an alias can only repeat a finished value; write the inner part out",
                    "yaml-alias-recursive",
                )
            size = self._sizes.get(event.anchor)  # None: undefined, PyYAML words that error
            if size is not None:
                self._values += size
                self._aliased += size
                if self._aliased > MAX_ALIASED_VALUES:
                    raise _Refused(
                        event,
                        f"alias *{event.anchor} repeats {size:,} values, which takes the aliases "
                        f"of this file past {MAX_ALIASED_VALUES:,} repeated values",
                        "write the repeated part out, or alias fewer or smaller values "
                        "(an alias of a value that holds aliases repeats all of them)",
                        "yaml-alias-size",
                    )
            return super().compose_node(parent, index)
        collection = isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent))
        if collection:
            if self._depth >= MAX_DEPTH:
                raise _Refused(
                    event,
                    f"values nested more than {MAX_DEPTH} levels deep",
                    "flatten the structure: a mapping file needs fewer than 10 levels",
                    "yaml-depth",
                )
            self._depth += 1
        anchor = event.anchor
        start = self._values
        self._values += 1
        if anchor is not None:
            self._open.add(anchor)
        node = super().compose_node(parent, index)
        if anchor is not None:
            self._open.discard(anchor)
            self._sizes[anchor] = self._values - start
        if collection:
            self._depth -= 1
        return node


@_core_schema
class _PureLoader(_Guard, yaml.SafeLoader):
    """PyYAML's pure-Python parser: the reference for what is a syntax error, and the
    source of the error messages (with their problem and context marks) users see. It also
    enforces the bounds (_Guard): a file that could exceed one takes this path."""


def _fast_loader() -> type | None:
    """The same loader on libyaml's parser (C), about 7x faster on mapping files, or None
    when PyYAML was built without libyaml (then every file takes the pure-Python path).

    libyaml only scans, parses and composes: tags are still resolved by the Python resolver
    configured by _core_schema, so scalars, keys and node marks come out as with _PureLoader.
    Its error messages differ, so a file it rejects is parsed again by _PureLoader, which
    decides and words the error (see load_yaml). Its composer cannot be given _Guard's
    bounds, so a tree that holds an alias or nests too deep is composed again by _PureLoader
    too (see _needs_pure): libyaml shares aliased nodes and nests at most 1,000 levels, so
    composing such a file costs no more than what was written."""
    if not yaml.__with_libyaml__:
        return None

    @_core_schema
    class _FastLoader(yaml.CSafeLoader):
        pass

    return _FastLoader


_FAST_LOADER = _fast_loader()

# Text on which libyaml and the pure-Python parser disagree (found by differential fuzzing;
# tests/test_yamlload.py keeps checking). libyaml takes a tab as separating white space,
# '?' as part of a plain scalar inside [...] or {...} and a comment right after a block
# scalar's indicators (`|# note`), all syntax errors for PyYAML; it ends a tag at ',' in a
# flow collection and reads tag handles by YAML 1.2 rules (mapping files need no tags); and
# it counts a byte order mark inside the text as a column, which PyYAML does not. A text
# holding any of these anywhere (in a comment too) takes the pure-Python path, so its
# outcome stays what it was. (Two patterns: as one alternation the search is 3x slower.)
_PURE_ONLY = (re.compile(r"[\t?!\ufeff]"), re.compile(r"[|>][-+0-9]*#"))


_CONTEXT_WIDTH = 100  # columns of a long line shown around the caret


def _context(lines: list[str], line: int, col: int, radius: int = 2) -> str:
    """Numbered source lines around `line` (1-based) with a caret under `col`. Lines longer
    than _CONTEXT_WIDTH show the same window of columns around the caret, cut with '...'."""
    out = []
    lo, hi = max(1, line - radius), min(len(lines), line + radius)
    width = len(str(hi))
    start = max(0, col - 1 - _CONTEXT_WIDTH // 2) if len(lines[line - 1]) > _CONTEXT_WIDTH else 0
    for n in range(lo, hi + 1):
        marker = ">" if n == line else " "
        text = lines[n - 1]
        if start or len(text) > _CONTEXT_WIDTH:
            cut = text[start : start + _CONTEXT_WIDTH]
            text = ("..." if start else "") + cut + ("..." if len(text) > start + _CONTEXT_WIDTH else "")
        out.append(f"  {marker} {n:>{width}} | {text}")
        if n == line:
            out.append(f"    {' ' * width} | {' ' * (max(col - 1 - start, 0) + (3 if start else 0))}^")
    return "\n".join(out)


# Where PyYAML starts a new line (its marks count lines this way); "\r\n" is one break.
_LINE_BREAK = re.compile("\r\n|[\r\n\x85\u2028\u2029]")


def _line_col(text: str, index: int) -> tuple[int, int]:
    """1-based line and column of text[index], counted as PyYAML counts its marks (a byte
    order mark takes no column)."""
    head = text[:index]
    line, start = 1, 0
    for m in _LINE_BREAK.finditer(head):
        line, start = line + 1, m.end()
    return line, len(head) - start - head.count("\ufeff", start) + 1


def _unprintable(file: str, text: str, index: int) -> Diagnostic:
    """A character YAML does not allow in a file (YAML 1.2, 5.1: control characters other
    than tab and line breaks, surrogates, U+FFFE/U+FFFF), at its line and column."""
    char = text[index]
    code = ord(char)
    escape = f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
    line, col = _line_col(text, index)
    lines = [_visible(t) for t in _LINE_BREAK.split(text.rstrip("\r\n"))]
    return _diag(
        file,
        line,
        col,
        "(root)",
        f"the character U+{code:04X} is not allowed in a YAML file",
        f'delete it (editors often show it as nothing or a box); a value that needs it can write it as "{escape}" in double quotes',
        "yaml-character",
        _context(lines, line, col),
    )


def _visible(line: str) -> str:
    """A source line for the context display: control characters as their one-column
    Unicode pictures (U+2400..), so the terminal shows where they are."""
    return line.translate(_PICTURES)


_PICTURES = {c: 0x2400 + c for c in range(0x20) if c != 0x09} | {0x7F: 0x2421}


def _diag(
    file: str, line: int, col: int, path: str, message: str, hint: str, code: str, context: str = ""
) -> Diagnostic:
    return Diagnostic(file, line, col, Severity.ERROR, path, message, hint, code, context)


def _compose(text: str) -> list[yaml.Node]:
    """The node tree of every document in `text`, by libyaml when it accepts the text. When it
    does not, the pure-Python parser decides: it raises the error users see (libyaml words
    its errors differently) or, where the two disagree, returns the tree it always did."""
    if _FAST_LOADER is not None and not any(pattern.search(text) for pattern in _PURE_ONLY):
        try:
            nodes = list(yaml.compose_all(text, Loader=_FAST_LOADER))
        except yaml.YAMLError:
            pass
        else:
            if not _needs_pure(nodes):
                return nodes
    return list(yaml.compose_all(text, Loader=_PureLoader))


def _needs_pure(documents: list[yaml.Node]) -> bool:
    """Whether libyaml's tree must be composed again by the pure-Python parser.

    Either libyaml marks a node where PyYAML does not: an empty document (a last `---` with
    nothing after it) or an empty value in a flow mapping (`{type: }`); libyaml marks such a
    null at the next token ('}', or the end of the text, which is past the last line when
    that has no line break), PyYAML just after the `---` or ':', and a diagnostic about that
    node must point where it always did. Or the tree holds an alias (a node met twice) or
    nests past MAX_DEPTH: _Guard decides those, and says where the alias is written (in the
    tree an alias is its anchor's node, with the anchor's mark)."""
    if any(_is_empty(document) for document in documents):
        return True
    seen: set[int] = set()
    level, depth = list(documents), 0
    while level:  # breadth-first: a collection met on level n is nested n deep
        depth += 1
        below: list[yaml.Node] = []
        for node in level:
            if id(node) in seen:  # an alias: its anchor's node met again
                return True
            seen.add(id(node))
            if isinstance(node, yaml.MappingNode):
                if depth > MAX_DEPTH:
                    return True
                for key, value in node.value:
                    if node.flow_style and _is_empty(value):
                        return True
                    below += (key, value)
            elif isinstance(node, yaml.SequenceNode):
                if depth > MAX_DEPTH:
                    return True
                below += node.value
        level = below
    return False


def _is_empty(node: yaml.Node) -> bool:
    """A null written as nothing at all (not `~`, `null` or `''`)."""
    return isinstance(node, yaml.ScalarNode) and node.value == "" and not node.style


def load_yaml(text: str, file: str) -> Located:
    """Parse one YAML document; raise LoadError with every problem found."""
    lines = text.splitlines() or [""]
    try:
        nodes = _compose(text)
    except _Refused as exc:
        line, col = exc.mark.line + 1, exc.mark.column + 1
        raise LoadError(
            [
                _diag(
                    file,
                    line,
                    col,
                    "(root)",
                    exc.message,
                    exc.hint,
                    exc.code,
                    _context(lines, line, col),
                )
            ]
        ) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        line = min(line, len(lines))
        problem = exc.problem or "invalid YAML"
        hint = "fix the indentation, quoting or brackets at the marked position"
        context = exc.context
        if "'\\t'" in problem:
            # PyYAML's "found character '\t' that cannot start any token" names no cause.
            problem = "a tab character where YAML expects spaces"
            hint = "indent with spaces only: YAML does not allow tabs for indentation"
            context = None
        if context:
            # Say where the unclosed bracket or the mapping being parsed started: the
            # problem mark alone often points at the line after the real mistake.
            ctx = exc.context_mark
            started = (
                f" started at line {ctx.line + 1}, column {ctx.column + 1}"
                if ctx is not None and (ctx.line, ctx.column) != (line - 1, col - 1)
                else ""
            )
            problem = f"{problem} ({context}{started})"
        raise LoadError(
            [
                _diag(
                    file,
                    line,
                    col,
                    "(root)",
                    f"YAML syntax error: {problem}",
                    hint,
                    "yaml-syntax",
                    _context(lines, line, col),
                )
            ]
        ) from None
    except yaml.reader.ReaderError as exc:  # a character YAML does not allow (NUL, ESC, ...)
        raise LoadError([_unprintable(file, text, exc.position)]) from None

    nodes = [n for n in nodes if n is not None]
    if not nodes:
        raise LoadError(
            [
                _diag(
                    file,
                    1,
                    1,
                    "(root)",
                    "the file is empty",
                    "write a mapping (see README: mapping reference)",
                    "yaml-empty",
                )
            ]
        )
    if len(nodes) > 1:
        m = nodes[1].start_mark
        raise LoadError(
            [
                _diag(
                    file,
                    m.line + 1,
                    m.column + 1,
                    "(root)",
                    "the file holds more than one YAML document",
                    "keep one document per file (remove the extra '---')",
                    "yaml-multi",
                )
            ]
        )

    builder = _Builder(file)
    try:
        builder.doc.data = builder.build(nodes[0], ())
    finally:
        builder.loader.dispose()
    if builder.problems:
        raise LoadError(builder.problems)
    return builder.doc


class _Builder:
    """Plain data from one document's node tree, with the location of every key and value.

    A class rather than a recursive closure: a closure that calls itself is a reference
    cycle, and with the collector off during a run (generator/cli.py) it would keep every
    file's node tree alive to the end. For the same reason the loader is disposed of after
    use (its parser holds a bound method of itself): its constructor remembers every node.
    """

    def __init__(self, file: str) -> None:
        self.file = file
        self.doc = Located(file=file, data=None)
        self.problems: list[Diagnostic] = []
        self.loader = _PureLoader("")  # constructs scalars and keys (the constructors are Python)

    def build(self, node: yaml.Node, path: PathT) -> object:
        self.doc.values[path] = Loc(node.start_mark.line + 1, node.start_mark.column + 1)
        if isinstance(node, yaml.MappingNode):
            out: dict[str, object] = {}
            seen: dict[str, yaml.Node] = {}
            for key_node, value_node in node.value:
                kline, kcol = key_node.start_mark.line + 1, key_node.start_mark.column + 1
                if not isinstance(key_node, yaml.ScalarNode):
                    self.problems.append(
                        _diag(
                            self.file,
                            kline,
                            kcol,
                            _fmt(path),
                            "a key must be a plain string",
                            "write the key as a plain word",
                            "yaml-key-type",
                        )
                    )
                    continue
                try:
                    key = self.loader.construct_object(key_node)
                except (ValueError, yaml.YAMLError):
                    # An explicit tag the key does not fit (`!!int abc: 1`) or an unknown one.
                    self.problems.append(_tag_problem(self.file, key_node, path))
                    continue
                if key == "<<":
                    self.problems.append(
                        _diag(
                            self.file,
                            kline,
                            kcol,
                            _fmt(path),
                            "merge keys ('<<') are not supported",
                            "write the keys out in full",
                            "yaml-merge",
                        )
                    )
                    continue
                if not isinstance(key, str):
                    self.problems.append(
                        _diag(
                            self.file,
                            kline,
                            kcol,
                            _fmt(path),
                            f"key {key_node.value!r} is read as {type(key).__name__}, not a string",
                            f"quote it: '{key_node.value}'",
                            "yaml-key-type",
                        )
                    )
                    continue
                if key in seen:
                    first = seen[key].start_mark
                    self.problems.append(
                        _diag(
                            self.file,
                            kline,
                            kcol,
                            _fmt(path + (key,)),
                            f"duplicate key '{key}' (first defined at line {first.line + 1})",
                            "remove one of them: YAML would silently keep only the last",
                            "yaml-duplicate-key",
                        )
                    )
                    continue
                seen[key] = key_node
                self.doc.keys[path + (key,)] = Loc(kline, kcol)
                out[key] = self.build(value_node, path + (key,))
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, path + (i,)) for i, item in enumerate(node.value)]
        try:
            value = self.loader.construct_object(node)
        except (ValueError, yaml.YAMLError):
            # An explicit tag the text does not fit (`!!int abc`, `!!binary zz`).
            self.problems.append(_tag_problem(self.file, node, path))
            return None
        if isinstance(value, str) and isinstance(node, yaml.ScalarNode):
            self._verbatim(node, value, path)
        return value

    def _verbatim(self, node: yaml.ScalarNode, value: str, path: PathT) -> None:
        """Record where a one-line string's text starts when the file holds it as it is."""
        start, end = node.start_mark, node.end_mark
        quoted = node.style in ("'", '"')
        if start.line != end.line or node.style not in (None, "'", '"'):
            return
        if end.column - start.column == len(value) + (2 if quoted else 0):
            self.doc.verbatim[path] = Loc(start.line + 1, start.column + 1 + quoted)


def _tag_problem(file: str, node: yaml.Node, path: PathT) -> Diagnostic:
    return _diag(
        file,
        node.start_mark.line + 1,
        node.start_mark.column + 1,
        _fmt(path),
        f"{node.value!r} cannot be read as {node.tag.rsplit(':', 1)[-1]}",
        "remove the explicit tag (mapping files need none)",
        "yaml-tag",
    )


def load_file(path: Path, display: str) -> Located:
    """Read and parse one YAML file; raise LoadError (located) if it cannot be read or parsed."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise LoadError(
            [
                _diag(
                    display,
                    1,
                    1,
                    "(root)",
                    f"the file could not be read: {exc.strerror or exc}",
                    "check that the path is a readable file",
                    "file-read",
                )
            ]
        ) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        # Decoded whole (not in chunks, as read_text does) so exc.start is the file offset.
        head = data[: exc.start].decode("utf-8")
        line, col = _line_col(head, len(head))
        raise LoadError(
            [
                _diag(
                    display,
                    line,
                    col,
                    "(root)",
                    f"the file is not UTF-8 ({exc.reason}: byte 0x{data[exc.start]:02X} at offset {exc.start})",
                    "save it as UTF-8",
                    "yaml-encoding",
                )
            ]
        ) from None
    # Universal newlines, as read_text gave them: the parsers see the text they always saw.
    return load_yaml(text.replace("\r\n", "\n").replace("\r", "\n"), display)


def _fmt(path: PathT) -> str:
    from generator.diagnostics import format_path

    return format_path(path)
