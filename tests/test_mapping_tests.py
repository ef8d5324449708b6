"""`python -m generator test`: the bundled mapping tests pass, a wrong expectation fails with
a readable diff, a broken test file is reported at its line, and --db runs on the servers."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from generator import mapping_tests
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


def test_a_wrong_expectation_shows_expected_and_actual_side_by_side(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
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
    # THEN the run fails, locates the test and the expectation, and shows the expected and the
    # actual row aligned column by column, the differing cell underlined
    assert code == 1
    assert (
        "FAIL  mappings/tests/orders.yaml:6:11: created then confirmed, the confirmation delivered twice\n"
        "  mappings/tests/orders.yaml:26:9: tests[0].expect.rows.orders: 1 row(s) differ (expected 1, the table holds 1)\n"
        "      row            order_id  customer_id  status     total_amount\n"
        "      [0]  expected  ORD-1     999          shipped    3200\n"
        "           actual    ORD-1     999          confirmed  3200\n"
        "                                            ^^^^^^^^^\n"
    ) in err
    assert err.rstrip().splitlines()[-1].startswith("test: 0 passed, 1 failed (")


def test_a_failing_test_shows_the_dlq_messages_and_their_reasons(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN a test expecting a reason the runtime does not give and one row too many
    path = project / "mappings" / "tests" / "orders.yaml"
    path.write_text(
        path.read_text().replace(
            'dlq_reasons: ["unknown event type', 'dlq_reasons: ["no such reason", "unknown event type'
        )
    )
    # WHEN it runs
    code = main(["test", "--root", str(project), "-k", "without a rule"])
    err = capsys.readouterr().err
    # THEN the missing reason is located, and every DLQ message is listed with its real reason
    assert code == 1
    assert (
        "  mappings/tests/orders.yaml:114:21: tests[4].expect.dlq_reasons[0]: no DLQ message mentions 'no such reason'\n"
        "  the DLQ holds 1 message(s):\n"
        "      [0] group ORD-7, event "
    ) in err
    assert (
        ", type order.returned: undecodable message: unknown event type 'order.returned' and no rule for it"
        in err
    )


def test_wrong_counts_and_messages_are_shown_side_by_side(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN wrong outcome counts and a wrong message field
    path = project / "mappings" / "tests" / "orders.yaml"
    text = path.read_text().replace(
        "outcomes: {applied: 2, duplicate: 1}", "outcomes: {applied: 3, duplicate: 1}"
    )
    text = text.replace(
        'orderDetails: {totalAmount: "3200", status: {S: confirmed}}}', 'orderDetails: {totalAmount: "3300"}}'
    )
    path.write_text(text)
    # WHEN it runs
    assert main(["test", "--root", str(project), "-k", "delivered twice"]) == 1
    err = capsys.readouterr().err
    # THEN both are aligned expected against actual, nested fields by their dotted names
    assert (
        "tests[0].expect.outcomes: the outcome counts differ\n"
        "      outcomes            applied  duplicate\n"
        "      [0]       expected  3        1\n"
        "                actual    2        1\n"
        "                          ^\n"
    ) in err
    assert (
        "      message            eventType.S      orderID  customerID  orderDetails.totalAmount  orderDetails.status.S\n"
        "      [0]      both      order.created    ORD-1    '999'       '3000'                    pending\n"
        "      [1]      expected  order.confirmed  ORD-1                '3300'\n"
        "               actual    order.confirmed  ORD-1    '999'       '3200'                    confirmed\n"
        "                                                               ^^^^^^\n"
    ) in err


@pytest.mark.parametrize(
    ("snippet", "expected"),
    [
        (
            "    expect: {rows: {orders: [{nope: 1}]}}\n",
            "mappings/tests/x.yaml:6:31: error: tests[0].expect.rows.orders[0].nope: table 'orders' has no "
            "column 'nope' - use one of: id, order_id, customer_id, total_amount, status, updated_at, sync_version",
        ),
        (
            "    expect: {rows: {order: []}}\n",
            "mappings/tests/x.yaml:6:21: error: tests[0].expect.rows.order: the entity does not write table "
            "'order' - did you mean 'orders'? use one of: orders",
        ),
        (
            "    expect: {rows: {orders: [{status: 5}]}}\n",
            "mappings/tests/x.yaml:6:39: error: tests[0].expect.rows.orders[0].status: column 'status' (string) "
            "cannot hold it: the number 5 never equals the text a string column holds - quote it: '5'",
        ),
        (
            "    expect: {rows: {orders: [{total_amount: 1.005}]}}\n",
            "mappings/tests/x.yaml:6:45: error: tests[0].expect.rows.orders[0].total_amount: column "
            "'total_amount' (decimal) cannot hold it: 1.005 has 3 decimal places; the column keeps 2 - round "
            "it to 2 places",
        ),
        (
            "    expect: {rows: {orders: [{order_id: null}]}}\n",
            "mappings/tests/x.yaml:6:41: error: tests[0].expect.rows.orders[0].order_id: column 'order_id' is "
            "NOT NULL: it never holds null - expect a value, or leave the column out",
        ),
        (
            "    expect: {rows: {orders: [{updated_at: 1700000000}]}}\n",
            "mappings/tests/x.yaml:6:43: error: tests[0].expect.rows.orders[0].updated_at: column 'updated_at' "
            "(timestamp) cannot hold it: the number 1700000000 is not a timestamp - write it as a quoted "
            "string, YYYY-MM-DD HH:MM:SS (UTC)",
        ),
        (
            "        seq: twelve\n    expect: {}\n",
            "mappings/tests/x.yaml:6:14: error: tests[0].given[0].seq: 'twelve' is not a stream sequence "
            "number - write 1..40 digits",
        ),
    ],
)
def test_a_test_file_the_entity_cannot_meet_is_a_located_error_before_anything_runs(
    project: Path, capsys: pytest.CaptureFixture[str], snippet: str, expected: str
) -> None:
    # GIVEN a test expecting columns, tables or values the mapping can never produce
    (project / "mappings" / "tests" / "x.yaml").write_text(
        "entity: orders\n"
        "tests:\n"
        "  - name: impossible\n"
        "    given:\n"
        "      - insert: {order_id: O-1, event: {event_id: e-1, event_type: order.created}}\n" + snippet
    )
    # WHEN the tests run
    code = main(["test", "--root", str(project)])
    err = capsys.readouterr().err
    # THEN a located error says what and how to fix it; no test ran, no traceback
    assert code == 1
    assert expected in err.splitlines()
    assert "Traceback" not in err and "PASS" not in err
    assert (
        err.splitlines()[-1] == "test: 1 error(s), 2 warning(s) in the mappings and test files; no test run"
    )


def test_given_items_must_carry_their_keys_in_the_key_type(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN items without their key, with a key of the wrong type, and a !!timestamp value
    (project / "mappings" / "tests" / "x.yaml").write_text(
        "entity: orders\n"
        "tests:\n"
        "  - name: keys\n"
        "    given:\n"
        "      - insert: {customer_id: 1}\n"
        "      - insert: {order_id: 7, at: !!timestamp 2024-01-01 10:00:00}\n"
        "    expect: {}\n"
        "  - name: keys\n"
        "    given: [{insert: {order_id: O-1}}]\n"
        "    expect: {}\n"
    )
    assert main(["test", "--root", str(project)]) == 1
    lines = capsys.readouterr().err.splitlines()
    for line in (
        "mappings/tests/x.yaml:5:9: error: tests[0].given[0].insert: the item lacks the key attribute(s) "
        "order_id - add order_id: every item of the table carries its key",
        "mappings/tests/x.yaml:6:28: error: tests[0].given[1].insert.order_id: key attribute 'order_id' is "
        "of type S in the table; the number 7 is not - quote it: '7'",
        "mappings/tests/x.yaml:6:35: error: tests[0].given[1].insert.at: a !!datetime value is not a DynamoDB "
        "value - write it as a string (or a number, map, list, true/false, null)",
        "mappings/tests/x.yaml:8:11: error: tests[1].name: test name 'keys' is already used by tests[0] - "
        "give each test of a file its own name",
    ):
        assert line in lines


def _documents(text: str) -> list[object]:
    """The JSON documents in `text`, back to back."""
    decoder, docs, at = json.JSONDecoder(), [], 0
    while text[at:].strip():
        at += len(text[at:]) - len(text[at:].lstrip())
        doc, at = decoder.raw_decode(text, at)
        docs.append(doc)
    return docs


@pytest.mark.parametrize("case", ["pass", "fail", "test-file error", "mapping error", "no tests", "bad db"])
def test_json_format_prints_exactly_one_document(
    project: Path, capsys: pytest.CaptureFixture[str], case: str
) -> None:
    # GIVEN each way a run can end
    argv = ["test", "--root", str(project), "--format", "json", "-k", "delivered twice"]
    tests = project / "mappings" / "tests" / "orders.yaml"
    if case == "fail":
        tests.write_text(tests.read_text().replace("dlq: 0", "dlq: 5", 1))
    elif case == "test-file error":
        tests.write_text(tests.read_text().replace("customer_id: 999, status", "customer_idd: 999, status"))
    elif case == "mapping error":
        orders = project / "mappings" / "orders.yaml"
        orders.write_text(
            orders.read_text().replace(
                "maximum_record_age_in_seconds: 300 ", "maximum_record_age_in_seconds: 30  ", 1
            )
        )
    elif case == "no tests":
        argv[-1] = "no test has this name"
    elif case == "bad db":
        argv += ["--db", "postgresql+psycopg://nobody@127.0.0.1:1/none"]
    # WHEN run with --format json
    code = main(argv)
    out = capsys.readouterr().out
    # THEN stdout is one JSON document holding the diagnostics, the tests and the outcome
    docs = _documents(out)
    assert len(docs) == 1, out
    doc = docs[0]
    assert isinstance(doc, dict)
    assert set(doc) >= {
        "errors",
        "warnings",
        "diagnostics",
        "tests",
        "passed",
        "failed",
        "summary",
        "exit_code",
    }
    assert doc["exit_code"] == code
    expected = {
        "pass": (0, 1, 0, 0),
        "fail": (1, 0, 1, 0),
        "test-file error": (1, 0, 0, 1),
        "mapping error": (1, 0, 0, 1),
        "no tests": (1, 0, 0, 0),
        "bad db": (2, 0, 0, 0),
    }[case]
    assert (code, doc["passed"], doc["failed"], doc["errors"]) == expected
    if case == "fail":
        problem = doc["tests"][0]["problems"][0]
        assert (problem["path"], problem["expected"], problem["actual"]) == ("tests[0].expect.dlq", 5, 0)
    if case == "test-file error":
        assert [d["code"] for d in doc["diagnostics"] if d["severity"] == "error"] == ["test-column"]


def test_one_progress_line_per_test_as_it_finishes(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a record of what stderr held each time a test started
    seen: list[str] = []
    real = mapping_tests.run_case

    def spy(*args: object, **kwargs: object) -> object:
        seen.append(capsys.readouterr().err)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(mapping_tests, "run_case", spy)
    # WHEN the orders tests run
    assert main(["test", "--root", str(ROOT)]) == 0
    seen.append(capsys.readouterr().err)
    # THEN before each test started, the one before it had its line: PASS or FAIL, name, time
    progress = [[line for line in chunk.splitlines() if line.startswith("[")] for chunk in seen]
    assert progress[0] == []
    for before in progress[1:-1]:
        assert len(before) == 1
        assert re.fullmatch(
            r"\[ ?\d+/\d+\] (PASS|FAIL)  mappings/tests/\w+\.yaml: .+ \(\d+\.\d\d s\)", before[0]
        )


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


def test_a_test_of_a_retired_entity_says_it_is_retired(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN customers retired while its mapping tests are still there
    mapping = project / "mappings" / "customers.yaml"
    mapping.write_text(mapping.read_text(encoding="utf-8") + "retired: true\n", encoding="utf-8")
    # WHEN the mapping tests run
    assert main(["test", "--root", str(project)]) == 1
    err = capsys.readouterr().err
    # THEN the test file is told why it cannot run and what to do
    assert "mappings/tests/customers.yaml:" in err
    assert "entity 'customers' is retired (retired: true in its mapping)" in err
    assert "delete this test file, or drop retired: true" in err
