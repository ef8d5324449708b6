"""build/: deterministic rendering, atomic replacement, and the comparison `check` uses."""

from __future__ import annotations

import hashlib
import json
import os
import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from generator import output
from generator.load import load
from generator.model import Model

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def model() -> Model:
    loaded = load(REPO_ROOT)
    assert loaded.model is not None
    return loaded.model


@pytest.fixture(scope="module")
def files(model: Model) -> dict[str, str]:
    return output.render(model)


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under root (hidden ones included), by relative path."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith(".build."))


def test_dump_json_sorts_keys_indents_two_and_ends_with_a_newline() -> None:
    # GIVEN nested data  WHEN dumped  THEN sorted keys, indent 2, UTF-8, final newline
    assert output.dump_json({"b": 1, "a": {"d": "é", "c": [1]}}) == (
        '{\n  "a": {\n    "c": [\n      1\n    ],\n    "d": "é"\n  },\n  "b": 1\n}\n'
    )


def test_rendering_twice_gives_identical_files(model: Model) -> None:
    # GIVEN two models loaded independently from the same mappings
    again = load(REPO_ROOT).model
    assert again is not None

    # THEN they render to the same files, byte for byte
    assert output.render(model) == output.render(again)


def test_building_into_two_directories_gives_byte_identical_trees(
    files: dict[str, str], tmp_path: Path
) -> None:
    # WHEN the same files are written to two places
    output.write(tmp_path / "one" / "build", files)
    output.write(tmp_path / "two" / "build", files)

    # THEN the trees are identical and hold exactly the rendered files
    one, two = snapshot(tmp_path / "one" / "build"), snapshot(tmp_path / "two" / "build")
    assert one == two
    assert sorted(one) == sorted(files)


def test_artifacts_hold_no_absolute_paths_or_host_names(files: dict[str, str], tmp_path: Path) -> None:
    # GIVEN every rendered file  THEN no repository path, home path or host name in it
    host = socket.gethostname()
    for rel, text in files.items():
        assert str(REPO_ROOT) not in text, rel
        assert str(Path.home()) + "/" not in text, rel
        assert len(host) < 4 or host not in text, rel


def test_the_manifest_hashes_every_other_file(files: dict[str, str]) -> None:
    # GIVEN the rendered files  WHEN the manifest is read  THEN one correct sha256 per file
    manifest = json.loads(files[output.MANIFEST])
    assert set(manifest["files"]) == set(files) - {output.MANIFEST}
    for rel, digest in manifest["files"].items():
        assert hashlib.sha256(files[rel].encode("utf-8")).hexdigest() == digest


def test_a_write_failing_midway_leaves_the_old_build_untouched(
    files: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a complete build/ with a foreign file in it
    build = tmp_path / "build"
    output.write(build, files)
    (build / "lambda.zip").write_bytes(b"PK\x03\x04zip")
    before = snapshot(build)

    # WHEN the next build fails while writing its fifth file
    real_write_text: Callable[..., int] = Path.write_text
    calls = {"n": 0}

    def failing_write_text(self: Path, *args: object, **kwargs: object) -> int:
        calls["n"] += 1
        if calls["n"] == 5:
            raise OSError(28, "No space left on device")
        return real_write_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", failing_write_text)
    changed = {rel: text + "changed\n" for rel, text in files.items()}
    with pytest.raises(OSError, match="No space left"):
        output.write(build, changed)
    monkeypatch.undo()

    # THEN build/ is exactly as before and no temporary directory is left beside it
    assert calls["n"] == 5
    assert snapshot(build) == before
    assert leftovers(tmp_path) == []


def test_foreign_files_survive_a_rebuild(files: dict[str, str], tmp_path: Path) -> None:
    # GIVEN a build/ holding the Lambda package and Terraform's working directory
    build = tmp_path / "build"
    output.write(build, files)
    (build / "lambda.zip").write_bytes(b"zip")
    (build / "terraform" / ".terraform").mkdir()
    (build / "terraform" / ".terraform" / "state.bin").write_bytes(b"state")

    # WHEN it is rebuilt
    output.write(build, files)

    # THEN they are still there, unchanged
    assert (build / "lambda.zip").read_bytes() == b"zip"
    assert (build / "terraform" / ".terraform" / "state.bin").read_bytes() == b"state"
    assert leftovers(tmp_path) == []


def test_files_no_longer_generated_are_removed(files: dict[str, str], tmp_path: Path) -> None:
    # GIVEN a build/ written with an entity that is then dropped
    build = tmp_path / "build"
    output.write(build, files)
    remaining = {rel: text for rel, text in files.items() if not rel.startswith("entities/orders/")}

    # WHEN rebuilt without it
    output.write(build, remaining)

    # THEN its files are gone and the rest is as rendered
    assert not (build / "entities" / "orders" / "filters.json").exists()
    assert sorted(snapshot(build)) == sorted(remaining)


def test_write_reports_only_the_files_whose_content_changed(files: dict[str, str], tmp_path: Path) -> None:
    # GIVEN successive writes  WHEN one file changes  THEN only it is reported
    build = tmp_path / "build"
    assert sorted(output.write(build, files)) == sorted(files)
    assert output.write(build, files) == []
    edited = dict(files, **{"registry.json": files["registry.json"] + " "})
    assert output.write(build, edited) == ["registry.json"]


def test_compare_reports_missing_differing_and_stale_files(files: dict[str, str], tmp_path: Path) -> None:
    # GIVEN a build/ written from the files
    build = tmp_path / "build"
    output.write(build, files)
    assert output.compare(build, files) == []

    # WHEN one file is edited, one deleted, and the new rendering drops a third
    (build / "registry.json").write_text("{}\n", encoding="utf-8")
    (build / "sql" / "mysql" / "tables.sql").unlink()
    newer = {rel: text for rel, text in files.items() if rel != "entities/orders/README.md"}
    report = output.compare(build, newer)

    # THEN each is named, the edit with a diff
    assert [line.splitlines()[0] for line in report] == [
        "differs: build/registry.json",
        "missing: build/sql/mysql/tables.sql",
        "stale: build/entities/orders/README.md (no longer generated)",
    ]
    assert "    --- build/registry.json (on disk)" in report[0]
    assert "    -{}" in report[0]


# The two renames at the end of output.write are not covered by its cleanup: a failure there
# loses data. generator/output.py is outside this change; these tests pin the bug until it is
# fixed (strict: they start failing, as a reminder, once it is).


def _fail_rename(monkeypatch: pytest.MonkeyPatch, src_prefix: str, dst_prefix: str) -> None:
    real_replace = os.replace

    def replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        if Path(src).name.startswith(src_prefix) and Path(dst).name.startswith(dst_prefix):
            raise OSError(13, "Permission denied")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)


@pytest.mark.xfail(
    strict=True, raises=AssertionError, reason="output.write deletes build/ when the final rename fails"
)
def test_a_failed_final_rename_keeps_the_old_build(
    files: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a build/  WHEN the rename of the new tree into place fails  THEN the old one remains
    build = tmp_path / "build"
    output.write(build, files)
    before = snapshot(build)
    _fail_rename(monkeypatch, ".build.tmp-", "build")
    with pytest.raises(OSError):
        output.write(build, files)
    assert snapshot(build) == before


@pytest.mark.xfail(
    strict=True,
    raises=FileNotFoundError,
    reason="output.write loses foreign files when moving build/ aside fails",
)
def test_a_failed_swap_keeps_foreign_files(
    files: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN lambda.zip in build/  WHEN moving build/ aside fails  THEN lambda.zip remains
    build = tmp_path / "build"
    output.write(build, files)
    (build / "lambda.zip").write_bytes(b"zip")
    _fail_rename(monkeypatch, "build", ".build.old-")
    with pytest.raises(OSError):
        output.write(build, files)
    assert (build / "lambda.zip").read_bytes() == b"zip"
