"""Mapping tests: stream records in, messages and database rows out (`python -m generator test`).

Test files live beside the mappings, under mappings/tests/*.yaml, in the spirit of dbt unit
tests: each test GIVES DynamoDB stream records (written as plain items) and EXPECTS the message
bodies the Pipe sends, the rows in the database, the outcome counts and the DLQ. They run the
artifacts the current mappings generate (rendered into a temporary build/), through the local
model of Pipes, SQS FIFO and the Lambda poller (runtime.local) and the sync runtime, against
SQLite by default or a scratch database (--db).
"""

from __future__ import annotations

import difflib
import hashlib
import io
import json
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml

from generator.diagnostics import Diagnostic, Severity, format_path
from generator.schema import validate as validate_doc
from generator.yamlload import LoadError, Located, load_file

TESTS_DIR = "tests"
DEDUP_WINDOW = 300  # seconds: a redelivery after this is a new SQS message (facts 5)
SEQUENCE_BASE = 100_000_000_000_000_000_000
EPOCH_BASE = 1_700_000_000
REGION, ACCOUNT = "ap-northeast-1", "123456789012"


@dataclass
class CaseResult:
    file: str
    name: str
    problems: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.problems


# --- records ----------------------------------------------------------------------------


def marshal(value: Any) -> dict[str, Any]:
    """A plain YAML value as a DynamoDB attribute value (numbers travel as N strings)."""
    if isinstance(value, bool):
        return {"BOOL": value}
    if value is None:
        return {"NULL": True}
    if isinstance(value, (int, float, Decimal)):
        return {"N": str(value)}
    if isinstance(value, str):
        return {"S": value}
    if isinstance(value, dict):
        return {"M": {k: marshal(v) for k, v in value.items()}}
    if isinstance(value, list):
        return {"L": [marshal(v) for v in value]}
    raise ValueError(f"cannot write {type(value).__name__} as a DynamoDB value")


def _records(entity: dict[str, Any], given: list[dict[str, Any]], salt: str) -> Iterator[dict[str, Any]]:
    """Stream records for `given`, as DynamoDB Streams delivers them to a Pipe (facts 1.8)."""
    source = entity["source"]
    view = source["stream_view_type"]
    keys = [source["partition_key"]["name"]] + (
        [source["sort_key"]["name"]] if source.get("sort_key") else []
    )
    table = source["table"]
    arn = f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{table}/stream/2024-01-01T00:00:00.000"
    state: dict[str, dict[str, Any]] = {}
    for i, spec in enumerate(given):
        if "record" in spec:
            record = json.loads(json.dumps(spec["record"]))
            record.setdefault("eventSourceARN", arn)
            record.setdefault("eventID", spec.get("event_id") or f"{salt}{i:04d}")
        else:
            name = next(k for k in ("insert", "modify", "remove") if k in spec)
            item = spec[name]
            missing = [k for k in keys if k not in item]
            if missing:
                raise ValueError(f"given[{i}].{name} lacks the key attribute(s) {', '.join(missing)}")
            key_values = {k: item[k] for k in keys}
            ident = json.dumps(key_values, sort_keys=True, default=str)
            old = state.get(ident)
            if name == "remove" and old is None:
                old = item
            new = None if name == "remove" else item
            dyn: dict[str, Any] = {
                "ApproximateCreationDateTime": spec.get("at", EPOCH_BASE + i),
                "Keys": {k: marshal(v) for k, v in key_values.items()},
                "SequenceNumber": str(spec.get("seq", SEQUENCE_BASE + 100 * (i + 1))),
                "SizeBytes": 100,
                "StreamViewType": view,
            }
            if new is not None and view in ("NEW_IMAGE", "NEW_AND_OLD_IMAGES"):
                dyn["NewImage"] = {k: marshal(v) for k, v in new.items()}
            if old is not None and name != "insert" and view in ("OLD_IMAGE", "NEW_AND_OLD_IMAGES"):
                dyn["OldImage"] = {k: marshal(v) for k, v in old.items()}
            if new is None:
                state.pop(ident, None)
            else:
                state[ident] = new
            record = {
                "eventID": spec.get("event_id") or f"{salt}{i:04d}",
                "eventName": name.upper(),
                "eventVersion": "1.1",
                "eventSource": "aws:dynamodb",
                "awsRegion": REGION,
                "eventSourceARN": arn,
                "dynamodb": dyn,
            }
        yield record
        for k in range(1, spec.get("deliver", 1)):
            # A redelivery beyond the 5-minute deduplication window: a real second message
            # that only the runtime's ledger can catch.
            again = json.loads(json.dumps(record))
            dyn = again.setdefault("dynamodb", {})
            if isinstance(dyn.get("ApproximateCreationDateTime"), int):
                dyn["ApproximateCreationDateTime"] += (DEDUP_WINDOW + 1) * k
            yield again


# --- comparison -------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    """A database or message value in comparable form."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        return value.isoformat(sep=" ")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _expected_plain(value: Any, actual: Any) -> Any:
    """An expected value in the actual value's form (timestamps, booleans stored as 0/1, JSON text)."""
    if isinstance(value, str) and isinstance(actual, str) and len(value) >= 10 and value[4:5] == "-":
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return value
        return _plain(parsed) if len(value) > 10 else value
    if isinstance(value, bool) and isinstance(actual, int) and not isinstance(actual, bool):
        return int(value)
    if isinstance(value, (dict, list)) and isinstance(actual, str):
        return value
    if isinstance(value, float) and isinstance(actual, (int, float)):
        return value
    return value


def _subset(expected: Any, actual: Any) -> bool:
    if isinstance(expected, dict):
        return isinstance(actual, dict) and all(
            k in actual and _subset(v, actual[k]) for k, v in expected.items()
        )
    if isinstance(expected, list):
        return (
            isinstance(actual, list)
            and len(expected) == len(actual)
            and all(_subset(e, a) for e, a in zip(expected, actual, strict=True))
        )
    return expected == actual or (
        isinstance(expected, (int, float))
        and isinstance(actual, (int, float))
        and float(expected) == float(actual)
    )


def _diff(what: str, expected: Any, actual: Any) -> str:
    def dump(v: Any) -> list[str]:
        return yaml.safe_dump(v, sort_keys=False, allow_unicode=True, default_flow_style=False).splitlines()

    lines = difflib.unified_diff(
        dump(expected), dump(actual), f"{what} (expected)", f"{what} (actual)", lineterm=""
    )
    return "\n".join("      " + line for line in lines)


def _rows(engine: Any, table: str, columns: set[str], key: list[str]) -> list[dict[str, Any]]:
    from sqlalchemy import MetaData, Table, select

    t = Table(table, MetaData(), autoload_with=engine)
    cols = [t.c[c] for c in sorted(columns or set(key)) if c in t.c]
    order = [t.c[k] for k in key if k in t.c]
    with engine.connect() as conn:
        result = conn.execute(select(*cols).order_by(*order))
        return [{str(c.name): _plain(v) for c, v in zip(cols, row, strict=True)} for row in result]


def _json_or_text(value: Any) -> Any:
    if isinstance(value, str) and value[:1] in "{[":
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


# --- running ----------------------------------------------------------------------------


TEST_SCHEMA: dict[str, Any] = json.loads(
    (Path(__file__).parent / "schemas" / "mapping-test.schema.json").read_text(encoding="utf-8")
)


def test_files(mappings: Path) -> list[Path]:
    directory = mappings / TESTS_DIR
    return sorted(p for p in directory.glob("*.y*ml") if p.is_file()) if directory.is_dir() else []


def load_test_file(path: Path, display: str) -> tuple[Located | None, list[Diagnostic]]:
    try:
        doc = load_file(path, display)
    except LoadError as exc:
        return None, exc.diagnostics
    problems = validate_doc(doc, "mapping-test")
    return (doc if not problems else None), problems


def run_case(
    case: dict[str, Any],
    entity_name: str,
    registry_raw: dict[str, Any],
    build: Path,
    db_url: str | None,
    workdir: Path,
) -> list[str]:
    """Run one test; return what did not match (empty: passed)."""
    from runtime.config import make_engine
    from runtime.local.patterns import load_filters
    from runtime.local.replay import Faults, Replay
    from runtime.local.transform import PipeContext, PipeTarget, load_template
    from runtime.registry import parse_registry
    from runtime.schema import build_metadata

    registry = parse_registry(registry_raw)
    entity = registry_raw["entities"][entity_name]
    salt = hashlib.sha256(f"{entity_name}:{case['name']}".encode()).hexdigest()[:28]
    try:
        records = list(_records(entity, case["given"], salt))
    except ValueError as exc:
        return [str(exc)]
    problems: list[str] = []
    expect = case["expect"]

    # What the Pipe sends (the filter and the input template of build/).
    filters = load_filters(build / "entities" / entity_name / "filters.json")
    template = load_template(build / "entities" / entity_name / "input-template.txt")
    routing = entity["routing"]
    ctx = PipeContext(pipe_name=entity["pipe"]["name"], pipe_arn="", source_arn="", target_arn="")
    target = PipeTarget(template, routing["message_group_id"], routing["deduplication_id"], ctx)
    first_deliveries = list(_records(entity, [{**g, "deliver": 1} for g in case["given"]], salt))
    passing = [r for r in first_deliveries if filters.matches(r)]
    bodies = [json.loads(target.entry(r).body) for r in passing]
    if "filtered" in expect and expect["filtered"] != len(first_deliveries) - len(passing):
        problems.append(
            f"filtered: expected {expect['filtered']}, got {len(first_deliveries) - len(passing)}"
        )
    if "messages" in expect and not _subset(expect["messages"], bodies):
        problems.append("messages differ:\n" + _diff("messages", expect["messages"], bodies))

    # The whole pipeline into the database.
    url = db_url or f"sqlite:///{workdir / (salt + '.db')}"
    engine = make_engine(url)
    metadata = build_metadata(registry, foreign_keys=False)
    try:
        metadata.drop_all(engine)
        metadata.create_all(engine)
        faults_spec = case.get("faults", {})
        faults = Faults(
            case.get("seed", 0),
            faults_spec.get("duplicates", 0.0),
            faults_spec.get("crashes", 0.0),
            faults_spec.get("lost_responses", 0.0),
            faults_spec.get("delay_groups", 0.0),
        )
        dlq = io.StringIO()
        summary = Replay(registry, engine, build, faults=faults, entity=entity_name, dlq_out=dlq).run(records)
        if not summary.accounted:
            problems.append(
                "not every delivered message ended applied, duplicate, stale, ignored, skipped or in the DLQ"
            )
        totals = summary.total
        outcomes = dict(totals.final)
        if "outcomes" in expect:
            got = {k: outcomes.get(k, 0) for k in expect["outcomes"]}
            if got != expect["outcomes"]:
                problems.append("outcomes differ:\n" + _diff("outcomes", expect["outcomes"], got))
        dlq_entries = [json.loads(line) for line in dlq.getvalue().splitlines() if line.strip()]
        if "dlq" in expect and expect["dlq"] != len(dlq_entries):
            reasons = [e.get("reason", "") for e in dlq_entries]
            problems.append(
                f"dlq: expected {expect['dlq']} message(s), got {len(dlq_entries)}"
                + (f" ({'; '.join(reasons)})" if reasons else "")
            )
        for needle in expect.get("dlq_reasons", []):
            if not any(needle in json.dumps(e, ensure_ascii=False) for e in dlq_entries):
                problems.append(f"dlq_reasons: no DLQ message mentions {needle!r}")
        for table, expected_rows in (expect.get("rows") or {}).items():
            spec = entity["tables"].get(table)
            if spec is None:
                problems.append(
                    f"rows.{table}: {entity_name} does not write table {table!r} (tables: {', '.join(entity['tables'])})"
                )
                continue
            columns = {c for row in expected_rows for c in row}
            actual = _rows(engine, table, columns, spec["key"])
            actual = [{k: _json_or_text(v) for k, v in row.items()} for row in actual]
            shaped = [
                {k: _expected_plain(v, actual[i].get(k) if i < len(actual) else None) for k, v in row.items()}
                for i, row in enumerate(expected_rows)
            ]
            if not _subset(shaped, actual):
                problems.append(f"rows.{table} differ:\n" + _diff(f"rows.{table}", expected_rows, actual))
    finally:
        engine.dispose()
    return problems


def run_tests(
    mappings: Path,
    root: Path,
    registry_raw: dict[str, Any],
    files: dict[str, str],
    db_url: str | None,
    select: str | None = None,
) -> tuple[list[CaseResult], list[Diagnostic]]:
    """Every test of every file under mappings/tests/, against the rendered `files`."""
    results: list[CaseResult] = []
    diagnostics: list[Diagnostic] = []
    with tempfile.TemporaryDirectory(prefix="sync-mapping-tests-") as tmp:
        build = Path(tmp) / "build"
        for rel, text in files.items():
            target = build / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")
        for path in test_files(mappings):
            display = (
                path.resolve().relative_to(root.resolve()).as_posix()
                if path.resolve().is_relative_to(root.resolve())
                else str(path)
            )
            doc, problems = load_test_file(path, display)
            diagnostics.extend(problems)
            if doc is None:
                continue
            data: dict[str, Any] = doc.data  # type: ignore[assignment]
            entity = data["entity"]
            if entity not in registry_raw["entities"]:
                loc = doc.loc(("entity",))
                diagnostics.append(
                    Diagnostic(
                        display,
                        loc.line,
                        loc.col,
                        Severity.ERROR,
                        "entity",
                        f"entity '{entity}' has no mapping",
                        f"use one of: {', '.join(sorted(registry_raw['entities']))}",
                        "test-entity",
                    )
                )
                continue
            for index, case in enumerate(data["tests"]):
                if select and select not in case["name"]:
                    continue
                bad = given_problems(doc, display, index, case)
                if bad:
                    diagnostics.extend(bad)  # not run: the local pipeline cannot take the record
                    continue
                results.append(
                    CaseResult(
                        display, case["name"], run_case(case, entity, registry_raw, build, db_url, Path(tmp))
                    )
                )
    return results, diagnostics


def given_problems(doc: Located, display: str, index: int, case: dict[str, Any]) -> list[Diagnostic]:
    """Given records the local pipeline cannot take, located: a raw `record:` that `replay` would
    refuse (runtime.local.records.record_problem, at the key that is wrong), and text that is
    not Unicode (a lone surrogate escape such as "\\udc80", which YAML allows but UTF-8 cannot
    encode)."""
    from runtime.local.records import record_problem

    out = []
    for i, spec in enumerate(case["given"]):
        problem = record_problem(spec["record"]) if "record" in spec else None
        if problem is not None:
            path: tuple[str | int, ...] = ("tests", index, "given", i, "record", *problem.path)
            what, fix = problem.what, problem.fix
        else:
            try:
                json.dumps(spec, ensure_ascii=False, default=str).encode("utf-8")
                continue
            except UnicodeEncodeError as exc:
                path = ("tests", index, "given", i)
                what = f"holds \\u{ord(exc.object[exc.start]):04X}, a lone UTF-16 surrogate, which is not a character"
                fix = "write the character itself, or a surrogate pair for one beyond U+FFFF"
        loc = doc.loc(path, key=path[-1] != "record" and isinstance(path[-1], str))
        out.append(
            Diagnostic(
                display, loc.line, loc.col, Severity.ERROR, format_path(path), what, fix, "test-record"
            )
        )
    return out


def render_results(results: list[CaseResult]) -> str:
    out = []
    current = None
    for r in results:
        if r.file != current:
            out.append(r.file)
            current = r.file
        out.append(f"  {'PASS' if r.passed else 'FAIL'}  {r.name}")
        for p in r.problems:
            out.append("      " + p.replace("\n", "\n      ") if "\n" not in p else "    " + p)
    passed = sum(r.passed for r in results)
    out.append(f"{passed} passed, {len(results) - passed} failed")
    return "\n".join(out)
