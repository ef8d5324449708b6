"""Render the model into build/ files; write them atomically; compare them for `check`.

Determinism: one JSON dump function (generator/jsondump.py: sorted keys, indent 2, trailing
newline), no timestamps, absolute paths or host names in any artifact.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import shutil
import stat
from pathlib import Path

from generator import __version__
from generator.emit import ddl, docs, pipes, registry, terraform
from generator.jsondump import dump_json
from generator.model import Model
from generator.pipeunits import pipe_units
from generator.schema import schema_text

MANIFEST = "manifest.json"


def render(model: Model) -> dict[str, str]:
    """Every generated file, by path relative to build/."""
    files: dict[str, str] = {
        "schemas/mapping.schema.json": schema_text("mapping"),
        "schemas/project.schema.json": schema_text("project"),
        "schemas/mapping-test.schema.json": schema_text("mapping-test"),
    }
    reg = registry.registry(model)
    files["registry.json"] = dump_json(reg)
    for unit in pipe_units(model):  # a retired entity has no Pipe to describe
        template = pipes.unit_template(unit) + "\n"
        for entity in unit.members:
            # An entity of a shared Pipe: its own patterns (its items: backfill, reconcile)
            # and the shared template; the Pipe itself is under pipes/.
            base = f"entities/{entity.name}"
            files[f"{base}/filters.json"] = dump_json(pipes.filter_patterns(entity))
            files[f"{base}/input-template.txt"] = template
            files[f"{base}/README.md"] = docs.entity_doc(entity, unit)
        if unit.shared:
            files[f"pipes/{unit.name}/filters.json"] = dump_json(pipes.unit_patterns(unit))
            files[f"pipes/{unit.name}/input-template.txt"] = template
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


class NotRestoredError(OSError):
    """Writing build/ failed and putting the previous tree back failed too: nothing was
    deleted, and `kept` names the directories that now hold its files."""

    def __init__(self, cause: BaseException, undo: BaseException, kept: list[Path]) -> None:
        super().__init__(f"{cause}; then restoring it failed: {undo}")
        self.kept = kept


def write(build: Path, files: dict[str, str]) -> list[str]:
    """Replace build/ with `files` in one rename; files we did not generate (lambda.zip,
    terraform's .terraform/) are carried over. Returns the paths whose content changed.

    On any failure (an OSError, or an interrupt) build/ is left as it was, or put back if
    the swap had begun, the temporary directories are removed and the error is raised. If
    putting it back fails as well, NotRestoredError says where the files are."""
    build = build.resolve()
    parent = build.parent
    parent.mkdir(parents=True, exist_ok=True)
    tmp = parent / f".{build.name}.tmp-{os.getpid()}"
    old = parent / f".{build.name}.old-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    # What has been done to build/ so far, undone in reverse order on failure.
    moved: list[tuple[Path, Path]] = []  # foreign files moved from build/ into tmp
    set_aside = False  # build/ renamed to old
    try:
        changed = _fill(tmp, build, files)
        if build.exists():
            for src in _foreign_files(build, files):
                dest = tmp / src.relative_to(build)
                dest.parent.mkdir(parents=True, exist_ok=True)
                # Linked rather than moved where the file system allows: build/ then stays
                # whole until the swap, even if the process is killed before it.
                if not _link(src, dest):
                    os.replace(src, dest)
                    moved.append((src, dest))
            os.replace(build, old)
            set_aside = True
        os.replace(tmp, build)
    except BaseException as exc:
        try:
            if set_aside:
                os.replace(old, build)
            for src, dest in reversed(moved):
                os.replace(dest, src)
        except OSError as undo:
            # Deleting anything now could lose the user's files: leave both trees.
            raise NotRestoredError(exc, undo, [p for p in (build, old, tmp) if p.exists()]) from exc
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)
    return changed


def _fill(tmp: Path, build: Path, files: dict[str, str]) -> list[str]:
    """Write `files` under tmp; return the paths whose content differs from build/'s."""
    changed = []
    made: set[Path] = set()
    for rel, text in sorted(files.items()):
        target = tmp / rel
        if target.parent not in made:
            target.parent.mkdir(parents=True, exist_ok=True)
            made.add(target.parent)
        previous = build / rel
        if _holds(previous, text) and _link(previous, target):
            continue
        if not previous.is_file() or previous.read_text(encoding="utf-8", errors="replace") != text:
            changed.append(rel)
        target.write_text(text, encoding="utf-8", newline="\n")
    return changed


def _holds(path: Path, text: str) -> bool:
    """Whether `path` is a regular file holding exactly `text`, with no name outside build/
    (so that, linked into the new tree, it ends with one name again)."""
    try:
        st = os.lstat(path)
        encoded = text.encode("utf-8")
        return (
            stat.S_ISREG(st.st_mode)
            and st.st_nlink == 1
            and st.st_size == len(encoded)
            and path.read_bytes() == encoded
        )
    except OSError:
        return False


def _link(src: Path, dest: Path) -> bool:
    """Carry a file from build/ into the new tree as a hard link; False where the file
    system has none. The old name goes with the old tree. For an unchanged generated file
    this also saves creating one: a new inode took 0.2-0.8 ms on the benchmark machine, a
    link 0.02 ms, and a rebuild at 1,000 mappings rewrites 4,000 files."""
    try:
        os.link(src, dest, follow_symlinks=False)
    except OSError:
        return False
    return True


def _foreign_files(build: Path, files: dict[str, str]) -> list[Path]:
    """Files (and symlinks) in build/ that neither this build nor the previous one generated."""
    generated_before = _previous_manifest(build)
    out = []
    for path in sorted(build.rglob("*")):
        if path.is_dir() and not path.is_symlink():
            continue
        rel = path.relative_to(build).as_posix()
        if rel not in generated_before and rel not in files:
            out.append(path)
    return out


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
