"""The broken-mapping corpus: every file under tests/broken/ must be refused with exactly the
diagnostics its `# expect:` lines state.

A case is one mapping file (tests/broken/*.yaml), validated beside the bundled project.yaml,
or one project file (tests/broken/project/*.yaml), validated beside mappings/orders.yaml.
An expectation reads `# expect: [FILE:]LINE:COL SEVERITY PATH: MESSAGE`; MESSAGE is the exact
text before the ` - ` hint separator, FILE defaults to the case's own file.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from generator.cli import main

REPO_ROOT = Path(__file__).resolve().parent.parent
BROKEN = Path(__file__).resolve().parent / "broken"

EXPECT = re.compile(
    r"^# expect: (?:(?P<file>[\w./-]+\.ya?ml):)?(?P<line>\d+):(?P<col>\d+) "
    r"(?P<severity>error|warning) (?P<path>.+?): (?P<message>.+)$"
)
RENDERED = re.compile(r"^(?P<file>[^\s:]+):(?P<line>\d+):(?P<col>\d+): (?P<severity>error|warning): ")


@dataclass(frozen=True)
class Expected:
    file: str
    line: int
    col: int
    severity: str
    path: str
    message: str

    @property
    def rendered(self) -> str:
        return f"{self.file}:{self.line}:{self.col}: {self.severity}: {self.path}: {self.message}"

    def found_in(self, line: str) -> bool:
        return line == self.rendered or line.startswith(self.rendered + " - ")


@dataclass(frozen=True)
class Case:
    source: Path

    @property
    def is_project(self) -> bool:
        return self.source.parent.name == "project"

    @property
    def display(self) -> str:
        """The file name the diagnostics use for this case."""
        return "project.yaml" if self.is_project else f"mappings/{self.source.name}"

    @property
    def id(self) -> str:
        return self.source.relative_to(BROKEN).as_posix()

    def expectations(self) -> list[Expected]:
        out = []
        for text in self.source.read_text(encoding="utf-8").splitlines():
            if not text.startswith("# expect"):
                continue
            m = EXPECT.match(text)
            assert m, f"{self.id}: malformed expectation line: {text!r}"
            out.append(
                Expected(
                    m["file"] or self.display,
                    int(m["line"]),
                    int(m["col"]),
                    m["severity"],
                    m["path"],
                    m["message"],
                )
            )
        return out

    def stage(self, root: Path) -> None:
        """Lay the case out as a project root: project.yaml plus mappings/."""
        (root / "mappings").mkdir(parents=True, exist_ok=True)
        if self.is_project:
            shutil.copy(self.source, root / "project.yaml")
            shutil.copy(REPO_ROOT / "mappings" / "orders.yaml", root / "mappings" / "orders.yaml")
        else:
            shutil.copy(REPO_ROOT / "project.yaml", root / "project.yaml")
            shutil.copy(self.source, root / "mappings" / self.source.name)


CASES = [Case(p) for p in sorted(BROKEN.glob("*.yaml")) + sorted((BROKEN / "project").glob("*.yaml"))]


def case(name: str) -> Case:
    return next(c for c in CASES if c.id == name)


def run_validate(root: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str, str]:
    code = main(["validate", "--root", str(root), *extra])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def diagnostic_lines(stderr: str, severity: str | None = None) -> list[str]:
    """Rendered diagnostics (not the numbered context lines or the summary)."""
    return [
        line
        for line in stderr.splitlines()
        if (m := RENDERED.match(line)) and (severity is None or m["severity"] == severity)
    ]


def test_the_corpus_is_large_and_every_case_states_what_it_expects() -> None:
    # GIVEN the corpus directory
    # WHEN its cases are read
    # THEN there are enough of them, each with at least one well-formed expectation,
    assert len(CASES) >= 35
    for c in CASES:
        assert c.expectations(), f"{c.id} states no '# expect:' line"
        # and each one opens with a comment saying what is broken.
        assert c.source.read_text(encoding="utf-8").startswith("# "), c.id


@pytest.mark.parametrize("broken", CASES, ids=lambda c: c.id)
def test_broken_case_is_refused_with_the_stated_diagnostics(
    broken: Case, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN the bundled project with one broken file in it
    broken.stage(tmp_path)
    expected = broken.expectations()

    # WHEN the real CLI validates it (with --strict when the case expects warnings only)
    strict = ("--strict",) if all(e.severity == "warning" for e in expected) else ()
    code, _, err = run_validate(tmp_path, capsys, *strict)

    # THEN it exits 1, prints every expected diagnostic exactly (location, severity, path,
    # message), and no error the case does not expect.
    lines = diagnostic_lines(err)
    assert code == 1, err
    missing = [e.rendered for e in expected if not any(e.found_in(line) for line in lines)]
    assert not missing, (
        "expected diagnostics not printed:\n  " + "\n  ".join(missing) + "\n--- stderr:\n" + err
    )
    unexpected = [
        line for line in diagnostic_lines(err, "error") if not any(e.found_in(line) for e in expected)
    ]
    assert not unexpected, "errors the case does not expect:\n  " + "\n  ".join(unexpected)


def test_the_module_entry_point_reports_a_broken_case(tmp_path: Path) -> None:
    # GIVEN a project holding one broken mapping
    broken = case("pipe_batch_size_11.yaml")
    broken.stage(tmp_path)

    # WHEN `python -m generator validate` runs as its own process
    proc = subprocess.run(
        [sys.executable, "-m", "generator", "validate", "--root", str(tmp_path)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )

    # THEN the process exits 1 with the diagnostic on stderr and nothing on stdout
    assert proc.returncode == 1, proc.stderr
    assert proc.stdout == ""
    lines = diagnostic_lines(proc.stderr)
    for e in broken.expectations():
        assert any(e.found_in(line) for line in lines), proc.stderr
    assert "validate: 1 error(s)" in proc.stderr


@pytest.mark.parametrize(
    "name",
    ["sql_table_trailing_newline.yaml", "yaml_unclosed_bracket.yaml", "project/unknown_key_region.yaml"],
)
def test_json_format_gives_the_same_diagnostics_as_data(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN a broken case
    broken = case(name)
    broken.stage(tmp_path)

    # WHEN it is validated once as text and once as JSON
    text_code, _, text_err = run_validate(tmp_path, capsys)
    json_code, json_out, json_err = run_validate(tmp_path, capsys, "--format", "json")

    # THEN both exit 1; the JSON goes to stdout and holds the same diagnostics as data
    assert text_code == json_code == 1
    assert json_err == ""
    payload = json.loads(json_out)
    items = payload["diagnostics"]
    as_text = [
        f"{d['file']}:{d['line']}:{d['col']}: {d['severity']}: {d['path']}: {d['message']}"
        + (f" - {d['hint']}" if d["hint"] else "")
        for d in items
    ]
    assert as_text == diagnostic_lines(text_err)
    assert payload["errors"] == sum(d["severity"] == "error" for d in items) >= 1
    for e in broken.expectations():
        assert {
            "file": e.file,
            "line": e.line,
            "col": e.col,
            "severity": e.severity,
            "path": e.path,
            "message": e.message,
        }.items() <= next(
            d for d in items if (d["file"], d["line"], d["col"], d["path"]) == (e.file, e.line, e.col, e.path)
        ).items()


def test_every_problem_of_several_files_is_reported_in_one_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN one project with several broken mappings: a YAML syntax error, a schema error and
    # semantic errors in three entities that do not collide with each other
    chosen = [
        case("yaml_tab_indentation.yaml"),
        case("unknown_key_top_level.yaml"),
        case("pipe_batch_size_11.yaml"),
        case("conflict_column_not_written.yaml"),
        case("soft_delete_without_column.yaml"),
    ]
    for c in chosen:
        c.stage(tmp_path)

    # WHEN the CLI validates once
    code, _, err = run_validate(tmp_path, capsys)

    # THEN every expected diagnostic of every file is in that one report
    assert code == 1
    lines = diagnostic_lines(err)
    expected = [e for c in chosen for e in c.expectations()]
    for e in expected:
        assert any(e.found_in(line) for line in lines), f"{e.rendered} missing from:\n{err}"
    assert len(diagnostic_lines(err, "error")) == len(expected)
    assert f"validate: {len(expected)} error(s)" in err


@pytest.mark.parametrize("kind", ["missing", "a file"])
def test_a_root_that_is_not_a_directory_is_one_error_naming_it(
    kind: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN --root naming a path that does not exist, or a file
    root = tmp_path / "nowhere"
    if kind == "a file":
        root.write_text("x", encoding="utf-8")

    # WHEN validated
    code, _, err = run_validate(root, capsys)

    # THEN one error about the root itself (not "mappings:1:1" and "project.yaml:1:1")
    assert code == 1
    what = "is not a directory" if kind == "a file" else "directory does not exist"
    assert diagnostic_lines(err) == [
        f"{root.as_posix()}:1:1: error: (root): the project root {what} - pass --root the directory "
        "that holds project.yaml and mappings/ (default: the current directory)"
    ]
