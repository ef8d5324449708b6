"""Semantic checks over the resolved model (the corpus covers one case per rule; these cover
the edges: what must stay silent, severities, and rules across several mappings)."""

from __future__ import annotations

import shutil
from decimal import Decimal
from pathlib import Path

import pytest

from generator import checks, resolve, schema
from generator.diagnostics import Diagnostic, Severity
from generator.load import load
from generator.model import Model
from generator.yamlload import load_file, load_yaml

REPO_ROOT = Path(__file__).resolve().parent.parent

# Dispatches on the stream event name; clean (no warnings) as written.
BASE = """\
entity: orders
source:
  table: orders
  partition_key: {name: order_id, type: S}
  stream_view_type: NEW_AND_OLD_IMAGES
filter:
  event_names: [INSERT, MODIFY]
message:
  fields:
    eventID: {meta: eventID}
    eventName: {meta: eventName}
    sequenceNumber: {meta: SequenceNumber}
    orderID: {key: order_id}
    status: {attribute: status, type: S}
routing: {}
target:
  tables:
    - table: orders
      key: [order_id]
      columns:
        order_id: {field: orderID, type: string}
        status: {field: status, type: string}
      version: {column: sync_version, field: sequenceNumber}
events:
  rules:
    - on: [INSERT, MODIFY]
      do: [{action: upsert, table: orders}]
pipeline:
  queue: {visibility_timeout_seconds: 180, max_receive_count: 5}
"""


def diagnose(text: str) -> list[Diagnostic]:
    """Schema, resolve and every check on one mapping beside the bundled project."""
    doc = load_yaml(text, "mappings/orders.yaml")
    structural = schema.validate(doc, "mapping")
    assert structural == [], [d.render() for d in structural]
    project_doc = load_file(REPO_ROOT / "project.yaml", "project.yaml")
    project = resolve.resolve_project(project_doc)
    entity, problems = resolve.resolve_entity(doc, project)
    return problems + checks.run_checks(Model(project, (entity,)), {doc.file: doc}, project_doc)


def codes(diags: list[Diagnostic], severity: Severity | None = None) -> list[str]:
    return sorted(d.code for d in diags if severity is None or d.severity is severity)


def test_the_base_mapping_is_clean() -> None:
    # GIVEN the base mapping  WHEN checked  THEN no finding at all (the tests below add one each)
    assert diagnose(BASE) == []


def test_the_bundled_mappings_only_warn_about_the_seed_articles_queue_settings() -> None:
    # GIVEN the repository's project and mappings
    loaded = load(REPO_ROOT)

    # THEN the only findings are the two orders warnings the seed article's values earn
    assert loaded.model is not None
    assert [(d.file, d.path, d.severity, d.code) for d in loaded.diagnostics.sorted()] == [
        (
            "mappings/orders.yaml",
            "pipeline.queue.visibility_timeout_seconds",
            Severity.WARNING,
            "queue-visibility",
        ),
        ("mappings/orders.yaml", "pipeline.queue.max_receive_count", Severity.WARNING, "queue-receive-count"),
    ]


@pytest.mark.parametrize(
    ("group", "expected"),
    [
        ("$.dynamodb.Keys.order_id.S", []),
        ("$.dynamodb.Keys.order_id.N", ["routing-group-key"]),  # the key is a string
        ("$.dynamodb.Keys.orderId.S", ["routing-group-key"]),
        ("$.dynamodb.Keys.order_id", ["routing-group-key"]),  # the typed value, not the string
    ],
)
def test_a_group_id_read_from_the_keys_must_name_a_key_with_its_type(group: str, expected: list[str]) -> None:
    # GIVEN a message group id read from dynamodb.Keys
    diags = diagnose(BASE.replace("routing: {}", f"routing: {{message_group_id: {group}}}"))

    # THEN only a path that exists on every record passes
    assert codes(diags) == expected
    if expected:
        assert diags[0].hint == "use one of: $.dynamodb.Keys.order_id.S"
        assert (
            "(see https://docs.aws.amazon.com/eventbridge/latest/pipes-reference/API_PipeTargetSqsQueueParameters.html)"
            in diags[0].message
        )


def test_a_routing_path_with_a_trailing_newline_is_not_one_whole_path() -> None:
    # GIVEN a folded block scalar, which keeps a final newline
    diags = diagnose(BASE.replace("routing: {}", "routing:\n  deduplication_id: >\n    $.eventID\n"))

    # THEN the path is refused (Python's '$' alone would accept "$.eventID\n")
    assert "routing-path" in codes(diags, Severity.ERROR)


def test_grouping_by_a_new_image_attribute_warns_twice_when_removes_pass() -> None:
    # GIVEN a group id from the new image and REMOVE passing  WHEN checked  THEN two warnings
    text = BASE.replace("event_names: [INSERT, MODIFY]", "event_names: [INSERT, MODIFY, REMOVE]").replace(
        "routing: {}", "routing: {message_group_id: $.dynamodb.NewImage.status.S}"
    )
    text = text.replace(
        "    - on: [INSERT, MODIFY]", "    - on: REMOVE\n      do: ignore\n    - on: [INSERT, MODIFY]"
    )
    assert codes(diagnose(text)) == ["routing-group", "routing-remove"]
    assert all(d.severity is Severity.WARNING for d in diagnose(text))


REMOVE_RULE = "    - on: REMOVE\n      do: [{action: delete, table: orders}]\n"


def test_a_rule_for_records_the_filter_drops_is_dead() -> None:
    # GIVEN a REMOVE rule but a filter passing INSERT and MODIFY only
    diags = diagnose(
        BASE.replace(
            "      do: [{action: upsert, table: orders}]\n",
            "      do: [{action: upsert, table: orders}]\n" + REMOVE_RULE,
        )
    )

    # THEN the rule is reported as never running
    assert codes(diags) == ["events-dead"]


def _with_or_pattern(pattern: str, rule: str = REMOVE_RULE) -> str:
    return BASE.replace(
        "  event_names: [INSERT, MODIFY]\n",
        f"  event_names: [INSERT, MODIFY]\n  or_patterns:\n    - {pattern}\n",
    ).replace(
        "      do: [{action: upsert, table: orders}]\n",
        "      do: [{action: upsert, table: orders}]\n" + rule,
    )


def test_an_or_pattern_passing_removes_makes_the_remove_rule_live() -> None:
    # GIVEN the same REMOVE rule, and an escape-hatch pattern that lets REMOVE records through
    diags = diagnose(_with_or_pattern("{eventName: [REMOVE], userIdentity: {type: [Service]}}"))

    # THEN no "never runs" warning (a record passes when any filter matches: facts 2.1)
    assert codes(diags) == []


def test_an_or_pattern_passing_removes_without_a_rule_is_unhandled() -> None:
    # GIVEN an or_pattern passing REMOVE and no REMOVE rule  WHEN checked  THEN unhandled
    diags = diagnose(_with_or_pattern("{eventName: [REMOVE]}", rule=""))
    assert codes(diags) == ["events-unhandled"]
    assert diags[0].message == "REMOVE records pass the filter but no rule handles them; they fail as unknown"


def test_an_or_pattern_without_literal_event_names_neither_kills_nor_claims_rules() -> None:
    # GIVEN an or_pattern that does not list eventName: any record may pass it
    pattern = "{dynamodb: {Keys: {order_id: {S: [{prefix: 'legacy#'}]}}}}"

    # THEN the REMOVE rule is not dead, and a missing rule is not certain to be needed
    assert codes(diagnose(_with_or_pattern(pattern))) == []
    assert codes(diagnose(_with_or_pattern(pattern, rule=""))) == []


def test_an_and_pattern_contradicting_the_generated_filter_is_refused() -> None:
    # GIVEN and_pattern narrowing eventName  WHEN checked  THEN a conflict error
    text = BASE.replace(
        "  event_names: [INSERT, MODIFY]\n",
        "  event_names: [INSERT, MODIFY]\n  and_pattern: {eventName: [INSERT]}\n",
    )
    (diag,) = diagnose(text)
    assert (diag.code, diag.path) == ("filter-conflict", "filter.and_pattern")
    assert diag.message == "and_pattern sets 'eventName' which the generated filter already sets differently"


def test_an_over_long_escape_hatch_pattern_is_reported_at_that_pattern() -> None:
    # GIVEN an or_pattern over 4096 characters  WHEN checked  THEN reported at that pattern
    values = ", ".join(f"tenant-{i:04d}-with-a-long-name" for i in range(160))
    text = _with_or_pattern(f"{{eventName: [REMOVE], dynamodb: {{Keys: {{order_id: {{S: [{values}]}}}}}}}}")
    (diag,) = diagnose(text)
    assert (diag.code, diag.path) == ("limit-pattern", "filter.or_patterns[0]")
    assert diag.message.startswith("filter pattern 2 is ")


def test_a_bare_pattern_value_and_an_empty_list_are_refused() -> None:
    # GIVEN a bare value and an empty list in and_pattern  WHEN checked  THEN both refused
    text = BASE.replace(
        "  event_names: [INSERT, MODIFY]\n",
        "  event_names: [INSERT, MODIFY]\n  and_pattern: {dynamodb: {NewImage: {tenant: {S: acme}, region: {S: []}}}}\n",
    )
    messages = [d.message for d in diagnose(text)]
    assert messages == [
        "invalid pattern fragment: dynamodb.NewImage.tenant.S: a pattern value must be a list such as "
        '["x"] (a bare value is an error: see https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-event-patterns.html)',
        "invalid pattern fragment: dynamodb.NewImage.region.S: an empty list matches nothing",
    ]


def test_a_non_key_column_from_the_new_image_on_remove_is_a_warning_a_key_column_an_error() -> None:
    # GIVEN an upsert on MODIFY and REMOVE, whose status column reads the new image
    text = BASE.replace("event_names: [INSERT, MODIFY]", "event_names: [INSERT, MODIFY, REMOVE]").replace(
        "    - on: [INSERT, MODIFY]",
        "    - on: INSERT\n      do: [{action: upsert, table: orders}]\n    - on: [MODIFY, REMOVE]",
    )
    diags = diagnose(text)
    assert [(d.path, d.severity) for d in diags if d.code == "remove-new-image"] == [
        ("target.tables[0].columns.status.field", Severity.WARNING)
    ]

    # WHEN the conflict column is read from the new image too
    diags = diagnose(text.replace("orderID: {key: order_id}", "orderID: {attribute: order_id, type: S}"))

    # THEN that one is an error: the row cannot be found without it
    assert [(d.path, d.severity) for d in diags if d.code == "remove-new-image"] == [
        ("target.tables[0].columns.order_id.field", Severity.ERROR),
        ("target.tables[0].columns.status.field", Severity.WARNING),
    ]


def test_a_batching_window_of_zero_is_accepted_and_any_other_refused() -> None:
    # GIVEN a consumer batching window  WHEN checked  THEN 0 passes, 1 is refused
    zero = BASE.replace(
        "max_receive_count: 5}", "max_receive_count: 5}\n  consumer: {maximum_batching_window_in_seconds: 0}"
    )
    assert diagnose(zero) == []
    one = zero.replace("maximum_batching_window_in_seconds: 0", "maximum_batching_window_in_seconds: 1")
    (diag,) = diagnose(one)
    assert (
        diag.message == "a batching window of 1 s is refused by AWS on a FIFO queue's event source mapping "
        "(see https://docs.aws.amazon.com/lambda/latest/dg/services-sqs-parameters.html)"
    )


@pytest.mark.parametrize(
    ("age", "code", "severity"),
    [
        (-1, "pipe-record-age", Severity.WARNING),
        (59, "pipe-record-age", Severity.ERROR),
        (60, None, None),
        (604800, "pipe-record-age", Severity.WARNING),
    ],
)
def test_record_age_limits(age: int, code: str | None, severity: Severity | None) -> None:
    # GIVEN a record age  WHEN checked  THEN -1 and > 24 h warn, < 60 is an error, 60 passes
    text = BASE.replace("pipeline:\n", f"pipeline:\n  pipe: {{maximum_record_age_in_seconds: {age}}}\n")
    diags = diagnose(text)
    assert [(d.code, d.severity) for d in diags] == ([(code, severity)] if code else [])


def test_two_entities_claiming_one_queue_are_both_told(tmp_path: Path) -> None:
    # GIVEN two mappings that name the same FIFO queue
    (tmp_path / "mappings").mkdir()
    shutil.copy(REPO_ROOT / "project.yaml", tmp_path / "project.yaml")
    shared = "pipeline:\n  queue: {name: shared-sync.fifo, visibility_timeout_seconds: 180, max_receive_count: 5}\n"
    (tmp_path / "mappings" / "a.yaml").write_text(BASE.split("pipeline:")[0] + shared)
    other = BASE.replace("entity: orders", "entity: invoices").replace("table: orders", "table: invoices")
    (tmp_path / "mappings" / "b.yaml").write_text(other.split("pipeline:")[0] + shared)

    # WHEN loaded together
    loaded = load(tmp_path)

    # THEN each file gets the error, naming the other
    dups = [(d.file, d.path, d.message) for d in loaded.diagnostics.sorted() if d.code == "duplicate-name"]
    assert dups == [
        (
            "mappings/a.yaml",
            "pipeline.queue.name",
            "queue 'shared-sync.fifo' is also claimed by mappings/b.yaml",
        ),
        (
            "mappings/b.yaml",
            "pipeline.queue.name",
            "queue 'shared-sync.fifo' is also claimed by mappings/a.yaml",
        ),
    ]
    assert loaded.model is None


@pytest.mark.parametrize("word", ["array", "char", "status_array"])
def test_a_name_the_databases_reserve_warns_with_the_words_sqlalchemy_quotes(word: str) -> None:
    # GIVEN a column named by a word PostgreSQL (array) or MySQL/MariaDB (char) reserves, which
    # the hand-kept list missed, and a name that only contains one
    diags = diagnose(BASE.replace("        status: {field: status", f"        {word}: {{field: status"))

    # THEN the reserved words warn at the column, and the compound name stays silent
    reserved = [d for d in diags if d.code == "sql-reserved"]
    if word == "status_array":
        assert reserved == []
    else:
        assert [(d.path, d.severity) for d in reserved] == [
            (f"target.tables[0].columns.{word}", Severity.WARNING)
        ]
        assert f"'{word}' is a reserved word in PostgreSQL or MySQL" in reserved[0].message


def test_the_reserved_words_are_every_word_sqlalchemy_quotes_for_the_three_databases() -> None:
    # GIVEN SQLAlchemy's lists (the runtime quotes names through its preparers)
    from sqlalchemy.dialects.mysql.reserved_words import RESERVED_WORDS_MARIADB, RESERVED_WORDS_MYSQL
    from sqlalchemy.dialects.postgresql.base import RESERVED_WORDS

    from generator.checks.identifiers import RESERVED

    # THEN the check warns about exactly those words
    assert RESERVED == RESERVED_WORDS | RESERVED_WORDS_MYSQL | RESERVED_WORDS_MARIADB


# A few values of each DynamoDB type as the runtime decodes them (runtime/ddbjson.py); "number"
# is stream metadata such as ApproximateCreationDateTime.
DECODED_SAMPLES: dict[str, list[object]] = {
    "S": ["1", "true", "2024-01-02", "2024-01-02T03:04:05Z", "x"],
    "N": [Decimal("1")],
    "number": [1],
    "BOOL": [True],
    "M": [{"a": "b"}],
    "L": [["a"]],
    "SS": [["a"]],
    "NS": [[Decimal("1")]],
    "NULL": [None],
}


def test_every_field_type_a_column_type_accepts_is_one_the_runtimes_coercion_takes() -> None:
    # GIVEN the validator's table of the DynamoDB types each column type takes (a rule about
    # types, which the runtime, converting one value at a time, has no table of)
    from generator.checks.columns import COLUMN_ACCEPTS
    from runtime.coerce import refusal
    from runtime.registry import column_spec

    # THEN for every pair it lets through, the runtime's own coercion takes some value of the type
    # (the table may be stricter: it refuses a metadata number for a boolean column, say)
    never = [
        (column, dynamodb_type)
        for column, types in COLUMN_ACCEPTS.items()
        for dynamodb_type in types
        if all(
            refusal(column_spec({"name": "c", "type": column, "format": None}), v) is not None
            for v in DECODED_SAMPLES[dynamodb_type]
        )
    ]
    assert never == []


LOG_TABLE = """\
    - table: order_events
      key: [event_id]
      columns:
        event_id: {field: eventID, type: string}
        status: {field: status, type: string}
"""


def _with_log(marker: str, action: str) -> str:
    text = BASE.replace("events:\n", LOG_TABLE.replace("      key:", marker + "      key:") + "events:\n", 1)
    return text.replace(
        "do: [{action: upsert, table: orders}]",
        f"do: [{{action: upsert, table: orders}}, {{action: {action}, table: order_events}}]",
    )


def test_an_append_only_table_takes_inserts_and_an_unmarked_insert_only_table_is_told() -> None:
    # GIVEN a log table marked append_only and written by an insert: clean
    assert diagnose(_with_log("      append_only: true\n", "insert")) == []
    # GIVEN the same table written by an upsert: refused at the action
    text = _with_log("      append_only: true\n", "upsert")
    (d,) = diagnose(text)
    assert (d.code, d.severity, d.path) == (
        "append-only-written",
        Severity.ERROR,
        "events.rules[0].do[1].action",
    )
    line = text.splitlines()[d.line - 1]
    assert "append_only" in d.message and line[d.col - 1 :].startswith("upsert, table: order_events")
    # GIVEN it written by inserts only, unmarked: a warning naming the marker
    (d,) = diagnose(_with_log("", "insert"))
    assert (d.code, d.severity, d.path) == (
        "append-only-unmarked",
        Severity.WARNING,
        "target.tables[1].table",
    )
    assert "append_only: true" in d.hint


def test_index_and_key_names_made_from_a_long_table_name_must_fit(tmp_path: Path) -> None:
    # GIVEN a ledger name of 60 characters (its index `<name>_applied_at` would be 71) and a
    # table with a surrogate key named with 58 (its unique key `<name>_sync_key` would be 67)
    (tmp_path / "mappings").mkdir()
    ledger = "l" * 60
    text = (REPO_ROOT / "project.yaml").read_text()
    assert "database:\n" in text
    (tmp_path / "project.yaml").write_text(
        text.replace("database:\n", f"database:\n  ledger_table: {ledger}\n", 1)
    )
    table = "t" * 58
    mapping = BASE.replace("    - table: orders\n", f"    - table: {table}\n      surrogate_key: id\n")
    (tmp_path / "mappings" / "orders.yaml").write_text(mapping.replace("table: orders}", f"table: {table}}}"))

    # WHEN loaded
    loaded = load(tmp_path)

    # THEN each is an error where the name is written, saying by how much to shorten it
    found = {(d.file, d.path, d.hint) for d in loaded.diagnostics.sorted() if d.code == "identifier-too-long"}
    assert found == {
        ("project.yaml", "database.ledger_table", f"shorten '{ledger}' by at least 8 character(s)"),
        ("mappings/orders.yaml", "target.tables[0].table", f"shorten '{table}' by at least 4 character(s)"),
    }
