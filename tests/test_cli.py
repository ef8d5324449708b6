"""The one command line, `ddb-sql-sync COMMAND` (also `python -m generator COMMAND`): build,
validate and check (help, exit codes and what each command writes), and for every entry point
and every command and subcommand, the generator's and the tools': --version, help and defaults
for every argument, the same exit-code epilogue, and --format text|json where a command reports
results.

Exit codes (generator/cli.py): 0 ok (warnings allowed unless --strict); 1 mapping errors, or
warnings under --strict, or a stale build/; 2 bad command line; 4 build/ could not be written.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import pytest

from generator import __version__, cli
from runtime import __version__ as runtime_version
from synctools.local.argtypes import HelpFormatter

REPO_ROOT = Path(__file__).resolve().parent.parent


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def exit_code(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int | str | None, str, str]:
    """For argparse's own exits (help, version, usage errors), which raise SystemExit."""
    with pytest.raises(SystemExit) as exc:
        cli.main(list(argv))
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A copy of the repository's project.yaml, mappings/ and build/."""
    root = tmp_path / "repo"
    root.mkdir()
    shutil.copy(REPO_ROOT / "project.yaml", root / "project.yaml")
    shutil.copytree(REPO_ROOT / "mappings", root / "mappings")
    shutil.copytree(REPO_ROOT / "build", root / "build")
    return root


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("command", ["build", "validate", "check"])
def test_help_works_for_every_command(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    # GIVEN a command  WHEN --help  THEN exit 0 and its usage with the shared options
    code, out, _ = exit_code(capsys, command, "--help")
    assert code == 0
    assert out.startswith(f"usage: python -m generator {command} ")
    for option in ("--root", "--project", "--mappings", "--build-dir", "--format", "--strict"):
        assert option in out


def test_top_level_help_lists_the_commands_and_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    # GIVEN no command  WHEN --help  THEN the commands, and the exit codes as every command gives them
    code, out, _ = exit_code(capsys, "--help")
    assert code == 0
    commands = ["build", "validate", "check", "test", "package", "override", "reference"]
    commands += ["replay", "sample", "pump", "consume", "dlq"]
    for word in commands:
        assert f"\n    {word}" in out
    assert out.rstrip().endswith(cli.EXIT_ALL)
    assert "\nexit codes:\n    0  success (warnings allowed unless --strict)\n" in out
    assert "\n  130  interrupted (pump, consume, dlq)" in out


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    # GIVEN --version  WHEN run  THEN exit 0 and the product's name and version
    code, out, _ = exit_code(capsys, "--version")
    assert (code, out.strip()) == (0, f"ddb-sql-sync {__version__}")


def _script() -> Path:
    script = Path(sys.executable).parent / "ddb-sql-sync"
    if not script.exists():
        pytest.skip(f"the ddb-sql-sync script is not installed beside {sys.executable} (pip install -e .)")
    return script


@pytest.mark.parametrize(
    "command",
    [["-m", "generator"], ["script"]],
    ids=["python -m generator", "ddb-sql-sync"],
)
def test_every_entry_point_prints_the_product_and_its_version(command: list[str]) -> None:
    # GIVEN an entry point  WHEN run with --version
    argv = [str(_script())] if command == ["script"] else [sys.executable, *command]
    done = subprocess.run([*argv, "--version"], capture_output=True, text=True, cwd=REPO_ROOT, timeout=60)
    # THEN the product's name and the version the package was installed with
    installed = metadata.version("ddb-sql-sync")
    assert (done.returncode, done.stdout, done.stderr) == (0, f"ddb-sql-sync {installed}\n", "")
    assert __version__ == runtime_version == installed


def test_the_script_names_itself_in_its_usage() -> None:
    done = subprocess.run([str(_script()), "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.startswith("usage: ddb-sql-sync [-h] [--version] COMMAND")


def _parsers(parser: argparse.ArgumentParser, name: str) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """A parser and every subcommand's parser below it, by their command line."""
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                yield from _parsers(sub, f"{name} {sub_name}")


PARSERS = list(_parsers(cli.parser(), "ddb-sql-sync"))
# The commands that report results, so take --format. The others' output is data, not a
# report: sample's stream records, pump's and consume's JSON lines (what they send or apply),
# override's file, reference's document.
REPORTING = ["build", "validate", "check", "test", "package", "replay", "dlq list", "dlq show", "dlq redrive"]


@pytest.mark.parametrize(("name", "parser"), PARSERS, ids=[name for name, _ in PARSERS])
def test_every_argument_has_help_and_shows_its_default(name: str, parser: argparse.ArgumentParser) -> None:
    # GIVEN a command  THEN each argument has help text, and each option taking a value says
    # what applies without it: argparse's "(default: X)", or in words where there is no value
    missing = []
    formatter = HelpFormatter(name)
    # One of a required group (--entity E | --table T) is given, so neither has a default.
    chosen = {id(a) for g in parser._mutually_exclusive_groups if g.required for a in g._group_actions}
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._VersionAction, argparse._SubParsersAction)):
            continue
        shown = formatter._get_help_string(action) or ""
        if not (action.help or "").strip():
            missing.append(f"{action.dest}: no help")
        elif (
            action.option_strings
            and action.nargs != 0
            and not action.required
            and id(action) not in chosen
            and "default" not in shown
        ):
            missing.append(f"{'/'.join(action.option_strings)}: no default shown")
    assert missing == []
    # AND argparse never prints a default that means "not given"
    text = parser.format_help()
    assert "(default: None)" not in text and "(default: False)" not in text and "(default: [])" not in text


@pytest.mark.parametrize(("name", "parser"), PARSERS, ids=[name for name, _ in PARSERS])
def test_every_command_help_ends_with_its_exit_codes(name: str, parser: argparse.ArgumentParser) -> None:
    # GIVEN a command  WHEN --help is formatted
    text = parser.format_help().rstrip()
    # THEN it ends with the same epilogue form: "exit codes:", then one line per code it returns
    assert parser.epilog and text.endswith(parser.epilog.rstrip()), name
    epilogue = text[text.rindex("\nexit codes:\n") + 1 :].splitlines()
    codes = [int(m.group(1)) for line in epilogue[1:] if (m := re.match(r" +(\d+)  \S", line))]
    assert codes and codes == sorted(set(codes)) and 0 in codes and 2 in codes, name
    assert all(re.match(r" +(\d+  )?\S", line) for line in epilogue[1:]), name


def test_every_command_is_reachable_and_the_old_entry_points_are_gone() -> None:
    # GIVEN the one parser  THEN it holds the generator's and the tools' commands, dlq's three
    names = {name for name, _ in PARSERS}
    for command in ("build", "replay", "sample", "pump", "consume", "dlq list", "dlq show", "dlq redrive"):
        assert f"ddb-sql-sync {command}" in names
    # AND there is no second command line
    assert not (REPO_ROOT / "synctools" / "__main__.py").exists()
    assert not (REPO_ROOT / "runtime" / "__main__.py").exists()


@pytest.mark.parametrize("command", REPORTING)
def test_every_reporting_command_takes_format_text_or_json(command: str) -> None:
    # GIVEN a command that reports results  THEN --format text|json, text by default, and no --json
    parser = dict(PARSERS)[f"ddb-sql-sync {command}"]
    [fmt] = [a for a in parser._actions if "--format" in a.option_strings]
    assert (fmt.choices, fmt.default) == (("text", "json"), "text")
    assert not [a for a in parser._actions if "--json" in a.option_strings]


@pytest.mark.parametrize("argv", [[], ["deploy"], ["validate", "--format", "xml"], ["check", "--nope"]])
def test_a_bad_command_line_exits_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    # GIVEN a bad command line  WHEN run  THEN argparse's usage error, exit 2
    code, _, err = exit_code(capsys, *argv)
    assert code == cli.EXIT_USAGE == 2
    assert "usage:" in err


def test_validate_accepts_the_bundled_mappings_and_writes_nothing(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN the repository copy
    before = tree(repo)

    # WHEN validated
    code, out, err = run(capsys, "validate", "--root", str(repo))

    # THEN it passes with the two orders warnings, and nothing changed on disk
    assert code == cli.EXIT_OK == 0
    assert out == ""
    assert err.splitlines()[-1] == "validate: 7 mapping(s) valid; 0 error(s), 2 warning(s)"
    assert tree(repo) == before


def test_strict_turns_the_orders_warnings_into_exit_1(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # GIVEN mappings whose only findings are warnings (orders: the seed article's queue values)
    # WHEN validated with --strict
    code, _, err = run(capsys, "validate", "--root", str(repo), "--strict")

    # THEN the warnings count: exit 1
    assert code == cli.EXIT_PROBLEMS == 1
    assert "mappings/orders.yaml:82:33: warning: pipeline.queue.visibility_timeout_seconds" in err
    assert (
        err.splitlines()[-1]
        == "validate: 0 error(s), 2 warning(s); nothing written (--strict: warnings count)"
    )


def test_check_fails_after_a_mapping_edit_and_passes_after_a_rebuild(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN an up-to-date build/ in the copy
    assert run(capsys, "build", "--root", str(repo))[0] == 0
    assert run(capsys, "check", "--root", str(repo))[0] == 0

    # WHEN a mapping is edited
    orders = repo / "mappings" / "orders.yaml"
    text = orders.read_text(encoding="utf-8")
    orders.write_text(text.replace("type: string, length: 32", "type: string, length: 40"), encoding="utf-8")
    code, _, err = run(capsys, "check", "--root", str(repo))

    # THEN check exits 1, names the stale files and the command that fixes them
    assert code == 1
    assert "differs: build/registry.json" in err
    assert "differs: build/sql/postgresql/tables.sql" in err
    assert err.rstrip().endswith("run: python -m generator build")

    # WHEN rebuilt, THEN check passes again
    assert run(capsys, "build", "--root", str(repo))[0] == 0
    code, _, err = run(capsys, "check", "--root", str(repo))
    assert code == 0, err
    assert "is up to date" in err


def test_build_with_mapping_errors_exits_1_and_leaves_build_alone(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN a mapping with an error
    before = tree(repo / "build")
    orders = repo / "mappings" / "orders.yaml"
    orders.write_text(
        orders.read_text(encoding="utf-8").replace(
            "maximum_record_age_in_seconds: 300 ", "maximum_record_age_in_seconds: 30  ", 1
        ),
        "utf-8",
    )

    # WHEN built
    code, _, err = run(capsys, "build", "--root", str(repo))

    # THEN nothing is written
    assert code == 1
    assert "pipeline.pipe.maximum_record_age_in_seconds: 30 is not -1 or 60..604800" in err
    assert err.splitlines()[-1] == "build: 1 error(s), 2 warning(s); nothing written"
    assert tree(repo / "build") == before


def test_a_build_directory_that_cannot_be_written_exits_4(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN an output directory below a regular file
    blocker = repo / "not-a-dir"
    blocker.write_text("x", encoding="utf-8")

    # WHEN built there
    code, _, err = run(capsys, "build", "--root", str(repo), "--build-dir", str(blocker / "build"))

    # THEN the write failure is its own exit code
    assert code == cli.EXIT_IO == 4
    assert "build: could not write" in err


def test_a_failed_swap_says_build_is_unchanged_and_it_is(
    repo: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a build/ holding a foreign file, and a file system refusing to rename build/ aside
    (repo / "build" / "lambda.zip").write_bytes(b"zip")
    before = tree(repo / "build")
    real_replace = os.replace

    def replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        if Path(src).name == "build":
            raise OSError(16, "Device or resource busy")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)

    # WHEN built
    code, _, err = run(capsys, "build", "--root", str(repo))

    # THEN exit 4, and the message that build/ is unchanged is true
    assert code == cli.EXIT_IO
    assert err.strip().endswith(f"{repo / 'build'} is unchanged")
    assert tree(repo / "build") == before


def test_a_build_that_cannot_be_put_back_says_where_the_files_are(
    repo: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a file system where renaming any temporary tree into build/ fails
    real_replace = os.replace

    def replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        if Path(src).name.startswith(".build."):
            raise OSError(5, "Input/output error")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)

    # WHEN built
    code, _, err = run(capsys, "build", "--root", str(repo))

    # THEN exit 4, no claim that build/ is unchanged, and the directories holding the files
    assert code == cli.EXIT_IO
    assert "is unchanged" not in err
    assert f"nothing was deleted: the previous and new files are in {repo / '.build.old-'}" in err
    assert (repo / f".build.old-{os.getpid()}" / "registry.json").is_file()


@pytest.mark.parametrize("enabled", [True, False])
def test_main_leaves_the_garbage_collector_as_it_found_it(
    enabled: bool, repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN the cyclic collector on or off  WHEN main runs (it turns it off meanwhile)
    if not enabled:
        gc.disable()
    try:
        code, _, _ = run(capsys, "build", "--root", str(repo))

        # THEN it is as it was
        assert code == 0
        assert gc.isenabled() is enabled
    finally:
        gc.enable()


def test_json_format_on_success_is_data_on_stdout(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # GIVEN valid mappings  WHEN validated with --format json  THEN data on stdout, stderr empty
    code, out, err = run(capsys, "validate", "--root", str(repo), "--format", "json")
    payload = json.loads(out)
    assert (code, err) == (0, "")
    assert (payload["errors"], payload["warnings"]) == (0, 2)
    assert {d["code"] for d in payload["diagnostics"]} == {"queue-visibility", "queue-receive-count"}


def test_a_missing_project_file_is_a_located_error(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # GIVEN no project.yaml  WHEN validated  THEN exit 1 with a located error
    (repo / "project.yaml").unlink()
    code, _, err = run(capsys, "validate", "--root", str(repo))
    assert code == 1
    assert "project.yaml:1:1: error: (root): the project file does not exist" in err


def test_explicit_project_mappings_and_build_paths(
    repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN the project and mappings somewhere else than --root
    elsewhere = tmp_path / "elsewhere"
    shutil.move(repo / "mappings", elsewhere)
    shutil.move(repo / "project.yaml", tmp_path / "settings.yaml")
    out_dir = tmp_path / "out"

    # WHEN built with explicit paths
    code, _, err = run(
        capsys,
        "build",
        "--root",
        str(repo),
        "--project",
        str(tmp_path / "settings.yaml"),
        "--mappings",
        str(elsewhere),
        "--build-dir",
        str(out_dir),
    )

    # THEN the files land in --build-dir
    assert code == 0, err
    assert (out_dir / "registry.json").is_file()
    assert (out_dir / "terraform" / "orders.tf.json").is_file()
