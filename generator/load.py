"""Read project.yaml and mappings/*.yaml into the model, collecting every problem."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from generator import checks, resolve, schema
from generator.checks.problem import Problem
from generator.diagnostics import Diagnostic, Diagnostics, Severity
from generator.model import Entity, Model
from generator.yamlload import LoadError, Located, load_file

PROJECT_FILE = "project.yaml"
MAPPINGS_DIR = "mappings"


@dataclass
class Loaded:
    model: Model | None
    diagnostics: Diagnostics
    docs: dict[str, Located]


def _display(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return path.as_posix()


def mapping_files(mappings: Path) -> list[Path]:
    """Entity mappings: *.yaml / *.yml directly under mappings/ (tests live in mappings/tests/)."""
    return sorted(p for p in mappings.iterdir() if p.is_file() and p.suffix in {".yaml", ".yml"})


def load(root: Path, project_file: Path | None = None, mappings: Path | None = None) -> Loaded:
    diags = Diagnostics()
    docs: dict[str, Located] = {}
    if (project_file is None or mappings is None) and not root.is_dir():
        # One problem, said once: not a missing project.yaml and mappings/ "inside" it.
        diags.add(
            Diagnostic(
                root.as_posix(),
                1,
                1,
                Severity.ERROR,
                "(root)",
                "the project root is not a directory"
                if root.exists()
                else "the project root directory does not exist",
                "pass --root the directory that holds project.yaml and mappings/ (default: the current directory)",
                "root-missing",
            )
        )
        return Loaded(None, diags, docs)
    project_file = project_file or root / PROJECT_FILE
    mappings = mappings or root / MAPPINGS_DIR

    project_doc: Located | None = None
    pdisplay = _display(project_file, root)
    if not project_file.is_file():
        diags.add(
            Diagnostic(
                pdisplay,
                1,
                1,
                Severity.ERROR,
                "(root)",
                "the project file does not exist",
                "create it with at least 'name:' and 'region:' (see README: project file)",
                "project-missing",
            )
        )
    else:
        try:
            project_doc = load_file(project_file, pdisplay)
        except LoadError as exc:
            diags.extend(exc.diagnostics)
        else:
            diags.extend(schema.validate(project_doc, "project"))

    if not mappings.is_dir():
        diags.add(
            Diagnostic(
                _display(mappings, root),
                1,
                1,
                Severity.ERROR,
                "(root)",
                "the mappings directory does not exist",
                "create it and add one YAML file per entity",
                "mappings-missing",
            )
        )
        return Loaded(None, diags, docs)
    files = mapping_files(mappings)
    if not files:
        diags.add(
            Diagnostic(
                _display(mappings, root),
                1,
                1,
                Severity.ERROR,
                "(root)",
                "no mapping files (*.yaml) found",
                "add one YAML file per entity",
                "mappings-empty",
            )
        )

    valid_docs: list[Located] = []
    for path in files:
        display = _display(path, root)
        try:
            doc = load_file(path, display)
        except LoadError as exc:
            diags.extend(exc.diagnostics)
            continue
        docs[display] = doc
        problems = schema.validate(doc, "mapping")
        diags.extend(problems)
        if not problems:
            valid_docs.append(doc)

    # Semantic checks still run on the files that are structurally sound, so one broken
    # file does not hide the problems of the others; only a broken project file stops here.
    if project_doc is None or any(d.file == pdisplay for d in diags.errors):
        return Loaded(None, diags, docs)
    assert project_doc is not None
    project = resolve.resolve_project(project_doc)
    diags.extend(
        checks.diagnostic(project_doc, p) for p in _ca_bundle_problems(project.database.ca_bundle, root)
    )
    entities: list[Entity] = []
    for doc in valid_docs:
        entity, problems = resolve.resolve_entity(doc, project)
        diags.extend(problems)
        entities.append(entity)
    entities.sort(key=lambda e: e.name)
    model = Model(project, tuple(entities))
    diags.extend(checks.run_checks(model, docs, project_doc))
    return Loaded(model if not diags.errors else None, diags, docs)


def _ca_bundle_problems(ca_bundle: str | None, root: Path) -> Iterator[Problem]:
    """database.tls.ca_bundle must be a PEM file of certificates in the project (package ships it)."""
    if not ca_bundle:
        return
    path = root / ca_bundle
    try:
        text = path.read_text(encoding="ascii", errors="replace")
    except OSError as exc:
        why = f"database.tls.ca_bundle {ca_bundle!r}: cannot read {path}: {exc.strerror or exc}"
    else:
        if "-----BEGIN CERTIFICATE-----" in text:
            return
        why = f"database.tls.ca_bundle {ca_bundle!r} holds no PEM certificate (-----BEGIN CERTIFICATE-----)"
    yield Problem(
        ("database", "tls", "ca_bundle"),
        why,
        "name the PEM file of the CA certificates that sign the database's certificate, relative to the "
        "project root (for Amazon RDS: https://truststore.pki.rds.amazonaws.com/global/global-bundle.pem)",
        "tls-ca-bundle",
    )
