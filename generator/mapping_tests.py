"""Mapping tests: stream records in, messages and database rows out (`python -m generator test`).

Test files live beside the mappings, under mappings/tests/*.yaml, in the spirit of dbt unit
tests: each test GIVES DynamoDB stream records (written as plain items) and EXPECTS the message
bodies the Pipe sends, the rows in the database, the outcome counts and the DLQ. They run the
artifacts the current mappings generate (rendered into a temporary build/), through the local
model of Pipes, SQS FIFO and the Lambda poller (synctools.local) and the sync runtime, against
SQLite by default or a scratch database (--db).

Two phases, as dbt compiles before it runs: `collect` loads every test file and checks it
against the schema and the registry (entities, tables, columns, the types a column can hold,
the key attributes of each given item), so a mistake in a test file is a located error before
anything runs; `run_cases` then runs each test and reports it as it finishes.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import yaml

from generator.diagnostics import Diagnostic, PathT, Severity, format_path
from generator.schema import validate as validate_doc
from generator.yamlload import LoadError, Located, load_file
from runtime.aws_limits import SQS_DEDUP_WINDOW_SECONDS

TESTS_DIR = "tests"
SEQUENCE_BASE = 100_000_000_000_000_000_000
EPOCH_BASE = 1_700_000_000
REGION, ACCOUNT = "ap-northeast-1", "123456789012"


@dataclass(frozen=True)
class Case:
    """One test of a test file, checked and ready to run."""

    file: str
    index: int
    name: str
    entity: str
    spec: dict[str, Any]
    doc: Located = field(repr=False, compare=False)

    def loc(self, path: PathT = (), *, key: bool = False) -> tuple[int, int]:
        loc = self.doc.loc(("tests", self.index, *path), key=key)
        return loc.line, loc.col


@dataclass(frozen=True)
class Problem:
    """One expectation a test did not meet: where it is written, what differs, and the lines
    that show it (expected and actual side by side)."""

    path: PathT  # inside the test, e.g. ("expect", "rows", "orders")
    message: str
    detail: tuple[str, ...] = ()
    expected: Any = None
    actual: Any = None
    line: int = 0
    col: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": format_path(self.path),
            "line": self.line,
            "col": self.col,
            "message": self.message,
            "expected": self.expected,
            "actual": self.actual,
        }


@dataclass
class CaseResult:
    file: str
    name: str
    problems: list[Problem] = field(default_factory=list)
    line: int = 0
    col: int = 0
    seconds: float = 0.0
    dlq: list[dict[str, Any]] = field(default_factory=list)  # the DLQ messages, summed up

    @property
    def passed(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "line": self.line,
            "col": self.col,
            "name": self.name,
            "passed": self.passed,
            "seconds": round(self.seconds, 3),
            "problems": [p.as_dict() for p in self.problems],
            "dlq": self.dlq,
        }


# --- records ----------------------------------------------------------------------------


def marshal(value: Any) -> dict[str, Any]:
    """A plain YAML value as a DynamoDB attribute value (numbers travel as N strings, `!!binary`
    as base64 B, as DynamoDB Streams writes them)."""
    if isinstance(value, bool):
        return {"BOOL": value}
    if value is None:
        return {"NULL": True}
    if isinstance(value, (int, float, Decimal)):
        return {"N": str(value)}
    if isinstance(value, str):
        return {"S": value}
    if isinstance(value, bytes):
        return {"B": base64.b64encode(value).decode("ascii")}
    if isinstance(value, dict):
        return {"M": {k: marshal(v) for k, v in value.items()}}
    if isinstance(value, list):
        return {"L": [marshal(v) for v in value]}
    raise ValueError(f"cannot write {type(value).__name__} as a DynamoDB value")


def _key_names(entity: dict[str, Any]) -> list[str]:
    source = entity["source"]
    return [source["partition_key"]["name"]] + (
        [source["sort_key"]["name"]] if source.get("sort_key") else []
    )


def _records(entity: dict[str, Any], given: list[dict[str, Any]], salt: str) -> Iterator[dict[str, Any]]:
    """Stream records for `given`, as DynamoDB Streams delivers them to a Pipe (AWS: Streams)."""
    source = entity["source"]
    view = source["stream_view_type"]
    keys = _key_names(entity)
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
            if missing:  # collect() refuses these first; kept for direct callers
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
                dyn["ApproximateCreationDateTime"] += (SQS_DEDUP_WINDOW_SECONDS + 1) * k
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
        and not isinstance(expected, bool)
        and isinstance(actual, (int, float))
        and not isinstance(actual, bool)
        and float(expected) == float(actual)
    )


def _json_or_text(value: Any) -> Any:
    if isinstance(value, str) and value[:1] in "{[":
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


# --- rendering of differences -----------------------------------------------------------

_MISSING = object()


def _cell(value: Any) -> str:
    """A value as the test file would spell it (YAML flow style, so "999" and 999 differ)."""
    if value is _MISSING:
        return "(missing)"
    text = yaml.safe_dump(value, default_flow_style=True, allow_unicode=True, width=10**9)
    text = text.strip()
    return text[: -len("...")].strip() if text.endswith("...") else text


def side_by_side(
    label: str, columns: list[str], expected: list[dict[str, Any]], actual: list[dict[str, Any]]
) -> list[str]:
    """Expected and actual rows (or messages) aligned by position and column; the differing
    cells are underlined with ^. Values missing from a row show as (missing); a row only one
    side has shows as (none)."""
    head = [label, ""] + columns
    lines: list[list[str]] = []
    marks: list[list[bool] | None] = []
    for i in range(max(len(expected), len(actual))):
        exp = expected[i] if i < len(expected) else None
        act = actual[i] if i < len(actual) else None
        if exp is not None and act is not None:
            differs = [c in exp and not _subset(exp[c], act.get(c, _MISSING)) for c in columns]
            if not any(differs):
                lines.append([f"[{i}]", "both"] + [_cell(act.get(c, _MISSING)) for c in columns])
                marks.append(None)
                continue
            lines.append([f"[{i}]", "expected"] + [_cell(exp[c]) if c in exp else "" for c in columns])
            marks.append(None)
            lines.append(["", "actual"] + [_cell(act.get(c, _MISSING)) for c in columns])
            marks.append(differs)
        elif exp is not None:
            lines.append([f"[{i}]", "expected"] + [_cell(exp[c]) if c in exp else "" for c in columns])
            marks.append(None)
            lines.append(["", "actual", "(none)"] + [""] * (len(columns) - 1))
            marks.append(None)
        elif act is not None:
            lines.append([f"[{i}]", "expected", "(none)"] + [""] * (len(columns) - 1))
            marks.append(None)
            lines.append(["", "actual"] + [_cell(act.get(c, _MISSING)) for c in columns])
            marks.append(None)
    if not columns:
        head.append("")
    widths = [max(len(r[j]) if j < len(r) else 0 for r in [head, *lines]) for j in range(len(head))]

    def fmt(row: list[str]) -> str:
        return "  ".join(cell.ljust(widths[j]) for j, cell in enumerate(row)).rstrip()

    out = [fmt(head)]
    for row, mark in zip(lines, marks, strict=True):
        out.append(fmt(row))
        if mark:
            carets = ["", ""] + [("^" * len(row[j + 2])) if m else "" for j, m in enumerate(mark)]
            out.append(fmt(carets))
    return out


def _flatten(value: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}: nested message bodies as columns."""
    out: dict[str, Any] = {}
    for k, v in value.items():
        name = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(_flatten(v, name + "."))
        else:
            out[name] = v
    return out


def _bare(value: Any) -> Any:
    """A string field as a message carries it: {"S": "x"} (the default for string
    attributes) or bare."""
    if isinstance(value, dict) and len(value) == 1 and isinstance(value.get("S"), str):
        return value["S"]
    return value


def _lookup(body: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(body, dict) or part not in body:
            return _MISSING
        body = body[part]
    return body


def _columns(rows: list[dict[str, Any]], first: list[str] | tuple[str, ...] = ()) -> list[str]:
    out = list(first)
    for row in rows:
        out.extend(c for c in row if c not in out)
    return out


# --- checking test files before they run ------------------------------------------------


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


_SIMPLE = (str, int, float, bool, bytes, type(None))


def _what(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, (int, float)):
        return f"the number {_cell(value)}"
    if isinstance(value, str):
        return f"the string {json.dumps(value, ensure_ascii=False)}"
    if isinstance(value, bytes):
        return "a !!binary value"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"a !!{type(value).__name__} value"


def _unwritable(value: Any, path: PathT) -> Iterator[tuple[PathT, Any]]:
    """Values of a given item that no DynamoDB attribute type holds (`!!timestamp`, `!!set`...)."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _unwritable(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _unwritable(v, (*path, i))
    elif not isinstance(value, _SIMPLE):
        yield path, value


def _column_kinds(registry_raw: dict[str, Any], entity: str) -> dict[str, tuple[Any, dict[str, str]]]:
    """Per table the entity writes: its spec and, per column of the table as the sync creates
    it, the kind of value it holds (the column type, or version/soft-delete/surrogate kinds)."""
    from runtime.registry import parse_registry

    spec = parse_registry(registry_raw).entities[entity]
    out = {}
    for name, table in spec.tables.items():
        kinds: dict[str, str] = {}
        if table.surrogate_key:
            kinds[table.surrogate_key] = "surrogate"
        for col in table.columns.values():
            kinds[col.name] = col.type
        if table.version:
            kinds[table.version.column] = f"version-{table.version.kind}"
        if table.soft_delete:
            kinds[table.soft_delete.column] = (
                "timestamp" if table.soft_delete.kind == "timestamp" else "boolean"
            )
        out[name] = (table, kinds)
    return out


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _cannot_hold(kind: str, column: Any, value: Any) -> tuple[str, str] | None:
    """Why a column of `kind` can never hold the expected `value` (what, how to fix), or None."""
    if kind == "json":
        return None
    scalar = isinstance(value, (str, int, float, bool))
    if not scalar:
        fix = "a JSON column holds mappings and lists; this one holds single values"
        return f"{_what(value)} is not a value a {kind} column holds", f"write a single value ({fix})"
    if kind in ("string", "text"):
        if not isinstance(value, str):
            return (
                f"{_what(value)} never equals the text a {kind} column holds",
                f"quote it: '{_cell(value)}'",
            )
        length = getattr(column, "length", None)
        if kind == "string" and length and len(value) > length:
            return f"{len(value)} characters do not fit in length {length}", "shorten it"
        return None
    if kind in ("integer", "bigint", "smallint", "surrogate", "version-integer"):
        if not _is_number(value) or (isinstance(value, float) and not value.is_integer()):
            return f"{_what(value)} is not an integer", "write a whole number, unquoted"
        return None
    if kind == "version-sequence":
        text = str(value) if _is_number(value) else value
        if isinstance(value, float) or not isinstance(text, str) or not text.isdigit():
            return (
                f"{_what(value)} is not a stream sequence number",
                "write its digits, e.g. 100000000000000000000100",
            )
        return None
    if kind in ("decimal", "float"):
        if not _is_number(value):
            return f"{_what(value)} is not a number", "write it unquoted, e.g. 12.5"
        scale = getattr(column, "scale", None)
        if kind == "decimal" and scale is not None:
            try:
                exponent = Decimal(str(value)).normalize().as_tuple().exponent
            except InvalidOperation:
                return None
            if not isinstance(exponent, int):  # NaN or an infinity: no places to count
                return None
            places = -exponent
            if places > scale:
                return (
                    f"{_cell(value)} has {places} decimal places; the column keeps {scale}",
                    f"round it to {scale} places",
                )
        return None
    if kind == "boolean":
        if not isinstance(value, bool):
            return f"{_what(value)} is not a boolean", "write true or false"
        return None
    if kind in ("timestamp", "date"):
        form = "YYYY-MM-DD HH:MM:SS (UTC)" if kind == "timestamp" else "YYYY-MM-DD"
        if not isinstance(value, str):
            return f"{_what(value)} is not a {kind}", f"write it as a quoted string, {form}"
        try:
            (datetime if kind == "timestamp" else date).fromisoformat(value)
        except ValueError:
            return f"{value!r} is not a {kind}", f"write it as {form}"
        return None
    return None


def _diag(
    case_doc: Located, display: str, path: PathT, what: str, fix: str, code: str, *, key: bool
) -> Diagnostic:
    loc = case_doc.loc(path, key=key)
    return Diagnostic(display, loc.line, loc.col, Severity.ERROR, format_path(path), what, fix, code)


def expect_problems(
    doc: Located,
    display: str,
    index: int,
    case: dict[str, Any],
    tables: dict[str, tuple[Any, dict[str, str]]],
) -> list[Diagnostic]:
    """Expected rows the entity could never produce: tables it does not write, columns the
    table does not have, values a column cannot hold, NULL in a NOT NULL column."""
    import difflib

    out = []
    base: PathT = ("tests", index, "expect", "rows")
    for table, rows in ((case.get("expect") or {}).get("rows") or {}).items():
        if table not in tables:
            close = difflib.get_close_matches(table, list(tables), n=1, cutoff=0.6)
            out.append(
                _diag(
                    doc,
                    display,
                    (*base, table),
                    f"the entity does not write table '{table}'",
                    (f"did you mean '{close[0]}'? " if close else "")
                    + f"use one of: {', '.join(sorted(tables))}",
                    "test-table",
                    key=True,
                )
            )
            continue
        spec, kinds = tables[table]
        for j, row in enumerate(rows):
            if not isinstance(row, dict):
                continue
            for column, value in row.items():
                path: PathT = (*base, table, j, column)
                if column not in kinds:
                    close = difflib.get_close_matches(column, list(kinds), n=1, cutoff=0.6)
                    out.append(
                        _diag(
                            doc,
                            display,
                            path,
                            f"table '{table}' has no column '{column}'",
                            (f"did you mean '{close[0]}'? " if close else "")
                            + f"use one of: {', '.join(kinds)}",
                            "test-column",
                            key=True,
                        )
                    )
                    continue
                if value is None:
                    col = spec.columns.get(column)
                    if column in spec.key or (col is not None and not col.nullable):
                        out.append(
                            _diag(
                                doc,
                                display,
                                path,
                                f"column '{column}' is NOT NULL: it never holds null",
                                "expect a value, or leave the column out",
                                "test-value",
                                key=False,
                            )
                        )
                    continue
                bad = _cannot_hold(kinds[column], spec.columns.get(column), value)
                if bad is not None:
                    kind = {
                        "version-sequence": "sequence-number version",
                        "version-integer": "integer version",
                    }.get(kinds[column], kinds[column])
                    out.append(
                        _diag(
                            doc,
                            display,
                            path,
                            f"column '{column}' ({kind}) cannot hold it: {bad[0]}",
                            bad[1],
                            "test-value",
                            key=False,
                        )
                    )
    return out


def given_problems(
    doc: Located, display: str, index: int, case: dict[str, Any], entity: dict[str, Any] | None = None
) -> list[Diagnostic]:
    """Given records the local pipeline cannot take, located: a raw `record:` that `replay` would
    refuse (synctools.local.records.record_problem, at the key that is wrong), text that is not
    Unicode (a lone surrogate escape such as "\\udc80", which YAML allows but UTF-8 cannot
    encode), an item without the table's key attributes or with a key of the wrong type, a
    value no DynamoDB type holds, and a sequence number that is not one."""
    from runtime.decode import SEQUENCE_WIDTH  # the digits the runtime accepts
    from synctools.local.records import record_problem

    out = []
    keys: dict[str, str] = {}
    if entity is not None:
        source = entity["source"]
        for which in ("partition_key", "sort_key"):
            if source.get(which):
                keys[source[which]["name"]] = source[which]["type"]
    for i, spec in enumerate(case["given"]):
        here: PathT = ("tests", index, "given", i)
        problem = record_problem(spec["record"]) if "record" in spec else None
        if problem is not None:
            path: PathT = (*here, "record", *problem.path)
            loc = doc.loc(path, key=bool(problem.path))
            out.append(
                Diagnostic(
                    display,
                    loc.line,
                    loc.col,
                    Severity.ERROR,
                    format_path(path),
                    problem.what,
                    problem.fix,
                    "test-record",
                )
            )
            continue
        try:
            json.dumps(spec, ensure_ascii=False, default=str).encode("utf-8")
        except UnicodeEncodeError as exc:
            what = f"holds \\u{ord(exc.object[exc.start]):04X}, a lone UTF-16 surrogate, which is not a character"
            fix = "write the character itself, or a surrogate pair for one beyond U+FFFF"
            out.append(_diag(doc, display, here, what, fix, "test-record", key=False))
            continue
        name = next((k for k in ("insert", "modify", "remove") if k in spec), None)
        if name is not None:
            item = spec[name]
            missing = [k for k in keys if k not in item]
            if missing:
                out.append(
                    _diag(
                        doc,
                        display,
                        (*here, name),
                        f"the item lacks the key attribute(s) {', '.join(missing)}",
                        f"add {', '.join(missing)}: every item of the table carries its key",
                        "test-key",
                        key=True,
                    )
                )
            for k, t in keys.items():
                if k not in item:
                    continue
                v = item[k]
                if (t == "S" and not isinstance(v, str)) or (t == "N" and not _is_number(v)):
                    out.append(
                        _diag(
                            doc,
                            display,
                            (*here, name, k),
                            f"key attribute '{k}' is of type {t} in the table; {_what(v)} is not",
                            f"quote it: '{_cell(v)}'" if t == "S" else "write a number, unquoted",
                            "test-key",
                            key=False,
                        )
                    )
            for path, value in _unwritable(item, (*here, name)):
                out.append(
                    _diag(
                        doc,
                        display,
                        path,
                        f"{_what(value)} is not a DynamoDB value",
                        "write it as a string (or a number, map, list, true/false, null)",
                        "test-value",
                        key=False,
                    )
                )
        if "seq" in spec:
            text = str(spec["seq"])
            if not text.isdigit() or len(text) > SEQUENCE_WIDTH:
                out.append(
                    _diag(
                        doc,
                        display,
                        (*here, "seq"),
                        f"{text!r} is not a stream sequence number",
                        f"write 1..{SEQUENCE_WIDTH} digits",
                        "test-seq",
                        key=False,
                    )
                )
    return out


def _database_problems(
    doc: Located, display: str, index: int, case: dict[str, Any], registry_raw: dict[str, Any]
) -> list[Diagnostic]:
    """Rows a test puts in the database first must name tables and columns of the build."""
    columns: dict[str, list[str]] = {}
    for e in registry_raw["entities"].values():
        for name, t in e["tables"].items():
            qualified = f"{t['schema']}.{name}" if t.get("schema") else name
            extra = [t["surrogate_key"]] if t.get("surrogate_key") else []
            columns[qualified] = extra + [c["name"] for c in t["columns"]]
    out = []
    for table, rows in (case.get("database") or {}).items():
        here: PathT = ("tests", index, "database", table)
        if table not in columns:
            fix = f"use one of: {', '.join(sorted(columns))}"
            out.append(
                _diag(doc, display, here, f"no mapping writes table '{table}'", fix, "test-table", key=True)
            )
            continue
        for i, row in enumerate(rows):
            for column in row:
                if column not in columns[table]:
                    out.append(
                        _diag(
                            doc,
                            display,
                            (*here, i, column),
                            f"table '{table}' has no column '{column}'",
                            f"use one of: {', '.join(columns[table])}",
                            "test-column",
                            key=True,
                        )
                    )
    return out


def collect(
    mappings: Path, root: Path, registry_raw: dict[str, Any], select: str | None = None
) -> tuple[list[Case], list[Diagnostic]]:
    """Every test file under mappings/tests/, loaded and checked; the tests whose name contains
    `select` (all when None). Any error diagnostic means nothing should run."""
    cases: list[Case] = []
    diagnostics: list[Diagnostic] = []
    root_abs = root.resolve()
    for path in test_files(mappings):
        resolved = path.resolve()
        display = (
            resolved.relative_to(root_abs).as_posix() if resolved.is_relative_to(root_abs) else str(path)
        )
        doc, problems = load_test_file(path, display)
        diagnostics.extend(problems)
        if doc is None:
            continue
        data = doc.data
        if not isinstance(data, dict):  # the schema holds a test file to an object
            continue
        entity = data["entity"]
        if entity not in registry_raw["entities"]:
            loc = doc.loc(("entity",))
            retired = entity in (registry_raw.get("retired") or {})
            diagnostics.append(
                Diagnostic(
                    display,
                    loc.line,
                    loc.col,
                    Severity.ERROR,
                    "entity",
                    f"entity '{entity}' is retired (retired: true in its mapping): nothing syncs it any more"
                    if retired
                    else f"entity '{entity}' has no mapping",
                    "delete this test file, or drop retired: true from the mapping to sync the entity again"
                    if retired
                    else f"use one of: {', '.join(sorted(registry_raw['entities']))}",
                    "test-entity-retired" if retired else "test-entity",
                )
            )
            continue
        tables = _column_kinds(registry_raw, entity)
        names: dict[str, int] = {}
        for index, case in enumerate(data["tests"]):
            if case["name"] in names:
                loc = doc.loc(("tests", index, "name"))
                diagnostics.append(
                    Diagnostic(
                        display,
                        loc.line,
                        loc.col,
                        Severity.ERROR,
                        format_path(("tests", index, "name")),
                        f"test name {case['name']!r} is already used by tests[{names[case['name']]}]",
                        "give each test of a file its own name",
                        "test-name",
                    )
                )
            names.setdefault(case["name"], index)
            bad = given_problems(doc, display, index, case, registry_raw["entities"][entity])
            bad += expect_problems(doc, display, index, case, tables)
            bad += _database_problems(doc, display, index, case, registry_raw)
            diagnostics.extend(bad)
            if select and select not in case["name"]:
                continue
            cases.append(Case(display, index, case["name"], entity, case, doc))
    return cases, diagnostics


# --- running ----------------------------------------------------------------------------


def database_problem(db_url: str) -> str | None:
    """Why `db_url` cannot serve as the scratch database (a bad URL, a missing driver, a server
    that does not answer), or None."""
    from sqlalchemy import text

    from runtime.config import make_engine

    try:
        engine = make_engine(db_url)
    except Exception as exc:  # any URL or driver problem: reported, never a traceback
        return f"cannot use --db {db_url!r}: {type(exc).__name__}: {exc}"
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:
        return f"cannot connect to --db {engine.url.render_as_string()}: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
    finally:
        engine.dispose()
    return None


def _dlq_summary(entry: dict[str, Any], entity: dict[str, Any]) -> dict[str, Any]:
    """A DLQ message as a failing test shows it: group, event id and type, reason."""
    out: dict[str, Any] = {"kind": entry.get("kind", ""), "reason": entry.get("reason", "")}
    if entry.get("kind") == "pipe":
        out["eventID"] = entry.get("eventID")
        return out
    out["group"] = (entry.get("attributes") or {}).get("MessageGroupId")
    try:
        body = json.loads(entry.get("body") or "")
    except ValueError:
        return out
    if isinstance(body, dict):
        if entity.get("event_id_field"):
            found = _bare(_lookup(body, entity["event_id_field"]))
            if found is not _MISSING:
                out["event_id"] = found
        for f in entity.get("type_from") or []:
            found = _bare(_lookup(body, f))
            if found not in (_MISSING, "", None):
                out["event_type"] = found
                break
    return out


def _rows(engine: Any, table: Any, columns: list[str], key: tuple[str, ...]) -> list[dict[str, Any]]:
    """`columns` of every row of `table`, in key order."""
    from sqlalchemy import select

    cols = [table.c[c] for c in columns]
    with engine.connect() as conn:
        result = conn.execute(select(*cols).order_by(*(table.c[k] for k in key)))
        return [{c: _plain(v) for c, v in zip(columns, row, strict=True)} for row in result]


def run_case(
    case: dict[str, Any],
    entity_name: str,
    registry_raw: dict[str, Any],
    build: Path,
    db_url: str | None,
    workdir: Path,
) -> tuple[list[Problem], list[dict[str, Any]]]:
    """Run one test; return what did not match (empty: passed) and the DLQ messages."""
    from runtime.config import make_engine
    from runtime.registry import parse_registry
    from runtime.schema import build_metadata
    from synctools.local.build import load_pipe
    from synctools.local.replay import Faults, Replay

    registry = parse_registry(registry_raw)
    entity = registry_raw["entities"][entity_name]
    tables = registry.entities[entity_name].tables
    salt = hashlib.sha256(f"{entity_name}:{case['name']}".encode()).hexdigest()[:28]
    records = list(_records(entity, case["given"], salt))
    problems: list[Problem] = []
    expect = case["expect"]

    # What the Pipe sends (the filter and the input template of build/): for an entity of a
    # single-table design, its table's shared Pipe, as the replay below runs it.
    pipe = load_pipe(registry_raw, entity_name, build, whole=True)
    first_deliveries = list(_records(entity, [{**g, "deliver": 1} for g in case["given"]], salt))
    passing = [r for r in first_deliveries if pipe.filters.matches(r)]
    bodies = [json.loads(pipe.target.entry(r).body) for r in passing]
    filtered = len(first_deliveries) - len(passing)
    if "filtered" in expect and expect["filtered"] != filtered:
        problems.append(
            Problem(
                ("expect", "filtered"),
                f"expected the filter to drop {expect['filtered']} record(s); it dropped {filtered}",
                expected=expect["filtered"],
                actual=filtered,
            )
        )
    if "messages" in expect and not _subset(expect["messages"], bodies):
        flat_expected = [_flatten(m) for m in expect["messages"]]
        columns = _columns(flat_expected)
        flat_actual = [{c: _lookup(b, c) for c in columns if _lookup(b, c) is not _MISSING} for b in bodies]
        problems.append(
            Problem(
                ("expect", "messages"),
                f"the messages differ (expected {len(expect['messages'])}, the Pipe sent {len(bodies)})",
                tuple(side_by_side("message", columns, flat_expected, flat_actual)),
                expected=expect["messages"],
                actual=bodies,
            )
        )

    # The whole pipeline into the database.
    url = db_url or f"sqlite:///{workdir / (salt + '.db')}"
    engine = make_engine(url)
    metadata = build_metadata(registry, foreign_keys=False)
    dlq_entries: list[dict[str, Any]] = []
    try:
        metadata.drop_all(engine)
        metadata.create_all(engine)
        # Rows already there (a parent a lookup finds), in the given order.
        with engine.begin() as conn:
            for table, rows in (case.get("database") or {}).items():
                for row in rows:
                    conn.execute(metadata.tables[table].insert().values(row))
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
        dlq_entries = [
            _dlq_summary(json.loads(line), entity) for line in dlq.getvalue().splitlines() if line.strip()
        ]
        if not summary.accounted:
            problems.append(
                Problem(
                    ("given",),
                    "not every delivered message ended applied, duplicate, stale, ignored, skipped or in the DLQ",
                )
            )
        outcomes = dict(summary.total.final)
        if "outcomes" in expect:
            got = {k: outcomes.get(k, 0) for k in expect["outcomes"]}
            if got != expect["outcomes"]:
                problems.append(
                    Problem(
                        ("expect", "outcomes"),
                        "the outcome counts differ",
                        tuple(
                            side_by_side("outcomes", list(expect["outcomes"]), [expect["outcomes"]], [got])
                        ),
                        expected=expect["outcomes"],
                        actual=got,
                    )
                )
        if "dlq" in expect and expect["dlq"] != len(dlq_entries):
            problems.append(
                Problem(
                    ("expect", "dlq"),
                    f"expected {expect['dlq']} message(s) in the DLQ; {len(dlq_entries)} ended there",
                    expected=expect["dlq"],
                    actual=len(dlq_entries),
                )
            )
        raw_entries = [json.dumps(e, ensure_ascii=False) for e in dlq_entries]
        for j, needle in enumerate(expect.get("dlq_reasons", [])):
            if not any(needle in e for e in raw_entries):
                problems.append(
                    Problem(
                        ("expect", "dlq_reasons", j),
                        f"no DLQ message mentions {needle!r}"
                        + ("" if dlq_entries else " (the DLQ is empty)"),
                        expected=needle,
                        actual=[e["reason"] for e in dlq_entries],
                    )
                )
        for table, expected_rows in (expect.get("rows") or {}).items():
            spec = tables[table]
            t = metadata.tables[spec.qualified]
            columns = _columns(expected_rows, spec.key)
            actual = [
                {k: _json_or_text(v) for k, v in row.items()} for row in _rows(engine, t, columns, spec.key)
            ]
            if spec.version and spec.version.kind == "sequence":
                col = spec.version.column
                for row in actual:  # stored zero-padded; compared as the number it is
                    if isinstance(row.get(col), str) and row[col].isdigit():
                        row[col] = int(row[col])
                expected_rows = [
                    {**r, col: int(r[col])} if isinstance(r.get(col), str) else r for r in expected_rows
                ]
            shaped = [
                {k: _expected_plain(v, actual[i].get(k) if i < len(actual) else None) for k, v in row.items()}
                for i, row in enumerate(expected_rows)
            ]
            if not _subset(shaped, actual):
                differing = sum(
                    1
                    for i in range(max(len(shaped), len(actual)))
                    if i >= len(shaped) or i >= len(actual) or not _subset(shaped[i], actual[i])
                )
                problems.append(
                    Problem(
                        ("expect", "rows", table),
                        f"{differing} row(s) differ (expected {len(expected_rows)}, the table holds {len(actual)})",
                        tuple(side_by_side("row", columns, shaped, actual)),
                        expected=expected_rows,
                        actual=actual,
                    )
                )
    finally:
        engine.dispose()
    return problems, dlq_entries


def run_cases(
    cases: list[Case],
    registry_raw: dict[str, Any],
    files: dict[str, str],
    db_url: str | None,
    on_result: Callable[[CaseResult], None] | None = None,
) -> list[CaseResult]:
    """Run `cases` against the rendered `files`; `on_result` hears of each as it finishes."""
    results: list[CaseResult] = []
    with tempfile.TemporaryDirectory(prefix="sync-mapping-tests-") as tmp:
        build = Path(tmp) / "build"
        for rel, text in files.items():
            target = build / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")
        for case in cases:
            line, col = case.loc(("name",))
            started = time.perf_counter()
            dlq: list[dict[str, Any]] = []
            try:
                problems, dlq = run_case(case.spec, case.entity, registry_raw, build, db_url, Path(tmp))
            except Exception as exc:  # the test could not run: reported with the others
                problems = [Problem((), f"the test could not run: {type(exc).__name__}: {exc}")]
            located = []
            for p in problems:
                pl, pc = case.loc(p.path, key=bool(p.path) and isinstance(p.path[-1], str))
                located.append(replace(p, path=("tests", case.index, *p.path), line=pl, col=pc))
            result = CaseResult(case.file, case.name, located, line, col, time.perf_counter() - started, dlq)
            results.append(result)
            if on_result is not None:
                on_result(result)
    return results


def run_tests(
    mappings: Path,
    root: Path,
    registry_raw: dict[str, Any],
    files: dict[str, str],
    db_url: str | None,
    select: str | None = None,
    on_result: Callable[[CaseResult], None] | None = None,
) -> tuple[list[CaseResult], list[Diagnostic]]:
    """collect, then run_cases unless a test file has errors."""
    cases, diagnostics = collect(mappings, root, registry_raw, select)
    if any(d.severity is Severity.ERROR for d in diagnostics):
        return [], diagnostics
    return run_cases(cases, registry_raw, files, db_url, on_result), diagnostics


# --- reporting --------------------------------------------------------------------------


def progress_line(result: CaseResult, done: int, total: int) -> str:
    """One line per finished test, for stderr."""
    width = len(str(total))
    return (
        f"[{done:>{width}}/{total}] {'PASS' if result.passed else 'FAIL'}  "
        f"{result.file}: {result.name} ({result.seconds:.2f} s)"
    )


def render_failures(results: list[CaseResult]) -> str:
    """What each failed test expected and got: located problems, expected and actual side by
    side, and the messages that ended in the DLQ with their reasons."""
    out = []
    for r in results:
        if r.passed:
            continue
        out.append(f"FAIL  {r.file}:{r.line}:{r.col}: {r.name}")
        for p in r.problems:
            out.append(f"  {r.file}:{p.line}:{p.col}: {format_path(p.path)}: {p.message}")
            out.extend(f"      {line}" for line in p.detail)
        if r.dlq:
            out.append(f"  the DLQ holds {len(r.dlq)} message(s):")
            for i, m in enumerate(r.dlq):
                who = ", ".join(
                    f"{label} {m[k]}"
                    for k, label in (
                        ("group", "group"),
                        ("event_id", "event"),
                        ("event_type", "type"),
                        ("eventID", "record"),
                    )
                    if m.get(k) not in (None, "")
                )
                where = "the Pipe's DLQ" if m.get("kind") == "pipe" else "the FIFO DLQ"
                out.append(f"      [{i}] {who or where}: {m['reason']}")
        out.append("")
    return "\n".join(out)


def summary_line(results: list[CaseResult], seconds: float) -> str:
    passed = sum(r.passed for r in results)
    return f"{passed} passed, {len(results) - passed} failed ({seconds:.2f} s)"
