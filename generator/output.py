"""Render the model into build/ files; write them atomically; compare them for `check`.

Determinism: one JSON dump function (sorted keys, indent 2, trailing newline), no
timestamps, absolute paths or host names in any artifact.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

from generator import __version__
from generator.emit import ddl, docs, pipes, registry, terraform
from generator.model import Model
from generator.schema import schema_text

MANIFEST = "manifest.json"


def dump_json(data: Any) -> str:
    return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def render(model: Model) -> dict[str, str]:
    """Every generated file, by path relative to build/."""
    files: dict[str, str] = {
        "schemas/mapping.schema.json": schema_text("mapping"),
        "schemas/project.schema.json": schema_text("project"),
    }
    reg = registry.registry(model)
    files["registry.json"] = dump_json(reg)
    for entity in model.entities:
        base = f"entities/{entity.name}"
        files[f"{base}/filters.json"] = dump_json(pipes.filter_patterns(entity))
        files[f"{base}/input-template.txt"] = pipes.input_template(entity) + "\n"
        files[f"{base}/README.md"] = docs.entity_doc(entity)
    for name, data in terraform.terraform_files(model).items():
        files[f"terraform/{name}"] = dump_json(data)
    files.update(ddl.ddl_files(reg))
    manifest = {
        "generator_version": __version__,
        "files": {
            path: hashlib.sha256(text.encode("utf-8")).hexdigest() for path, text in sorted(files.items())
        },
    }
    files[MANIFEST] = dump_json(manifest)
    return files


def _previous_manifest(build: Path) -> set[str]:
    try:
        data = json.loads((build / MANIFEST).read_text(encoding="utf-8"))
        return set(data.get("files", {})) | {MANIFEST}
    except (OSError, ValueError):
        return set()


def write(build: Path, files: dict[str, str]) -> list[str]:
    """Replace build/ with `files` in one rename; files we did not generate (lambda.zip,
    terraform's .terraform/) are carried over. Returns the paths whose content changed."""
    build = build.resolve()
    parent = build.parent
    parent.mkdir(parents=True, exist_ok=True)
    tmp = parent / f".{build.name}.tmp-{os.getpid()}"
    old = parent / f".{build.name}.old-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    changed = []
    try:
        for rel, text in sorted(files.items()):
            target = tmp / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8", newline="\n")
            previous = build / rel
            if not previous.is_file() or previous.read_text(encoding="utf-8", errors="replace") != text:
                changed.append(rel)
        if build.exists():
            generated_before = _previous_manifest(build)
            for path in sorted(build.rglob("*")):
                rel = path.relative_to(build).as_posix()
                if path.is_dir() and not path.is_symlink():
                    continue
                if rel in generated_before or rel in files:
                    continue
                dest = tmp / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                os.replace(path, dest)
            os.replace(build, old)
        os.replace(tmp, build)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    return changed


def compare(build: Path, files: dict[str, str], *, context: int = 2, max_lines: int = 40) -> list[str]:
    """What differs between build/ and `files`: one line per file, with a short diff."""
    report = []
    for rel, text in sorted(files.items()):
        path = build / rel
        if not path.is_file():
            report.append(f"missing: {build.name}/{rel}")
            continue
        current = path.read_text(encoding="utf-8", errors="replace")
        if current != text:
            diff = list(
                difflib.unified_diff(
                    current.splitlines(),
                    text.splitlines(),
                    f"{build.name}/{rel} (on disk)",
                    f"{build.name}/{rel} (from mappings)",
                    n=context,
                    lineterm="",
                )
            )
            shown = diff[:max_lines] + (
                [f"... {len(diff) - max_lines} more diff lines"] if len(diff) > max_lines else []
            )
            report.append(f"differs: {build.name}/{rel}\n" + "\n".join("    " + line for line in shown))
    for rel in sorted(_previous_manifest(build) - set(files)):
        if (build / rel).exists():
            report.append(f"stale: {build.name}/{rel} (no longer generated)")
    return report
