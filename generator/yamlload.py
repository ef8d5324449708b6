"""YAML loading that remembers where every value came from.

PyYAML's SafeLoader follows YAML 1.1, where `on`, `yes` and `no` are booleans and a bare
`2024-01-01` is a date. Mapping files use YAML 1.2 core-schema scalars instead: only
true/false are booleans and dates stay strings, so `on:` (a rule key) means what it says.
Duplicate keys and non-string keys are refused, never silently merged.

Files are parsed by libyaml (PyYAML's C parser) when it is installed. PyYAML's pure-Python
parser, the reference for what a file means, takes over without it, for a file libyaml
refuses (so syntax errors keep their wording) and for one holding something the two
parsers read differently (see _compose).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import yaml

from generator.diagnostics import Diagnostic, PathT, Severity


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


_LoaderT = TypeVar("_LoaderT", bound=type)


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


@_core_schema
class _PureLoader(yaml.SafeLoader):
    """PyYAML's pure-Python parser: the reference for what is a syntax error, and the
    source of the error messages (with their problem and context marks) users see."""


def _fast_loader() -> type | None:
    """The same loader on libyaml's parser (C), about 7x faster on mapping files, or None
    when PyYAML was built without libyaml (then every file takes the pure-Python path).

    libyaml only scans, parses and composes: tags are still resolved by the Python resolver
    configured by _core_schema, so scalars, keys and node marks come out as with _PureLoader.
    Its error messages differ, so a file it rejects is parsed again by _PureLoader, which
    decides and words the error (see load_yaml)."""
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


def _context(lines: list[str], line: int, col: int, radius: int = 2) -> str:
    """Numbered source lines around `line` (1-based) with a caret under `col`."""
    out = []
    lo, hi = max(1, line - radius), min(len(lines), line + radius)
    width = len(str(hi))
    for n in range(lo, hi + 1):
        marker = ">" if n == line else " "
        out.append(f"  {marker} {n:>{width}} | {lines[n - 1]}")
        if n == line:
            out.append(f"    {' ' * width} | {' ' * max(col - 1, 0)}^")
    return "\n".join(out)


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
            if not _placed_differently(nodes):
                return nodes
    return list(yaml.compose_all(text, Loader=_PureLoader))


def _placed_differently(documents: list[yaml.Node]) -> bool:
    """Whether libyaml marks a node of these documents where PyYAML does not: an empty
    document (a last `---` with nothing after it) or an empty value in a flow mapping
    (`{type: }`). libyaml marks such a null at the next token ('}', or the end of the text,
    which is past the last line when that has no line break), PyYAML just after the `---` or
    ':'. A diagnostic about that node must point where it always did."""
    if any(_is_empty(document) for document in documents):
        return True
    stack, seen = list(documents), set()
    while stack:
        node = stack.pop()
        if id(node) in seen:  # an alias (or a recursive anchor) met again
            continue
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if node.flow_style and _is_empty(value):
                    return True
                stack += (key, value)
        elif isinstance(node, yaml.SequenceNode):
            stack += node.value
    return False


def _is_empty(node: yaml.Node) -> bool:
    """A null written as nothing at all (not `~`, `null` or `''`)."""
    return isinstance(node, yaml.ScalarNode) and node.value == "" and not node.style


def load_yaml(text: str, file: str) -> Located:
    """Parse one YAML document; raise LoadError with every problem found."""
    lines = text.splitlines() or [""]
    try:
        nodes = _compose(text)
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
    except yaml.YAMLError as exc:  # reader errors: bad bytes, control characters
        raise LoadError(
            [
                _diag(
                    file,
                    1,
                    1,
                    "(root)",
                    f"YAML could not be read: {exc}",
                    "save the file as UTF-8 text",
                    "yaml-read",
                )
            ]
        ) from None

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
            return self.loader.construct_object(node)
        except (ValueError, yaml.YAMLError):
            # An explicit tag the text does not fit (`!!int abc`, `!!binary zz`).
            self.problems.append(_tag_problem(self.file, node, path))
            return None


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
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise LoadError(
            [
                _diag(
                    display,
                    1,
                    1,
                    "(root)",
                    f"the file is not UTF-8 ({exc.reason} at byte {exc.start})",
                    "save it as UTF-8",
                    "yaml-encoding",
                )
            ]
        ) from None
    return load_yaml(text, display)


def _fmt(path: PathT) -> str:
    from generator.diagnostics import format_path

    return format_path(path)
