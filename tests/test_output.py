"""build/: deterministic rendering, atomic replacement, and the comparison `check` uses."""

from __future__ import annotations

import hashlib
import json
import os
import socket
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from generator import output
from generator.load import load
from generator.model import Model

REPO_ROOT = Path(__file__).resolve().parent.parent


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


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(max_size=8), children, max_size=4)
        | st.dictionaries(st.integers() | st.booleans() | st.none(), children, max_size=3)
    ),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_dump_json_writes_what_json_dumps_writes(value: object) -> None:
    # GIVEN any JSON value (NaN and infinities, non-string keys, control characters included)
    # WHEN dumped  THEN the text is json.dumps's with indent 2, sorted keys, UTF-8, a newline
    try:
        expected = json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    except TypeError:  # keys json cannot sort (str beside int): it must refuse them too
        with pytest.raises(TypeError):
            output.dump_json(value)
        return
    assert output.dump_json(value) == expected


def test_every_generated_json_file_is_in_json_dumps_layout(files: dict[str, str]) -> None:
    # GIVEN the rendered JSON files (the schemas are copied as shipped)
    # THEN each is byte for byte what json.dumps would write
    for rel, text in files.items():
        if rel.endswith(".json") and not rel.startswith("schemas/"):
            assert json.dumps(json.loads(text), indent=2, sort_keys=True, ensure_ascii=False) + "\n" == text


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


# output.write changes build/ in three kinds of step: it moves the foreign files into the new
# tree, renames build/ aside, and renames the new tree into place. A failure at any of them
# must leave build/ as it was (foreign files included) and no temporary directory behind.


def _fail_rename(
    monkeypatch: pytest.MonkeyPatch, src_prefix: str, dst_prefix: str, error: BaseException | None = None
) -> list[tuple[str, str]]:
    """Make os.replace fail when moving a path named src_prefix* to one named dst_prefix*;
    returns the log of every os.replace call."""
    real_replace = os.replace
    calls: list[tuple[str, str]] = []

    def replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        calls.append((Path(src).name, Path(dst).name))
        if Path(src).name.startswith(src_prefix) and Path(dst).name.startswith(dst_prefix):
            raise error or OSError(13, "Permission denied")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    return calls


@pytest.fixture
def lived_in_build(files: dict[str, str], tmp_path: Path) -> Path:
    """A build/ with the Lambda package and Terraform's working directory in it."""
    build = tmp_path / "build"
    output.write(build, files)
    (build / "lambda.zip").write_bytes(b"PK\x03\x04zip")
    (build / "terraform" / ".terraform" / "providers").mkdir(parents=True)
    (build / "terraform" / ".terraform" / "providers" / "aws").write_bytes(b"provider")
    return build


def _no_hard_links(monkeypatch: pytest.MonkeyPatch) -> None:
    """A file system without hard links: output.write then moves the foreign files."""

    def link(*args: object, **kwargs: object) -> None:
        raise OSError(1, "Operation not permitted")

    monkeypatch.setattr(os, "link", link)


STEPS = [
    # (step, hard links available, os.replace failing from src_prefix* to dst_prefix*)
    ("renaming build/ aside", True, "build", ".build.old-"),
    ("renaming the new tree into place", True, ".build.tmp-", "build"),
    ("moving the first foreign file into the new tree", False, "lambda.zip", "lambda.zip"),
    ("moving the second one, after the first was moved", False, "aws", "aws"),
    ("renaming build/ aside, its foreign files moved out", False, "build", ".build.old-"),
    ("renaming the new tree into place, the foreign files in it", False, ".build.tmp-", "build"),
]


@pytest.mark.parametrize(("step", "links", "src_prefix", "dst_prefix"), STEPS, ids=[s[0] for s in STEPS])
def test_a_failed_step_leaves_build_as_it_was(
    step: str,
    links: bool,
    src_prefix: str,
    dst_prefix: str,
    files: dict[str, str],
    lived_in_build: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # GIVEN a build/ with foreign files, and a rebuild that changes every generated file
    before = snapshot(lived_in_build)
    changed = {rel: text + "changed\n" for rel, text in files.items()}
    if not links:
        _no_hard_links(monkeypatch)

    # WHEN one step of the swap fails
    calls = _fail_rename(monkeypatch, src_prefix, dst_prefix)
    with pytest.raises(OSError, match="Permission denied"):
        output.write(lived_in_build, changed)
    monkeypatch.undo()

    # THEN the step was reached, build/ is exactly as before and nothing is left beside it
    assert any(s.startswith(src_prefix) and d.startswith(dst_prefix) for s, d in calls), step
    assert snapshot(lived_in_build) == before
    assert leftovers(lived_in_build.parent) == []


def test_build_is_whole_until_the_swap(
    files: dict[str, str], lived_in_build: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a build/ with foreign files (carried over as hard links)
    before = snapshot(lived_in_build)
    seen: list[dict[str, bytes]] = []
    real_replace = os.replace

    def replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        if Path(src) == lived_in_build:
            seen.append(snapshot(lived_in_build))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)

    # WHEN rebuilt with every generated file changed
    output.write(lived_in_build, {rel: text + "x" for rel, text in files.items()})
    monkeypatch.undo()

    # THEN at the moment build/ was renamed aside it was still exactly as before (a kill up to
    # then would have left it whole), and afterwards the foreign files are in the new build/
    assert seen == [before]
    assert (lived_in_build / "lambda.zip").read_bytes() == before["lambda.zip"]
    assert (lived_in_build / "terraform/.terraform/providers/aws").read_bytes() == b"provider"


def test_an_interrupt_during_the_swap_puts_build_back(
    files: dict[str, str], lived_in_build: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a build/  WHEN Ctrl-C arrives as the new tree is renamed into place
    before = snapshot(lived_in_build)
    _fail_rename(monkeypatch, ".build.tmp-", "build", KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        output.write(lived_in_build, {rel: text + "x" for rel, text in files.items()})
    monkeypatch.undo()

    # THEN build/ is the old one again
    assert snapshot(lived_in_build) == before
    assert leftovers(lived_in_build.parent) == []


def test_when_restoring_fails_too_nothing_is_deleted(
    files: dict[str, str], lived_in_build: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a build/ whose swap fails at the last rename, and so does renaming it back
    before = snapshot(lived_in_build)
    _fail_rename(monkeypatch, ".build.", "build", OSError(5, "Input/output error"))

    # WHEN written
    with pytest.raises(output.NotRestoredError) as exc:
        output.write(lived_in_build, files)
    monkeypatch.undo()

    # THEN the error names the directories, and every previous file is still in one of them
    assert not lived_in_build.exists()
    kept = {p.name for p in exc.value.kept}
    assert kept == {f".build.old-{os.getpid()}", f".build.tmp-{os.getpid()}"}
    survivors: dict[str, bytes] = {}
    for where in exc.value.kept:
        survivors.update(snapshot(where))
    assert {rel: survivors.get(rel) for rel in before} == before


def test_unchanged_files_are_carried_over_and_changed_ones_written_anew(
    files: dict[str, str], tmp_path: Path
) -> None:
    # GIVEN a build/
    build = tmp_path / "build"
    output.write(build, files)
    inodes = {rel: (build / rel).stat().st_ino for rel in files}

    # WHEN rebuilt with one file changed
    output.write(build, dict(files, **{"registry.json": files["registry.json"] + " "}))

    # THEN the unchanged files keep their inode (a hard link, not a new file), with one name
    assert (build / "registry.json").stat().st_ino != inodes["registry.json"]
    for rel in set(files) - {"registry.json", output.MANIFEST}:
        assert (build / rel).stat().st_ino == inodes[rel], rel
        assert (build / rel).stat().st_nlink == 1, rel
    assert (build / "registry.json").read_text(encoding="utf-8") == files["registry.json"] + " "


def test_a_file_with_other_names_or_a_symlink_is_written_anew(files: dict[str, str], tmp_path: Path) -> None:
    # GIVEN a build/ where one generated file also has a name outside it, and one is a symlink
    build = tmp_path / "build"
    output.write(build, files)
    os.link(build / "registry.json", tmp_path / "backup.json")
    (tmp_path / "elsewhere.md").write_text(files["entities/orders/README.md"], encoding="utf-8")
    (build / "entities/orders/README.md").unlink()
    (build / "entities/orders/README.md").symlink_to(tmp_path / "elsewhere.md")

    # WHEN rebuilt
    output.write(build, files)

    # THEN build/ holds fresh regular files that share nothing with the outside
    assert (build / "registry.json").stat().st_ino != (tmp_path / "backup.json").stat().st_ino
    assert not (build / "entities/orders/README.md").is_symlink()
    assert snapshot(build) == {rel: text.encode("utf-8") for rel, text in files.items()}


def test_without_hard_links_every_file_is_written(
    files: dict[str, str], lived_in_build: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a file system that refuses hard links
    _no_hard_links(monkeypatch)

    # WHEN rebuilt  THEN the result is the same, foreign files included, and nothing changed
    before = snapshot(lived_in_build)
    assert output.write(lived_in_build, files) == []
    assert snapshot(lived_in_build) == before
    assert leftovers(lived_in_build.parent) == []
