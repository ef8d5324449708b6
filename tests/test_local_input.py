"""The local tools are as robust as the Lambda about their input: `ddb-sql-sync replay`
(run here as a user runs it, as a subprocess) reports each problem with the input as
`replay: FILE:LINE: what is wrong - how to fix`, the line being where the record starts, skips
only what is wrong, never shows a traceback, and says so in its exit status: 0 clean, 1 input
unreadable or invalid (or anything else not accounted for), 3 messages in a DLQ.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

import synctools.local.records as records
from synctools.local.patterns import load_filters
from synctools.local.records import RecordReader
from synctools.local.sample import Sampler

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "build"
ARN = "arn:aws:dynamodb:ap-northeast-1:123456789012:table/orders/stream/2024-01-01T00:00:00.000"

FIX_UTF8 = (
    "the input must be UTF-8 (docs/local-tools.md#input); convert it, e.g. iconv -f WINDOWS-1252 -t UTF-8"
)
FIX_RECORD = (
    'write each record as a JSON object as DynamoDB Streams delivers it, {"eventName": ..., '
    '"eventSourceARN": ..., "dynamodb": {...}} (docs/local-tools.md#input)'
)
FIX_DYNAMODB = (
    'add the "dynamodb" object DynamoDB Streams sends: {"Keys": {...}, "NewImage": {...}, '
    '"SequenceNumber": "..."} (docs/local-tools.md#input)'
)
FIX_EVENT_NAME = 'set "eventName" to "INSERT", "MODIFY" or "REMOVE", as DynamoDB Streams does'
FIX_IMAGE = (
    'write it in DynamoDB JSON, {"attr": {"S": "text"}, "n": {"N": "1"}, ...} (docs/local-tools.md#input)'
)
FIX_SOURCE_ARN = (
    "give the stream ARN, arn:aws:dynamodb:<region>:<account>:table/<table>/stream/<label>, "
    "which names the table the record is routed by, or pass --entity NAME"
)


def orders(n: int, seed: int = 3) -> list[dict[str, Any]]:
    """`n` sampled orders INSERTs that pass the Pipe's filter: each one of them a replay reads
    ends in the ledger, whichever others are skipped (no update waits for a skipped insert)."""
    registry = json.loads((BUILD / "registry.json").read_text())
    passing = load_filters(BUILD / "entities" / "orders" / "filters.json").matches
    sampled = Sampler(registry, "orders", seed=seed).records(20 * n)
    return [r for r in sampled if r["eventName"] == "INSERT" and passing(r)][:n]


def jl(*recs: dict[str, Any]) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in recs)


def ids(recs: list[dict[str, Any]]) -> set[str]:
    return {r["eventID"] for r in recs}


@dataclass
class Run:
    code: int
    problems: list[str]  # the "replay: ..." lines on stderr but the one about DLQ messages
    stderr: str
    summary: dict[str, Any] | None
    applied: set[str]  # event ids in the ledger


def replay(tmp: Path, data: bytes, *args: str, stdin: bool = False) -> Run:
    """`ddb-sql-sync replay FILE` (or `-` with the bytes on stdin) into a fresh SQLite."""
    path = tmp / "in.jsonl"
    path.write_bytes(data)
    db = tmp / "r.db"
    db.unlink(missing_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "generator",
        "replay",
        "-" if stdin else str(path),
        "--db",
        f"sqlite:///{db}",
    ]
    cmd += ["--dlq-out", str(tmp / "dlq.jsonl"), "--quiet", "--format", "json", *args]
    done = subprocess.run(cmd, cwd=ROOT, input=data if stdin else None, capture_output=True)
    stderr = done.stderr.decode()
    assert "Traceback" not in stderr, stderr
    engine = create_engine(f"sqlite:///{db}")
    try:
        with engine.connect() as conn:
            applied = {r[0] for r in conn.execute(text("SELECT event_id FROM sync_ledger"))}
    finally:
        engine.dispose()
    problems = [
        line for line in stderr.splitlines() if line.startswith("replay: ") and "ended in a DLQ" not in line
    ]
    return Run(done.returncode, problems, stderr, json.loads(done.stdout) if done.stdout else None, applied)


def test_a_utf8_byte_order_mark_is_accepted(tmp_path: Path) -> None:
    # GIVEN records saved by a Windows editor: a UTF-8 byte order mark first, as JSON lines and
    # as a GetRecords document
    recs = orders(4)
    for data in (
        b"\xef\xbb\xbf" + jl(*recs),
        b"\xef\xbb\xbf" + json.dumps({"Records": recs, "NextShardIterator": "x"}, indent=2).encode(),
    ):
        # WHEN replayed
        run = replay(tmp_path, data)
        # THEN the mark is no content: every record is applied, nothing reported, exit 0
        assert run.code == 0, run.stderr
        assert run.problems == [] and run.applied == ids(recs)
        assert run.summary is not None and run.summary["unreadable"] == run.summary["invalid"] == 0


@pytest.mark.parametrize("stdin", [False, True], ids=["file", "stdin"])
def test_a_line_that_is_not_utf8_is_skipped_and_reported_with_its_byte_offset(
    tmp_path: Path, stdin: bool
) -> None:
    # GIVEN three records, a line of bytes that are not UTF-8 (a UTF-16 byte order mark on its
    # own), and three more records
    recs = orders(6)
    data = jl(*recs[:3]) + b"\xff\xfe\n" + jl(*recs[3:])
    # WHEN replayed from a file or from stdin
    run = replay(tmp_path, data, stdin=stdin)
    # THEN line 4 is reported with the byte's offset and skipped; the records around it are applied
    name = "<stdin>" if stdin else str(tmp_path / "in.jsonl")
    offset = data.index(b"\xff")
    assert run.problems == [
        f"replay: {name}:4: byte 0xFF at byte offset {offset} is not UTF-8; line skipped - {FIX_UTF8}"
    ]
    assert run.applied == ids(recs)
    # AND the run is not accounted for: exit 1, the summary counts the line as unreadable
    assert run.code == 1 and run.summary is not None and run.summary["unreadable"] == 1
    assert "unreadable                   1" in run.stderr and "accounted for: NO" in run.stderr


def test_a_record_with_a_byte_that_is_not_utf8_inside_a_string_is_skipped(tmp_path: Path) -> None:
    # GIVEN a record whose status was written in Latin-1 ("é" as the single byte E9) between others
    recs = orders(5)
    bad = json.dumps(recs[2]).replace('"status": {"S": "', '"status": {"S": "caf\\u00e9 ')
    bad = bad.encode().replace(b"\\u00e9", b"\xe9")
    data = jl(*recs[:2]) + bad + b"\n" + jl(*recs[3:])
    # WHEN replayed
    run = replay(tmp_path, data)
    # THEN only that record is skipped, reported at its line with the offset of the byte
    offset = data.index(b"\xe9")
    assert run.problems == [
        f"replay: {tmp_path / 'in.jsonl'}:3: byte 0xE9 at byte offset {offset} is not UTF-8; skipped - {FIX_UTF8}"
    ]
    assert run.applied == ids(recs) - {recs[2]["eventID"]}
    assert run.code == 1 and run.summary is not None and run.summary["unreadable"] == 1


@pytest.mark.parametrize("stdin", [False, True], ids=["file", "stdin"])
def test_json_values_that_are_not_objects_are_reported_at_their_line(tmp_path: Path, stdin: bool) -> None:
    # GIVEN valid JSON that is not a stream record: an array of numbers, a number, a string
    recs = orders(4)
    data = jl(*recs[:2]) + b'[1, 2]\n7\n"text"\n' + jl(*recs[2:])
    # WHEN replayed
    run = replay(tmp_path, data, stdin=stdin)
    # THEN each value is reported at its line, and the records around them are applied
    name = "<stdin>" if stdin else str(tmp_path / "in.jsonl")
    assert run.problems == [
        f"replay: {name}:3: array element [0]: a JSON number is not a stream record; skipped - {FIX_RECORD}",
        f"replay: {name}:3: array element [1]: a JSON number is not a stream record; skipped - {FIX_RECORD}",
        f"replay: {name}:4: a JSON number is not a stream record; skipped - {FIX_RECORD}",
        f"replay: {name}:5: a JSON string is not a stream record; skipped - {FIX_RECORD}",
    ]
    assert run.applied == ids(recs)
    # AND they count as invalid records: exit 1
    assert run.code == 1 and run.summary is not None and run.summary["invalid"] == 4
    assert "invalid records              4" in run.stderr and "accounted for: NO" in run.stderr


def _without(record: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k != key}


def _with_dynamodb(record: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return {**record, "dynamodb": {**record["dynamodb"], **changes}}


BROKEN_RECORDS = {
    "no dynamodb": (
        lambda r: _without(r, "dynamodb"),
        f'the record has no "dynamodb" object; skipped - {FIX_DYNAMODB}',
    ),
    "dynamodb not an object": (
        lambda r: {**r, "dynamodb": [r["dynamodb"]]},
        f'"dynamodb" is a JSON array, not an object; skipped - {FIX_DYNAMODB}',
    ),
    "NewImage not a map": (
        lambda r: _with_dynamodb(r, NewImage="order_id=1"),
        f'"dynamodb.NewImage" is a JSON string, not a map of attribute values; skipped - {FIX_IMAGE}',
    ),
    "no eventName": (
        lambda r: _without(r, "eventName"),
        f'the record has no "eventName"; skipped - {FIX_EVENT_NAME}',
    ),
    "unknown eventName": (
        lambda r: {**r, "eventName": "UPDATE"},
        f'eventName "UPDATE" is not INSERT, MODIFY or REMOVE; skipped - {FIX_EVENT_NAME}',
    ),
    "no eventSourceARN": (
        lambda r: _without(r, "eventSourceARN"),
        f'the record has no "eventSourceARN", so no entity can be chosen for it; skipped - {FIX_SOURCE_ARN}',
    ),
    "eventSourceARN of a queue": (
        lambda r: {**r, "eventSourceARN": "arn:aws:sqs:ap-northeast-1:123456789012:orders"},
        'eventSourceARN "arn:aws:sqs:ap-northeast-1:123456789012:orders" is not a DynamoDB stream ARN; '
        f"skipped - {FIX_SOURCE_ARN}",
    ),
}


@pytest.mark.parametrize("case", list(BROKEN_RECORDS), ids=list(BROKEN_RECORDS))
def test_a_record_lacking_what_the_pipeline_needs_is_reported_at_its_line(tmp_path: Path, case: str) -> None:
    # GIVEN two records, one that DynamoDB Streams could not have written, two more
    recs = orders(5)
    breaker, message = BROKEN_RECORDS[case]
    data = jl(*recs[:2], breaker(recs[2]), *recs[3:])
    # WHEN replayed
    run = replay(tmp_path, data)
    # THEN it is reported at line 3 and skipped; the others are applied; exit 1
    assert run.problems == [f"replay: {tmp_path / 'in.jsonl'}:3: {message}"]
    assert run.applied == ids(recs) - {recs[2]["eventID"]}
    assert run.code == 1 and run.summary is not None and run.summary["invalid"] == 1


def test_a_record_without_eventsourcearn_is_fine_when_entity_says_where_it_goes(tmp_path: Path) -> None:
    # GIVEN records without eventSourceARN  WHEN replayed with --entity orders
    recs = [_without(r, "eventSourceARN") for r in orders(3)]
    run = replay(tmp_path, jl(*recs), "--entity", "orders")
    # THEN routing needs no ARN: all applied, exit 0
    assert run.code == 0 and run.problems == [] and run.applied == ids(recs), run.stderr


def test_records_inside_a_document_or_an_array_are_reported_at_the_line_they_start(tmp_path: Path) -> None:
    # GIVEN a GetRecords page with one record per line, the third lacking "dynamodb", then an
    # array whose second element is a number
    recs = orders(6)
    page = (
        '{"Records": [\n'
        + ",\n".join(json.dumps(r) for r in (recs[0], recs[1], _without(recs[2], "dynamodb"), recs[3]))
        + '\n], "NextShardIterator": "it"}\n'
    )
    array = f"[\n{json.dumps(recs[4])},\n  1,\n{json.dumps(recs[5])}\n]\n"
    # WHEN replayed
    run = replay(tmp_path, (page + array).encode())
    # THEN each bad element is reported at the line it starts on, with its index; the rest is applied
    name = tmp_path / "in.jsonl"
    assert run.problems == [
        f'replay: {name}:4: Records[2]: the record has no "dynamodb" object; skipped - {FIX_DYNAMODB}',
        f"replay: {name}:9: array element [1]: a JSON number is not a stream record; skipped - {FIX_RECORD}",
    ]
    assert run.applied == ids(recs) - {recs[2]["eventID"]}
    assert run.code == 1 and run.summary is not None and run.summary["invalid"] == 2


def test_json_broken_inside_a_document_ends_the_input_there_with_a_summary(tmp_path: Path) -> None:
    # GIVEN a GetRecords page whose third element is not JSON, then one more JSON line
    recs = orders(4)
    page = '{"Records": [\n' + ",\n".join(
        [json.dumps(recs[0]), json.dumps(recs[1]), "{oops}", json.dumps(recs[2])]
    )
    data = (page + '\n], "NextShardIterator": "it"}\n').encode() + jl(recs[3])
    # WHEN replayed
    run = replay(tmp_path, data)
    # THEN where the next record starts is unknown: the problem is reported where it is, reading
    # stops there, and what was read before is applied and summed up (exit 1, not a crash)
    assert run.problems == [
        f"replay: {tmp_path / 'in.jsonl'}:4: not valid JSON (Expecting property name enclosed in double "
        "quotes, column 2), in the GetRecords document that starts on line 1; the rest of the input is "
        "not read - fix the JSON (docs/local-tools.md#input)"
    ]
    assert run.applied == ids(recs[:2])
    assert run.code == 1 and run.summary is not None and run.summary["unreadable"] == 1
    assert "accounted for: NO" in run.stderr


def test_utf16_input_is_refused_as_a_whole_with_how_to_convert_it(tmp_path: Path) -> None:
    # GIVEN records redirected to a file by Windows PowerShell 5 (UTF-16 with a byte order mark)
    data = jl(*orders(3)).decode().encode("utf-16")
    # WHEN replayed
    run = replay(tmp_path, data)
    # THEN one message says what the input is and how to convert it; nothing is read; exit 1
    assert run.problems == [
        f"replay: {tmp_path / 'in.jsonl'}:1: the input is UTF-16LE (it starts with the byte order mark FF FE), "
        "not UTF-8; nothing is read - convert it, e.g. iconv -f UTF-16LE -t UTF-8 IN > OUT, or in PowerShell "
        "Get-Content IN | Set-Content -Encoding utf8 OUT (docs/local-tools.md#input)"
    ]
    assert run.applied == set() and run.code == 1
    assert run.summary is not None and run.summary["unreadable"] == 1 and run.summary["records"] == 0


def test_a_lone_surrogate_escape_is_reported_not_crashed_on(tmp_path: Path) -> None:
    # GIVEN a record whose string holds the escape \udc80: valid JSON, but no character (DynamoDB
    # strings are UTF-8, and UTF-8 cannot encode it), between two records; one that holds a
    # proper surrogate pair (an emoji) is fine
    recs = orders(4)
    lone = json.dumps(recs[1]).replace('"status": {"S": "', '"status": {"S": "\\udc80')
    pair = json.dumps(recs[2]).replace('"status": {"S": "', '"status": {"S": "\\ud83d\\ude00')
    assert "\\udc80" in lone and "\\ude00" in pair
    data = jl(recs[0]) + f"{lone}\n{pair}\n".encode() + jl(recs[3])
    # WHEN replayed
    run = replay(tmp_path, data)
    # THEN the lone one is reported at its line and skipped; the others are applied; exit 1
    assert run.problems == [
        f"replay: {tmp_path / 'in.jsonl'}:2: the record holds the escape \\uDC80, a lone UTF-16 surrogate, "
        "which is not a character; skipped - escape a character beyond U+FFFF as a surrogate pair "
        "(\\uD83D\\uDE00) or write it as UTF-8 (docs/local-tools.md#input)"
    ]
    assert run.applied == ids(recs) - {recs[1]["eventID"]}
    assert run.code == 1 and run.summary is not None and run.summary["invalid"] == 1


def test_line_numbers_stay_right_across_buffer_refills(monkeypatch: pytest.MonkeyPatch) -> None:
    """The reader reads in chunks and drops what it has read; the line counts must survive that
    (here with 97-byte chunks, so every record straddles several)."""
    monkeypatch.setattr(records, "CHUNK", 97)
    good = json.dumps({"eventID": "g", "eventName": "INSERT", "dynamodb": {"Keys": {"k": {"S": "v"}}}})
    lines = [good] * 300
    lines[10] = "7"
    lines[150] = good.replace('"S": "v"', '"S": "v\udcff"')  # becomes the byte FF below
    lines[299] = '{"eventName": "INSERT"}'
    data = "\n".join(lines).encode("utf-8", "surrogateescape")
    errors: list[str] = []
    reader = RecordReader(io.BytesIO(data), name="f", on_error=errors.append)
    offset = data.index(b"\xff")
    assert sum(1 for _ in reader) == 297
    assert [e.split(" - ")[0] for e in errors] == [
        "f:11: a JSON number is not a stream record; skipped",
        f"f:151: byte 0xFF at byte offset {offset} is not UTF-8; skipped",
        'f:300: the record has no "dynamodb" object; skipped',
    ]
