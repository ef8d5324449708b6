"""What a check yields: a problem at a path of the mapping, with its hint and code."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from generator.diagnostics import PathT, Severity
from generator.model import Entity, Project


@dataclass(frozen=True)
class Problem:
    path: PathT
    message: str
    hint: str
    code: str
    severity: Severity = Severity.ERROR
    key: bool = False  # point at the key rather than the value
    offset: int | None = None  # a character inside a string value (an expression's node)


def warn(path: PathT, message: str, hint: str, code: str) -> Problem:
    return Problem(path, message, hint, code, Severity.WARNING)


EntityCheck = Callable[[Entity, Project], Iterator[Problem]]


def missing_field_hint(entity: Entity, name: str, action: str) -> str:
    """'did you mean ...?' for a close name, then what to do and the fields there are."""
    import difflib

    names = [f.name for f in entity.fields]
    close = difflib.get_close_matches(name, names, n=1, cutoff=0.6)
    prefix = f"did you mean '{close[0]}'? " if close else ""
    return f"{prefix}{action} or use one of: {', '.join(names)}"
