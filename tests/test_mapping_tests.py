"""`python -m generator test`: the bundled mapping tests pass, a wrong expectation fails with
a readable diff, a broken test file is reported at its line, and --db runs on the servers."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from generator.cli import main
from tests.conftest import scratch_url

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def project(tmp_path: Path) -> Path:
    shutil.copy(ROOT / "project.yaml", tmp_path / "project.yaml")
    shutil.copytree(ROOT / "mappings", tmp_path / "mappings")
    return tmp_path


def test_bundled_mapping_tests_pass(capsys: pytest.CaptureFixture[str]) -> None:
    # WHEN the bundled tests run on SQLite
    code = main(["test", "--root", str(ROOT)])
    err = capsys.readouterr().err
    # THEN every test passes, and those the issue names are among them
    assert code == 0, err
    assert "0 failed" in err
    for needle in ("delivered twice", "stale", "deleted", "poison", "DLQ"):
        assert needle in err


def test_a_wrong_expectation_fails_with_a_diff(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # GIVEN an expectation edited to a wrong status
    path = project / "mappings" / "tests" / "orders.yaml"
    path.write_text(
        path.read_text().replace(
            "- {order_id: ORD-1, customer_id: 999, status: confirmed",
            "- {order_id: ORD-1, customer_id: 999, status: shipped",
        )
    )
    # WHEN the tests run
    code = main(["test", "--root", str(project), "-k", "delivered twice"])
    err = capsys.readouterr().err
    # THEN the run fails and shows expected against actual
    assert code == 1
    assert "FAIL  created then confirmed, the confirmation delivered twice" in err
    assert "-  status: shipped" in err and "+  status: confirmed" in err
    assert "0 passed, 1 failed" in err


def test_a_broken_test_file_is_reported_at_its_line(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (project / "mappings" / "tests" / "broken.yaml").write_text(
        "entity: orders\ntests:\n  - name: x\n    given: []\n    expect: {rowz: {}}\n"
    )
    code = main(["test", "--root", str(project)])
    err = capsys.readouterr().err
    assert code == 1
    assert "mappings/tests/broken.yaml:4:12: error: tests[0].given:" in err
    assert "mappings/tests/broken.yaml:5:14: error: tests[0].expect.rowz: unknown key 'rowz'" in err


def test_a_test_of_an_unknown_entity_is_refused(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (project / "mappings" / "tests" / "ghost.yaml").write_text(
        "entity: ghosts\ntests:\n  - name: x\n    given: [{insert: {id: a}}]\n    expect: {}\n"
    )
    assert main(["test", "--root", str(project)]) == 1
    assert (
        "mappings/tests/ghost.yaml:1:9: error: entity: entity 'ghosts' has no mapping"
        in capsys.readouterr().err
    )


@pytest.mark.parametrize("server", ["postgres_url", "mysql_url"])
def test_mapping_tests_on_a_server(
    server: str, request: pytest.FixtureRequest, capsys: pytest.CaptureFixture[str]
) -> None:
    scratch = scratch_url(request.getfixturevalue(server), "sync_mapping_tests")
    code = main(["test", "--root", str(ROOT), "--db", scratch])
    err = capsys.readouterr().err
    assert code == 0, err


def test_a_malformed_raw_record_is_reported_at_its_place(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN mapping tests giving records DynamoDB Streams could not have written: a raw record
    # whose "dynamodb" is a list (delivered twice), one without "dynamodb", and an item holding
    # a lone surrogate escape (YAML allows it; UTF-8 cannot encode it)
    (project / "mappings" / "tests" / "raw.yaml").write_text(
        "entity: orders\n"
        "tests:\n"
        "  - name: malformed dynamodb\n"
        "    given:\n"
        "      - record: {eventName: INSERT, dynamodb: [1, 2]}\n"
        "        deliver: 2\n"
        "    expect: {}\n"
        "  - name: malformed record\n"
        "    given:\n"
        "      - record: {eventName: INSERT}\n"
        "    expect: {}\n"
        "  - name: malformed text\n"
        "    given:\n"
        '      - insert: {order_id: "O-\\udc80", customer_id: 1}\n'
        "    expect: {}\n"
    )
    # WHEN the tests run
    code = main(["test", "--root", str(project), "-k", "malformed"])
    err = capsys.readouterr().err
    # THEN each is an error at its place saying what is wrong and how to fix it, not a traceback
    assert code == 1
    lines = err.splitlines()
    assert (
        'mappings/tests/raw.yaml:5:37: error: tests[0].given[0].record.dynamodb: "dynamodb" is a JSON array, '
        'not an object - add the "dynamodb" object DynamoDB Streams sends: {"Keys": {...}, "NewImage": {...}, '
        '"SequenceNumber": "..."} (docs/local-tools.md#input)'
    ) in lines
    assert (
        'mappings/tests/raw.yaml:10:17: error: tests[1].given[0].record: the record has no "dynamodb" object - '
        'add the "dynamodb" object DynamoDB Streams sends: {"Keys": {...}, "NewImage": {...}, '
        '"SequenceNumber": "..."} (docs/local-tools.md#input)'
    ) in lines
    assert (
        "mappings/tests/raw.yaml:14:9: error: tests[2].given[0]: holds \\uDC80, a lone UTF-16 surrogate, which "
        "is not a character - write the character itself, or a surrogate pair for one beyond U+FFFF"
    ) in lines
