"""YAML loading that remembers where every value came from.

PyYAML's SafeLoader follows YAML 1.1, where `on`, `yes` and `no` are booleans and a bare
`2024-01-01` is a date. Mapping files use YAML 1.2 core-schema scalars instead: only
true/false are booleans and dates stay strings, so `on:` (a rule key) means what it says.
Duplicate keys and non-string keys are refused, never silently merged.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

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


class _Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 core-schema scalar resolution."""


_Loader.yaml_implicit_resolvers = {}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:int", re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$"), list("-+0123456789")
)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
    ),
    list("-+0123456789."),
)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:null", re.compile(r"^(?:~|null|Null|NULL|)$"), ["~", "n", "N", ""]
)


def _construct_int(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> int:
    """YAML 1.2 integers: `010` is ten. PyYAML's YAML 1.1 constructor reads a leading 0 as
    octal, so a legacy code written `const: 010` would silently become 8."""
    text = str(loader.construct_scalar(node))
    if text.startswith("0o"):
        return int(text[2:], 8)
    if text.startswith("0x"):
        return int(text[2:], 16)
    return int(text, 10)


_Loader.add_constructor("tag:yaml.org,2002:int", _construct_int)


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


def load_yaml(text: str, file: str) -> Located:
    """Parse one YAML document; raise LoadError with every problem found."""
    lines = text.splitlines() or [""]
    try:
        nodes = list(yaml.compose_all(text, Loader=_Loader))
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

    doc = Located(file=file, data=None)
    problems: list[Diagnostic] = []
    loader = _Loader("")

    def build(node: yaml.Node, path: PathT) -> object:
        doc.values[path] = Loc(node.start_mark.line + 1, node.start_mark.column + 1)
        if isinstance(node, yaml.MappingNode):
            out: dict[str, object] = {}
            seen: dict[str, yaml.Node] = {}
            for key_node, value_node in node.value:
                kline, kcol = key_node.start_mark.line + 1, key_node.start_mark.column + 1
                if not isinstance(key_node, yaml.ScalarNode):
                    problems.append(
                        _diag(
                            file,
                            kline,
                            kcol,
                            _fmt(path),
                            "a key must be a plain string",
                            "write the key as a plain word",
                            "yaml-key-type",
                        )
                    )
                    continue
                key = loader.construct_object(key_node)
                if key == "<<":
                    problems.append(
                        _diag(
                            file,
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
                    problems.append(
                        _diag(
                            file,
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
                    problems.append(
                        _diag(
                            file,
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
                doc.keys[path + (key,)] = Loc(kline, kcol)
                out[key] = build(value_node, path + (key,))
            return out
        if isinstance(node, yaml.SequenceNode):
            return [build(item, path + (i,)) for i, item in enumerate(node.value)]
        try:
            return loader.construct_object(node)
        except (ValueError, yaml.YAMLError):
            # An explicit tag the text does not fit (`!!int abc`, `!!binary zz`).
            line, col = node.start_mark.line + 1, node.start_mark.column + 1
            problems.append(
                _diag(
                    file,
                    line,
                    col,
                    _fmt(path),
                    f"{node.value!r} cannot be read as {node.tag.rsplit(':', 1)[-1]}",
                    "remove the explicit tag (mapping files need none)",
                    "yaml-tag",
                )
            )
            return None

    doc.data = build(nodes[0], ())
    if problems:
        raise LoadError(problems)
    return doc


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
