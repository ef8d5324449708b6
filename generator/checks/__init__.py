"""Semantic checks: small `check_*` functions over the resolved model, one module per part of
the mapping they check (fields, filter, routing, tables, columns, events, idempotency, pipeline,
identifiers, retention), plus checks across entities and of project.yaml.

Each check yields problems as (path, message, hint, code[, severity]); `run_checks` turns them
into located diagnostics. The structural shape was already enforced by the JSON Schema.
"""

from __future__ import annotations

from generator.checks.capacity import check_capacity
from generator.checks.children import check_children
from generator.checks.cross_entity import (
    check_lookups,
    check_references,
    check_sources,
    check_terraform_claims,
    check_uniqueness,
)
from generator.checks.events import check_events
from generator.checks.fields import check_field_options, check_fields, check_template
from generator.checks.filter import check_filter
from generator.checks.idempotency import check_idempotency
from generator.checks.identifiers import check_names
from generator.checks.pipeline import check_pipeline
from generator.checks.problem import EntityCheck, Problem, warn
from generator.checks.project import check_project
from generator.checks.retention import check_retention, check_retirement
from generator.checks.routing import check_routing
from generator.checks.shared import check_shared
from generator.checks.tables import check_append_only, check_surrogate_keys, check_tables
from generator.diagnostics import Diagnostic, Severity, format_path
from generator.model import Model
from generator.yamlload import Located

__all__ = ["ENTITY_CHECKS", "Problem", "run_checks", "warn"]

ENTITY_CHECKS: tuple[EntityCheck, ...] = (
    check_fields,
    check_field_options,
    check_template,
    check_filter,
    check_routing,
    check_tables,
    check_events,
    check_idempotency,
    check_pipeline,
    check_names,
    check_surrogate_keys,
    check_append_only,
    check_children,
    check_capacity,
    check_retention,
    check_retirement,
)


def diagnostic(doc: Located, problem: Problem) -> Diagnostic:
    """A problem of `doc`, located in its file."""
    loc = doc.loc(problem.path, key=problem.key)
    message = problem.message
    if problem.offset is not None:
        inside = doc.loc_in(problem.path, problem.offset)
        if inside is not None:
            loc = inside
        else:  # a string folded over lines: its first line, and where in the text
            message += f" (at character {problem.offset + 1} of the expression)"
    return Diagnostic(
        doc.file,
        loc.line,
        loc.col,
        problem.severity,
        format_path(problem.path),
        message,
        problem.hint,
        problem.code,
    )


def run_checks(model: Model, docs: dict[str, Located], project_doc: Located | None) -> list[Diagnostic]:
    """Every check over the model, as diagnostics located in the file each problem is in; the
    Terraform label check runs only on a model free of errors (it builds the Terraform)."""
    out: list[Diagnostic] = []
    for entity in model.entities:
        for check in ENTITY_CHECKS:
            out.extend(diagnostic(docs[entity.file], p) for p in check(entity, model.project))
    for model_check in (check_uniqueness, check_sources, check_references, check_lookups, check_shared):
        out.extend(diagnostic(docs[e.file], p) for e, p in model_check(model))
    if not any(d.severity is Severity.ERROR for d in out):
        out.extend(diagnostic(docs[e.file], p) for e, p in check_terraform_claims(model))
    if project_doc is not None:
        out.extend(diagnostic(project_doc, p) for p in check_project(model.project))
    return out
