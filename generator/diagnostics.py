"""Diagnostics: every problem points at a file, line and column, and says how to fix it."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

PathT = tuple[str | int, ...]


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"


def format_path(path: Sequence[str | int]) -> str:
    """('target', 'tables', 0, 'key') -> 'target.tables[0].key'; () -> '(root)'."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(root)"


@dataclass(frozen=True, order=True)
class Diagnostic:
    file: str
    line: int
    col: int
    severity: Severity
    path: str
    message: str
    hint: str = ""
    code: str = ""
    context: str = field(default="", compare=False)

    def render(self) -> str:
        text = f"{self.file}:{self.line}:{self.col}: {self.severity.value}: {self.path}: {self.message}"
        if self.hint:
            text += f" - {self.hint}"
        if self.context:
            text += "\n" + self.context
        return text

    def as_dict(self) -> dict[str, object]:
        return {
            "file": self.file,
            "line": self.line,
            "col": self.col,
            "severity": self.severity.value,
            "path": self.path,
            "message": self.message,
            "hint": self.hint,
            "code": self.code,
        }


class Diagnostics:
    """Collects diagnostics across files; nothing stops at the first problem."""

    def __init__(self) -> None:
        self.items: list[Diagnostic] = []

    def add(self, diag: Diagnostic) -> None:
        if diag not in self.items:
            self.items.append(diag)

    def extend(self, diags: Iterable[Diagnostic]) -> None:
        for d in diags:
            self.add(d)

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.items if d.severity is Severity.ERROR]

    @property
    def warnings(self) -> list[Diagnostic]:
        return [d for d in self.items if d.severity is Severity.WARNING]

    def sorted(self) -> list[Diagnostic]:
        return sorted(self.items, key=lambda d: (d.file, d.line, d.col, d.severity.value, d.path, d.message))

    def render_text(self) -> str:
        return "\n".join(d.render() for d in self.sorted())

    def payload(self) -> dict[str, object]:
        """The JSON document of --format json; commands may add keys of their own."""
        return {
            "errors": len(self.errors),
            "warnings": len(self.warnings),
            "diagnostics": [d.as_dict() for d in self.sorted()],
        }

    def render_json(self) -> str:
        return json.dumps(self.payload(), indent=2, sort_keys=True)
