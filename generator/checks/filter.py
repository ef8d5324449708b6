"""Checks of the stream filter (filter.*), and which stream event names it lets through."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from generator.checks.problem import Problem, warn
from generator.diagnostics import PathT, Severity
from generator.emit import pipes
from generator.model import Entity, Project
from runtime.aws_limits import (
    PIPES_FILTERS,
    PIPES_PATTERN_CHARS,
)
from synctools import awsdocs
from synctools.local.patterns import unsupported_operators


def _pattern_shape(pattern: Any, path: str) -> Iterator[str]:
    """Leaves of an EventBridge pattern must be arrays (AWS: eb-pipes-event-filtering)."""
    if isinstance(pattern, dict):
        for k, v in pattern.items():
            if k == "$or":
                yield f"{path}.$or: $or is not documented as supported by Pipes (see {awsdocs.PATTERN_OPERATORS})"
                continue
            sub = f"{path}.{k}" if path else k
            if isinstance(v, dict):
                yield from _pattern_shape(v, sub)
            elif not isinstance(v, list):
                yield f'{sub}: a pattern value must be a list such as ["x"] (a bare value is an error: see {awsdocs.EVENT_PATTERNS})'
            elif not v:
                yield f"{sub}: an empty list matches nothing"
    else:
        yield f"{path or '(pattern)'}: a pattern must be a mapping"


def _numeric_on_n(pattern: Any, path: tuple[str, ...] = ()) -> Iterator[str]:
    if isinstance(pattern, dict):
        for k, v in pattern.items():
            yield from _numeric_on_n(v, path + (k,))
    elif isinstance(pattern, list) and path and path[-1] in {"N", "NS"}:
        for item in pattern:
            if isinstance(item, dict) and "numeric" in item:
                yield ".".join(path)


def check_filter(entity: Entity, project: Project) -> Iterator[Problem]:
    flt = entity.filter
    src = entity.source
    if (flt.require_outbox or flt.event_types) and not src.outbox:
        key = "require_outbox" if flt.require_outbox else "event_types"
        yield Problem(
            ("filter", key),
            f"filter.{key} needs source.outbox",
            "declare source.outbox (attribute, event_id, event_type)",
            "filter-outbox",
        )
    if (flt.require_outbox or flt.event_types) and "new" not in src.images:
        yield Problem(
            ("filter",),
            f"the outbox is read from the new image, which stream_view_type {src.stream_view_type} does not carry",
            "use NEW_IMAGE or NEW_AND_OLD_IMAGES",
            "stream-view-image",
        )
    for cond in flt.require_attributes:
        if cond.image not in src.images:
            yield Problem(
                cond.where,
                f"condition on the {cond.image} image, which stream_view_type {src.stream_view_type} does not carry",
                "change source.stream_view_type or the condition's image",
                "stream-view-image",
            )
        if cond.image == "new" and not {"INSERT", "MODIFY"} & set(flt.event_names):
            yield warn(
                cond.where,
                "a new-image condition only applies to INSERT/MODIFY records, which the filter excludes",
                "remove it or use image: old",
                "filter-dead-condition",
            )
    if flt.and_pattern is not None:
        for msg in _pattern_shape(flt.and_pattern, ""):
            yield Problem(
                ("filter", "and_pattern"),
                f"invalid pattern fragment: {msg}",
                "fix the fragment",
                "filter-pattern",
            )
    for i, pat in enumerate(flt.or_patterns):
        for msg in _pattern_shape(pat, ""):
            yield Problem(
                ("filter", "or_patterns", i), f"invalid pattern: {msg}", "fix the pattern", "filter-pattern"
            )
    sources: list[tuple[PathT, dict[str, Any] | None]] = [(("filter", "and_pattern"), flt.and_pattern)]
    sources += [(("filter", "or_patterns", i), p) for i, p in enumerate(flt.or_patterns)]
    for where, fragment in sources:
        for leaf in _numeric_on_n(fragment or {}):
            yield Problem(
                where,
                f"numeric matching on {leaf} never matches: DynamoDB N values are strings (see {awsdocs.PIPES_FILTERING})",
                "match exact strings, prefixes, or filter in the runtime instead",
                "filter-numeric-n",
            )
        for op in unsupported_operators(fragment or {}):
            if op.operator == "$or":
                continue  # _pattern_shape reports $or as an error already
            yield Problem(
                where + op.path,
                f"{op.operator}: {op.why}",
                "express the condition with operators Pipes supports and the local model implements: "
                "exact values, prefix, suffix, equals-ignore-case, anything-but with values, numeric, exists",
                "filter-operator-unsupported",
                Severity.WARNING,
                key=True,
            )
    try:
        patterns = pipes.filter_patterns(entity)
    except pipes.PatternConflict as exc:
        yield Problem(
            ("filter", "and_pattern"),
            f"and_pattern sets '{exc}' which the generated filter already sets differently",
            "express that condition in one place only",
            "filter-conflict",
        )
        return
    if len(patterns) > PIPES_FILTERS:
        yield Problem(
            ("filter", "or_patterns") if flt.or_patterns else ("filter",),
            f"the filter compiles to {len(patterns)} patterns; Pipes allows {PIPES_FILTERS} (see {awsdocs.PIPES_FILTERING})",
            "merge or_patterns, or drop conditions that split event names",
            "limit-filters",
        )
    generated = len(patterns) - len(flt.or_patterns)
    for i, pat in enumerate(patterns):
        text = pipes.pattern_text(pat)
        if len(text) > PIPES_PATTERN_CHARS:
            yield Problem(
                ("filter", "or_patterns", i - generated)
                if i >= generated
                else ("filter", "event_types")
                if flt.event_types
                else ("filter",),
                f"filter pattern {i + 1} is {len(text)} characters; Pipes allows {PIPES_PATTERN_CHARS} (see {awsdocs.PIPES_FILTERING})",
                "shorten event_types or the escape-hatch patterns",
                "limit-pattern",
            )


STREAM_EVENT_NAMES = frozenset({"INSERT", "MODIFY", "REMOVE"})


def passing_event_names(entity: Entity) -> tuple[set[str], set[str]]:
    """Event names that surely pass the filter, and those that may (AWS: eb-pipes-event-filtering: a record passes
    when any filter matches, so an or_pattern adds its eventName values; one that does not list
    eventName literally may let any name through)."""
    names = set(entity.filter.event_names)
    possible = set(names)
    for pat in entity.filter.or_patterns:
        listed = pat.get("eventName")
        if isinstance(listed, list) and all(isinstance(n, str) for n in listed):
            names |= STREAM_EVENT_NAMES & set(listed)
            possible |= STREAM_EVENT_NAMES & set(listed)
        else:
            possible |= STREAM_EVENT_NAMES
    return names, possible
