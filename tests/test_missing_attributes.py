"""Missing means NULL, end to end: a mapping with a column of every type, its items written
with every attribute, with none, with empty strings and with DynamoDB NULLs, sent through the
generated filter and template, the local SQS FIFO model and the runtime into SQLite,
PostgreSQL and MariaDB (`python -m generator test --db`)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import scratch_url

ROOT = Path(__file__).resolve().parent.parent

MAPPING = """\
entity: things
source:
  table: things
  partition_key: {name: id, type: S}
  stream_view_type: NEW_IMAGE
filter:
  event_names: [INSERT, MODIFY]
message:
  fields:
    eventID: {meta: eventID}
    eventName: {meta: eventName}
    sequenceNumber: {meta: SequenceNumber}
    id: {key: id}
    str: {attribute: str, type: S}
    txt: {attribute: txt, type: S}
    int: {attribute: int, type: N}
    big: {attribute: big, type: N}
    small: {attribute: small, type: N}
    dec: {attribute: dec, type: N}
    flt: {attribute: flt, type: N}
    flag: {attribute: flag, type: BOOL}
    at: {attribute: at, type: S}
    epoch: {attribute: epoch, type: N}
    day: {attribute: day, type: S}
    doc: {attribute: doc, type: M}
    label: {attribute: label, type: S}
target:
  tables:
    - table: things
      key: [id]
      columns:
        id: {field: id, type: string, length: 64}
        c_string: {field: str, type: string, length: 50}
        c_text: {field: txt, type: text}
        c_integer: {field: int, type: integer}
        c_bigint: {field: big, type: bigint}
        c_smallint: {field: small, type: smallint}
        c_decimal: {field: dec, type: decimal, precision: 10, scale: 2}
        c_float: {field: flt, type: float}
        c_boolean: {field: flag, type: boolean}
        c_timestamp: {field: at, type: timestamp, format: iso8601}
        c_epoch: {field: epoch, type: timestamp, format: epoch_seconds}
        c_date: {field: day, type: date}
        c_json: {field: doc, type: json}
        c_label: {field: label, type: string, length: 20, nullable: false, default: none}
      version: {column: sync_version, field: sequenceNumber}
    - table: things_strict
      key: [id]
      columns:
        id: {field: id, type: string, length: 64}
        c_required: {field: label, type: string, length: 20, nullable: false}
events:
  type_from: [eventName]
  rules:
    - on: INSERT
      do:
        - {action: upsert, table: things}
    - on: MODIFY
      do:
        - {action: upsert, table: things_strict}
pipeline:
  queue:
    visibility_timeout_seconds: 180
    max_receive_count: 5
"""

TESTS = """\
entity: things
tests:
  - name: every attribute present
    given:
      - insert: {id: T-1, str: a, txt: b, int: 1, big: 2, small: 3, dec: 4.5, flt: 0.25, flag: true,
                 at: "2024-01-02T03:04:05Z", epoch: 1700000000, day: "2024-01-02", doc: {k: v}, label: x}
    expect:
      rows:
        things:
          - {id: T-1, c_string: a, c_text: b, c_integer: 1, c_bigint: 2, c_smallint: 3, c_decimal: 4.5,
             c_float: 0.25, c_boolean: true, c_timestamp: "2024-01-02 03:04:05",
             c_epoch: "2023-11-14 22:13:20", c_date: "2024-01-02", c_json: {k: v}, c_label: x}
      outcomes: {applied: 1}

  - name: every attribute missing is NULL, and a NOT NULL column takes its default
    given:
      - insert: {id: T-2}
    expect:
      rows:
        things:
          - {id: T-2, c_string: null, c_text: null, c_integer: null, c_bigint: null, c_smallint: null,
             c_decimal: null, c_float: null, c_boolean: null, c_timestamp: null, c_epoch: null,
             c_date: null, c_json: null, c_label: none}
      outcomes: {applied: 1}

  - name: DynamoDB NULLs are NULL, empty strings stay empty strings
    given:
      - insert: {id: T-3, str: "", txt: "", int: null, dec: null, flag: null, at: null, day: null,
                 doc: null, label: ""}
    expect:
      rows:
        things:
          - {id: T-3, c_string: "", c_text: "", c_integer: null, c_decimal: null, c_boolean: null,
             c_timestamp: null, c_date: null, c_json: null, c_label: ""}
      outcomes: {applied: 1}

  - name: a NOT NULL column without a default refuses a missing value, naming the column
    given:
      - modify: {id: T-4}
    expect:
      rows:
        things_strict: []
      dlq: 1
      dlq_reasons: ["column c_required: no value (field label is missing) and the column is NOT NULL"]
"""


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("missing")
    shutil.copy(ROOT / "project.yaml", root / "project.yaml")
    (root / "mappings" / "tests").mkdir(parents=True)
    (root / "mappings" / "things.yaml").write_text(MAPPING)
    (root / "mappings" / "tests" / "things.yaml").write_text(TESTS)
    return root


@pytest.mark.parametrize("server", ["sqlite", "postgres_url", "mysql_url"])
def test_missing_attributes_are_null_for_every_column_type(
    project: Path, server: str, request: pytest.FixtureRequest
) -> None:
    # GIVEN the mapping's tests  WHEN they run through the whole local pipeline on each database
    args = [sys.executable, "-m", "generator", "test", "--root", str(project)]
    if server != "sqlite":
        args += ["--db", scratch_url(request.getfixturevalue(server), "sync_missing")]
    done = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    # THEN every case passes: NULL for missing and NULL values, "" for empty strings, the
    # default or a refusal naming the column for NOT NULL
    assert done.returncode == 0, done.stdout + done.stderr
    assert "4 passed, 0 failed" in done.stderr, done.stderr
