"""The local model of each AWS hop (synctools/local/): one test per rule, each citing the section of
reference/aws-pipeline-facts.md it follows. Validated examples of the facts file are the test
data where it gives them. GIVEN / WHEN / THEN; fakes (a virtual clock, an in-memory queue), no
mocks."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any

import pytest

from synctools.local.fifo import FifoQueue, QueueError, VirtualClock
from synctools.local.patterns import (
    FilterSet,
    PatternError,
    compile_pattern,
    load_filters,
    matches,
    unsupported_operators,
)
from synctools.local.poller import Poller, read_response
from synctools.local.records import RecordReader, table_of
from synctools.local.sample import Sampler
from synctools.local.transform import (
    DynamicParameter,
    PipeContext,
    PipeTarget,
    TargetError,
    Template,
    TemplateError,
    load_template,
    parse_path,
    resolve,
)

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "build"


def ddb_record(new: dict[str, Any] | None = None, *, name: str = "INSERT", **dyn: Any) -> dict[str, Any]:
    """A DynamoDB stream record as Pipes sees it (AWS: Streams)."""
    body: dict[str, Any] = {"ApproximateCreationDateTime": 1700000000, "Keys": {"pk": {"S": "a"}}}
    if new is not None:
        body["NewImage"] = new
    body.update(dyn)
    body.setdefault("SequenceNumber", "1110000000000000000001")
    return {
        "eventID": "e-1",
        "eventName": name,
        "eventVersion": "1.1",
        "eventSource": "aws:dynamodb",
        "awsRegion": "us-east-1",
        "dynamodb": body,
        "eventSourceARN": "arn:aws:dynamodb:us-east-1:123456789012:table/T/stream/2024-01-01T00:00:00.000",
    }


# --- patterns: facts 2 ---------------------------------------------------------------------


def test_facts_2_1_values_or_fields_and_patterns_or() -> None:
    """AWS: eb-pipes-event-filtering: the values of one field are OR, different fields are AND, patterns are OR."""
    p = {"eventName": ["INSERT", "MODIFY"], "awsRegion": ["us-east-1"]}
    assert matches(p, {"eventName": "MODIFY", "awsRegion": "us-east-1"})
    assert not matches(p, {"eventName": "REMOVE", "awsRegion": "us-east-1"})
    assert not matches(p, {"eventName": "INSERT", "awsRegion": "eu-west-1"})
    flt = FilterSet([{"eventName": ["INSERT"]}, {"eventName": ["REMOVE"]}])
    assert flt.matches({"eventName": "REMOVE"})
    assert not flt.matches({"eventName": "MODIFY"})


def test_facts_2_1_fields_named_must_exist_and_others_are_ignored() -> None:
    """AWS: eb-pipes-event-filtering: the record must contain every field the pattern names; others are ignored."""
    assert matches({"a": ["x"]}, {"a": "x", "b": "anything"})
    assert not matches({"a": ["x"], "c": ["y"]}, {"a": "x"})


def test_facts_2_1_at_most_five_filters_and_none_means_no_filtering() -> None:
    """AWS: eb-pipes-event-filtering: 0..5 filters; an empty list removes filtering."""
    assert FilterSet([]).matches({"anything": 1})
    with pytest.raises(PatternError, match="at most 5"):
        FilterSet([{"a": ["x"]}] * 6)


def test_facts_2_1_pattern_over_4096_characters_is_refused() -> None:
    """AWS: eb-pipes-event-filtering: a pattern is at most 4096 characters."""
    with pytest.raises(PatternError, match="4096"):
        compile_pattern(json.dumps({"a": ["x" * 4100]}))


def test_facts_2_3_bare_scalar_is_refused() -> None:
    """AWS: eb-pipes-event-filtering: a pattern field's value must be an array (int_nolist_EXC, string_nolist_EXC)."""
    with pytest.raises(PatternError, match=r"must be a list.*eb-event-patterns"):
        compile_pattern({"eventName": "INSERT"})
    with pytest.raises(PatternError, match="must be a list"):
        compile_pattern({"dynamodb": {"Keys": {"pk": {"N": 5}}}})


def test_facts_2_2_prefix_suffix_and_their_equals_ignore_case() -> None:
    """AWS: eb-pipes-event-filtering: prefix, suffix (and their equals-ignore-case forms) on strings only."""
    assert matches({"k": [{"prefix": "us-"}]}, {"k": "us-east-1"})
    assert not matches({"k": [{"prefix": "us-"}]}, {"k": "eu-west-1"})
    assert matches({"k": [{"suffix": ".png"}]}, {"k": "a.png"})
    assert not matches({"k": [{"suffix": ".png"}]}, {"k": "a.PNG"})
    assert matches({"k": [{"prefix": {"equals-ignore-case": "AB"}}]}, {"k": "abc"})
    assert matches({"k": [{"suffix": {"equals-ignore-case": ".PNG"}}]}, {"k": "a.png"})
    assert not matches({"k": [{"prefix": "1"}]}, {"k": 10})  # a number is not a string


def test_facts_2_2_equals_ignore_case() -> None:
    """AWS: eb-pipes-event-filtering: equals-ignore-case."""
    assert matches({"name": [{"equals-ignore-case": "alice"}]}, {"name": "ALICE"})
    assert not matches({"name": [{"equals-ignore-case": "alice"}]}, {"name": "alicia"})


def test_facts_2_2_anything_but_value_and_list() -> None:
    """AWS: eb-pipes-event-filtering: anything-but takes one value or a list."""
    assert matches({"s": [{"anything-but": "x"}]}, {"s": "y"})
    assert not matches({"s": [{"anything-but": "x"}]}, {"s": "x"})
    assert not matches({"n": [{"anything-but": [1, 2]}]}, {"n": 2})
    assert matches({"n": [{"anything-but": [1, 2]}]}, {"n": 3})


def test_facts_2_3_anything_but_needs_the_field_but_matches_null() -> None:
    """AWS: eb-pipes-event-filtering: anything-but does not match a missing field (..._missing_NEG) but matches null
    (content_anything_but_string_null)."""
    p = {"s": [{"anything-but": "x"}]}
    assert not matches(p, {"other": 1})
    assert matches(p, {"s": None})


def test_facts_2_2_numeric_ranges() -> None:
    """AWS: eb-pipes-event-filtering: numeric with a lower and an upper bound, or =."""
    p = {"n": [{"numeric": [">", 0, "<=", 5]}]}
    assert matches(p, {"n": 5}) and matches(p, {"n": 0.5})
    assert not matches(p, {"n": 0}) and not matches(p, {"n": 5.01})
    assert matches({"n": [{"numeric": ["=", 100]}]}, {"n": 100.0})
    with pytest.raises(PatternError):
        compile_pattern({"n": [{"numeric": [">", 0, ">", 1]}]})
    with pytest.raises(PatternError):
        compile_pattern({"n": [{"numeric": ["~", 0]}]})


def test_facts_2_4_numeric_never_matches_dynamodb_n_strings() -> None:
    """AWS: eb-pipes-event-filtering: DynamoDB N values are strings; the validated `numeric_filter` case
    {"N":[{"numeric":[">",100]},{"anything-but":"101"}]} does not match N="101"."""
    p = {"dynamodb": {"NewImage": {"amount": {"N": [{"numeric": [">", 100]}, {"anything-but": "101"}]}}}}
    assert not matches(p, ddb_record({"amount": {"N": "101"}}))
    assert not matches({"n": [{"numeric": [">", 100]}]}, {"n": "500"})


def test_facts_2_4_equality_is_type_sensitive_and_compares_numbers_by_value() -> None:
    """AWS: eb-pipes-event-filtering: "number":[300] matches 300.0 (number_comparison_float); a string is not a number."""
    assert matches({"number": [300]}, {"number": 300.0})
    assert not matches({"number": [300]}, {"number": "300"})
    assert not matches({"flag": [True]}, {"flag": 1})


def test_facts_2_5_approximate_creation_date_time_is_a_number() -> None:
    """AWS: eb-pipes-event-filtering / 1.8: ApproximateCreationDateTime is a JSON number, so numeric matches it."""
    assert matches({"dynamodb": {"ApproximateCreationDateTime": [{"numeric": [">", 0]}]}}, ddb_record({}))


def test_facts_2_3_exists_on_a_map_is_not_a_leaf() -> None:
    """AWS: eb-pipes-event-filtering: exists only works on leaves. {"presentKey":[{"exists":true}]} does not match
    when presentKey is {"S": ...} (exists_dynamodb_NEG); the leaf form with the type key does."""
    rec = ddb_record({"presentKey": {"S": "v"}})
    assert not matches({"dynamodb": {"NewImage": {"presentKey": [{"exists": True}]}}}, rec)
    assert matches({"dynamodb": {"NewImage": {"presentKey": {"S": [{"exists": True}]}}}}, rec)


def test_facts_2_3_exists_false_on_a_map_matches_whether_or_not_the_key_is_there() -> None:
    """AWS: eb-pipes-event-filtering: {"dynamodb":{"NewImage":{"presentKey":[{"exists":false}]}}} matched both the
    item without the key and the item with it (exists_false_filter, calls=2)."""
    p = {"dynamodb": {"NewImage": {"presentKey": [{"exists": False}]}}}
    assert matches(p, ddb_record({"other": {"S": "x"}}))
    assert matches(p, ddb_record({"presentKey": {"S": "v"}}))
    leaf = {"dynamodb": {"NewImage": {"presentKey": {"S": [{"exists": False}]}}}}
    assert not matches(leaf, ddb_record({"presentKey": {"S": "v"}}))
    assert matches(leaf, ddb_record({"other": {"S": "x"}}))


def test_facts_2_3_null_and_empty_string_are_different() -> None:
    """AWS: eb-pipes-event-filtering: [null] matches only null, [""] only the empty string; [null] does not match []
    (arrays_empty_null_NEG) and exists:true does not match [] (exists_list_empty_NEG)."""
    assert matches({"v": [None]}, {"v": None})
    assert not matches({"v": [None]}, {"v": ""})
    assert matches({"v": [""]}, {"v": ""})
    assert not matches({"v": [""]}, {"v": None})
    assert not matches({"v": [None]}, {"v": []})
    assert not matches({"v": [{"exists": True}]}, {"v": []})


def test_facts_2_3_arrays_intersect() -> None:
    """AWS: eb-pipes-event-filtering: an array in the record matches when it intersects the pattern's values."""
    assert matches({"tags": ["a", "z"]}, {"tags": ["x", "a"]})
    assert not matches({"tags": ["z"]}, {"tags": ["x", "a"]})


def test_facts_2_3_arrays_of_objects_are_crushed_but_never_combined() -> None:
    """AWS: eb-pipes-event-filtering: {"employees":{"firstName":["Anna"]}} matches any element; fields of different
    elements are never combined."""
    event = {
        "employees": [{"firstName": "John", "lastName": "Doe"}, {"firstName": "Anna", "lastName": "Smith"}]
    }
    assert matches({"employees": {"firstName": ["Anna"]}}, event)
    assert matches({"employees": {"firstName": ["Anna"], "lastName": ["Smith"]}}, event)
    assert not matches({"employees": {"firstName": ["Anna"], "lastName": ["Doe"]}}, event)


def test_facts_2_3_dotted_event_key_matches_a_nested_pattern() -> None:
    """AWS: eb-pipes-event-filtering: an event key "state.status" is matched by {"state":{"status":[...]}}
    (dot_joining_event)."""
    assert matches({"state": {"status": ["on"]}}, {"state.status": "on"})
    assert not matches({"state": {"status": ["on"]}}, {"state.status": "off"})


def test_facts_2_3_dotted_pattern_key_matches_nested_fields() -> None:
    """A pattern key "state.status" names the nested field state.status, as AWS joins pattern
    keys with "." (dot_joining_pattern); it merges with the nested keys beside it."""
    assert matches({"state.status": ["on"]}, {"state": {"status": "on"}})
    assert not matches({"state.status": ["on"]}, {"state": {"status": "off"}})
    assert matches({"state.status": ["on"]}, {"state.status": "on"})  # and the dotted record key
    assert matches({"d.a.b": ["x"]}, {"d": {"a.b": "x"}})
    both = {"state.status": ["on"], "state": {"mode": ["auto"]}}
    assert matches(both, {"state": {"status": "on", "mode": "auto"}})
    assert not matches(both, {"state": {"status": "on", "mode": "manual"}})
    # crushed arrays: one element must hold both fields
    assert matches(
        {"items.k": ["a"], "items": {"v": [1]}}, {"items": [{"k": "b", "v": 1}, {"k": "a", "v": 1}]}
    )
    assert not matches({"items.k": ["a"], "items": {"v": [1]}}, {"items": [{"k": "a"}, {"v": 1}]})


def test_a_field_named_twice_through_a_dotted_key_is_refused() -> None:
    """{"a.b": [...], "a": {"b": [...]}} names a.b twice; AWS keeps one, so it is refused."""
    pattern = {"a.b": ["x"], "a": {"b": ["y"]}}
    with pytest.raises(PatternError, match=r"^a\.b: the pattern names this field twice"):
        compile_pattern(pattern)
    assert pattern == {"a.b": ["x"], "a": {"b": ["y"]}}  # the caller's pattern is not changed


def test_facts_2_3_keys_and_values_are_case_sensitive() -> None:
    """AWS: eb-pipes-event-filtering: no normalisation of keys or values."""
    assert not matches({"eventName": ["insert"]}, {"eventName": "INSERT"})
    assert not matches({"EventName": ["INSERT"]}, {"eventName": "INSERT"})


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        (
            {"k": [{"anything-but": {"prefix": "us-"}}]},
            "k[0]: anything-but with prefix: EventBridge Pipes does not support it",
        ),
        (
            {"d": {"k": [{"wildcard": "a*b"}]}},
            "d.k[0]: wildcard: the local Pipes model does not implement it",
        ),
        ({"k": [{"cidr": "10.0.0.0/24"}]}, "k[0]: cidr: the local Pipes model does not implement it"),
        ({"$or": [{"a": ["x"]}, {"b": ["y"]}]}, "$or: $or: the local Pipes model does not implement it"),
    ],
)
def test_facts_2_2_operators_pipes_does_not_support_are_refused(
    pattern: dict[str, Any], message: str
) -> None:
    """AWS: eb-pipes-event-filtering: anything-but with prefix/suffix/equals-ignore-case, wildcard, cidr and $or
    are not (confirmed) Pipes operators: refused, naming the operator, never matched approximately."""
    with pytest.raises(PatternError) as exc:
        compile_pattern(pattern)
    assert str(exc.value).startswith(message)
    assert "eb-create-pattern-operators" in str(exc.value) and "facts" not in str(exc.value)


def test_unsupported_operators_lists_each_with_its_path_in_the_pattern() -> None:
    # GIVEN a pattern with unsupported operators at several depths, beside supported ones
    pattern = {
        "eventName": ["INSERT", {"prefix": "MOD"}],
        "dynamodb": {
            "NewImage": {
                "ip": {"S": [{"cidr": "10.0.0.0/8"}, {"anything-but": "x"}]},
                "path.file": {"S": [{"anything-but": {"suffix": ".tmp"}}, {"wildcard": "*.png"}]},
            }
        },
        "$or": [{"a": [{"wildcard": "x*"}]}, {"b": ["y"]}],
    }

    # WHEN listed  THEN each is named at the key that writes it, in order, with why
    found = unsupported_operators(pattern)
    assert [(u.path, u.operator) for u in found] == [
        (("dynamodb", "NewImage", "ip", "S", 0, "cidr"), "cidr"),
        (("dynamodb", "NewImage", "path.file", "S", 0, "anything-but", "suffix"), "anything-but with suffix"),
        (("dynamodb", "NewImage", "path.file", "S", 1, "wildcard"), "wildcard"),
        (("$or",), "$or"),
        (("$or", 0, "a", 0, "wildcard"), "wildcard"),
    ]
    assert found[1].why.startswith("EventBridge Pipes does not support it")
    assert found[0].why.startswith("the local Pipes model does not implement it")
    # and a pattern of supported operators (or not a pattern at all) has none
    assert unsupported_operators({"a": [{"anything-but": ["x", 1]}, {"numeric": [">", 1]}]}) == []
    assert unsupported_operators(["not", "a", "pattern"]) == []


def test_facts_0_7_the_type_key_is_required() -> None:
    """AWS: eb-pipes-event-filtering / 2.3: {"status":["X"]} without the DynamoDB type key does not match."""
    rec = ddb_record({"status": {"S": "X"}})
    assert not matches({"dynamodb": {"NewImage": {"status": ["X"]}}}, rec)
    assert matches({"dynamodb": {"NewImage": {"status": {"S": ["X"]}}}}, rec)


def test_generated_filters_of_orders_let_outbox_writes_through_only() -> None:
    """AWS: eb-pipes-event-filtering on the generated artifact: INSERT/MODIFY with an outbox event id pass;
    a write without it and a REMOVE are skipped."""
    flt = load_filters(BUILD / "entities" / "orders" / "filters.json")
    outbox = {"event": {"M": {"event_id": {"S": "ev-1"}, "event_type": {"S": "order.created"}}}}
    assert flt.matches(ddb_record(outbox))
    assert flt.matches(ddb_record(outbox, name="MODIFY"))
    assert not flt.matches(ddb_record({"touched_at": {"N": "1"}}, name="MODIFY"))
    assert not flt.matches(ddb_record(None, name="REMOVE"))


# --- transform: facts 1 and 4 --------------------------------------------------------------

RECORD = {
    "eventID": "e-1",
    "detail": {"s": "abc", "obj": {"a": "x", "b": "y"}, "arr": ["A", "B"], "t": True, "n": 42, "f": 1.5},
}


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ('{"k": <$.detail.s>}', '{"k": "abc"}'),
        ('{"k": <$.detail.obj>}', '{"k": {"a":"x","b":"y"}}'),
        ('{"l": <$.detail.arr>}', '{"l": ["A","B"]}'),
        ('{"k": <$.detail.t>}', '{"k": true}'),
        ('{"k": <$.detail.n>}', '{"k": 42}'),
        ('{"k": <$.detail.f>}', '{"k": 1.5}'),
        ('{"command": <$.detail.missing>}', '{"command": ""}'),
    ],
)
def test_facts_1_3_unquoted_placeholders(template: str, expected: str) -> None:
    """AWS: eb-pipes-input-transformation, unquoted column: strings get quotes, objects/arrays are JSON, booleans and
    numbers are literals, a missing path is "" (validated on EventBridge)."""
    assert Template(template).render(RECORD) == expected


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ('{"id":"<$.detail.s>"}', '{"id":"abc"}'),
        ('{"k": "<$.detail.obj>"}', '{"k": "{a:x,b:y}"}'),
        ('{"k": "<$.detail.arr>"}', '{"k": "[A,B]"}'),
        ('{"k": "<$.detail.t>"}', '{"k": "true"}'),
        ('{"k": "n=<$.detail.n>"}', '{"k": "n=42"}'),
        ('{"k": "detail <$.detail.missing>"}', '{"k": "detail "}'),
    ],
)
def test_facts_1_3_quoted_placeholders(template: str, expected: str) -> None:
    """AWS: eb-pipes-input-transformation, inside quotes: strings spliced raw, objects/arrays lose their inner quotes
    ({k:v}, [A,B]), a missing path leaves nothing."""
    assert Template(template).render(RECORD) == expected


def test_facts_1_3_a_quoted_string_template_keeps_its_quotes() -> None:
    """AWS: eb-pipes-input-transformation: a template that is a quoted string is delivered with the quotes kept."""
    rec = {"detail-type": "core.update-account-command"}
    assert (
        Template('"Event of <$.detail-type> type"').render(rec)
        == '"Event of core.update-account-command type"'
    )


def test_facts_1_1_the_docs_example_with_an_unquoted_string_path() -> None:
    """AWS: eb-pipes-input-transformation: the docs' `"instance" : <$.detail.instance-id>` -> `"instance" : "i-0123456789"`."""
    rec = {"detail": {"instance-id": "i-0123456789"}}
    assert Template('{"instance" : <$.detail.instance-id>}').render(rec) == '{"instance" : "i-0123456789"}'


def test_open_question_6_strings_are_json_escaped_by_default() -> None:
    """see an open question (undocumented by AWS), open question 6: whether Pipes escapes is undocumented; the model escapes by
    default (valid JSON), and escape_strings=False models the unescaped reading. Inside quotes
    nothing is ever escaped (AWS: eb-pipes-input-transformation)."""
    rec = {"s": 'say "hi" \\ bye'}
    assert json.loads(Template('{"k": <$.s>}').render(rec)) == {"k": 'say "hi" \\ bye'}
    assert Template('{"k": <$.s>}', escape_strings=False).render(rec) == '{"k": "say "hi" \\ bye"}'
    assert Template('{"k": "<$.s>"}').render(rec) == '{"k": "say "hi" \\ bye"}'


def test_facts_1_2_supported_json_path_subset() -> None:
    """AWS: eb-pipes-input-transformation: dot segments of [A-Za-z0-9_/-], each optionally followed by [n] or [*];
    bracket-quoted keys, recursive descent, slices and filters are refused."""
    assert parse_path("$.a-b/c_d[0][*]")[:2] == ("a-b/c_d", 0)
    assert parse_path("$") == ()
    for bad in ("$..a", "$['a b']", "$.a[1:2]", "$.a[?(@.x)]", "a.b", "$.a b"):
        with pytest.raises(TemplateError):
            parse_path(bad)


def test_facts_1_2_index_and_wildcard() -> None:
    """AWS: eb-pipes-input-transformation: [n] picks an element; [*] yields an array of matches (open question 2)."""
    doc = {"Records": [{"id": "r0"}, {"id": "r1"}]}
    assert resolve(parse_path("$.Records[1].id"), doc) == "r1"
    assert resolve(parse_path("$.Records[*].id"), doc) == ["r0", "r1"]
    assert Template('{"ids": <$.Records[*].id>}').render(doc) == '{"ids": ["r0","r1"]}'
    assert Template('{"x": <$.Records[5].id>}').render(doc) == '{"x": ""}'


def test_facts_1_3_angle_brackets_cannot_be_escaped_and_placeholders_are_not_keys() -> None:
    """AWS: eb-pipes-input-transformation: '<' and '>' cannot be escaped (every <...> is a placeholder) and a
    placeholder cannot be a JSON object key."""
    with pytest.raises(TemplateError, match="cannot be escaped"):
        Template('{"k": "a <b> c"}')
    with pytest.raises(TemplateError, match="key"):
        Template("{<$.k>: 1}")


def test_facts_1_1_template_limit() -> None:
    """AWS: eb-pipes-input-transformation: at most 8192 characters."""
    with pytest.raises(TemplateError, match="8192"):
        Template('{"k": "' + "x" * 8200 + '"}')


def test_facts_1_4_reserved_variables() -> None:
    """AWS: eb-pipes-input-transformation: the reserved variables; aws.pipes.event.json only as a JSON field value."""
    ctx = PipeContext(
        pipe_name="orders-pipe",
        pipe_arn="arn:aws:pipes:us-east-1:1:pipe/orders-pipe",
        source_arn="arn:aws:dynamodb:us-east-1:1:table/orders/stream/x",
        target_arn="arn:aws:sqs:us-east-1:1:orders-sync.fifo",
        clock=lambda: 1700000000.5,
    )
    t = Template(
        '{"p": <aws.pipes.pipe-name>, "a": <aws.pipes.pipe-arn>, "s": <aws.pipes.source-arn>, '
        '"t": <aws.pipes.target-arn>, "i": <aws.pipes.event.ingestion-time>, "e": <aws.pipes.event.json>, '
        '"q": "<aws.pipes.event>"}'
    )
    out = json.loads(t.render({"k": "v"}, ctx))
    assert out == {
        "p": "orders-pipe",
        "a": "arn:aws:pipes:us-east-1:1:pipe/orders-pipe",
        "s": "arn:aws:dynamodb:us-east-1:1:table/orders/stream/x",
        "t": "arn:aws:sqs:us-east-1:1:orders-sync.fifo",
        "i": "2023-11-14T22:13:20.500Z",
        "e": {"k": "v"},
        "q": "{k:v}",
    }
    with pytest.raises(TemplateError, match="value for a JSON field"):
        Template('{"e": "<aws.pipes.event.json>"}')
    with pytest.raises(TemplateError, match="reserved variable"):
        Template('{"e": <aws.pipes.nope>}')


def test_facts_1_7_the_generated_template_renders_each_record_to_a_json_object() -> None:
    """AWS: eb-pipes-batching-concurrency + 1.3 on the generated artifact: per record, every placeholder unquoted; a
    REMOVE record without NewImage renders its attribute fields as ""."""
    tpl = load_template(BUILD / "entities" / "customers" / "input-template.txt")
    rec = ddb_record(None, name="REMOVE", Keys={"customer_id": {"S": "C-1"}})
    body = json.loads(tpl.render(rec))
    assert body["customerID"] == "C-1" and body["eventName"] == "REMOVE"
    assert body["eventType"] == "" and body["profile"] == "" and body["name"] == {"given": "", "family": ""}
    assert body["changedAt"] == 1700000000


def test_facts_4_group_and_dedup_ids_come_from_the_original_record() -> None:
    """AWS: API_PipeTargetSqsQueueParameters: dynamic parameters are evaluated on the original record, never on the template
    output (here the template does not even carry the key)."""
    target = PipeTarget(Template('{"only": <$.eventName>}'), "$.dynamodb.Keys.pk.S", "$.eventID")
    entry = target.entry(ddb_record({}))
    assert (entry.body, entry.group_id, entry.dedup_id) == ('{"only": "INSERT"}', "a", "e-1")


def test_facts_4_the_whole_value_is_one_path_or_a_literal() -> None:
    """AWS: API_PipeTargetSqsQueueParameters: "order-$.x" is not a path: it is sent literally."""
    assert DynamicParameter("MessageGroupId", "order-$.x").resolve({"x": "1"}) == "order-$.x"
    with pytest.raises(TemplateError):
        DynamicParameter("MessageGroupId", "$.a b")


def test_facts_4_100_character_cap_and_sqs_limits() -> None:
    """AWS: API_PipeTargetSqsQueueParameters: the Pipes parameter is at most 100 characters; the resolved id at most 128
    (SQS), and a FIFO send without a group id is refused."""
    with pytest.raises(TemplateError, match="100"):
        DynamicParameter("MessageGroupId", "$." + "a" * 99)
    p = DynamicParameter("MessageGroupId", "$.k")
    assert p.resolve({"k": "x" * 128}) == "x" * 128
    with pytest.raises(TargetError):
        p.resolve({"k": "x" * 129})
    with pytest.raises(TargetError, match="requires it"):
        p.resolve({"other": 1})


# --- SQS FIFO: facts 5 ----------------------------------------------------------------------


def fifo(clock: VirtualClock, **kw: Any) -> FifoQueue:
    kw.setdefault("visibility_timeout", 30)
    return FifoQueue("q.fifo", clock=clock, region="us-east-1", account="123456789012", **kw)


def test_facts_5_order_within_a_group_and_one_in_flight_batch_per_group() -> None:
    """AWS: FIFO-queues / 6.2: strict order in a group; while a group has a message in flight no other
    receiver gets that group; other groups are still served."""
    clock = VirtualClock()
    q = fifo(clock)
    for i in range(3):
        q.send(f"a{i}", "A", f"a{i}")
    q.send("b0", "B", "b0")
    first = q.receive(2)
    assert [r["body"] for r in first] == ["a0", "a1"]
    second = q.receive(10)
    assert [r["body"] for r in second] == ["b0"]  # group A is in flight
    assert q.receive(10) == []
    assert q.delete(first[0]["receiptHandle"]) and q.delete(first[1]["receiptHandle"])
    assert [r["body"] for r in q.receive(10)] == ["a2"]


def test_facts_5_a_batch_takes_one_group_as_far_as_it_can_then_the_next() -> None:
    """AWS: services-sqs-configure: a batch may hold several groups; a group's messages come in order."""
    clock = VirtualClock()
    q = fifo(clock)
    for body, group in (("a0", "A"), ("b0", "B"), ("a1", "A"), ("b1", "B")):
        q.send(body, group, body)
    assert [(r["attributes"]["MessageGroupId"], r["body"]) for r in q.receive(10)] == [
        ("A", "a0"),
        ("A", "a1"),
        ("B", "b0"),
        ("B", "b1"),
    ]


def test_facts_5_deduplication_window_is_five_minutes() -> None:
    """AWS: FIFO-queues: a used dedup id within 5 minutes is accepted but not delivered."""
    clock = VirtualClock()
    q = fifo(clock)
    first = q.send("x", "A", "dup")
    again = q.send("x", "A", "dup")
    assert again.duplicate and again.message_id == first.message_id
    q.delete(q.receive(10)[0]["receiptHandle"])
    clock.advance(299)
    assert q.send("x", "A", "dup").duplicate
    clock.advance(2)
    assert not q.send("x", "A", "dup").duplicate
    assert len(q.receive(10)) == 1


def test_facts_5_visibility_timeout_and_receive_count() -> None:
    """AWS: FIFO-queues / 6.3: an undeleted message is visible again after the visibility timeout, its
    ApproximateReceiveCount incremented; an expired receipt handle deletes nothing."""
    clock = VirtualClock()
    q = fifo(clock)
    q.send("x", "A", "x")
    r1 = q.receive(10)[0]
    assert r1["attributes"]["ApproximateReceiveCount"] == "1"
    clock.advance(29.9)
    assert q.receive(10) == []
    clock.advance(0.2)
    r2 = q.receive(10)[0]
    assert r2["messageId"] == r1["messageId"] and r2["attributes"]["ApproximateReceiveCount"] == "2"
    assert not q.delete(r1["receiptHandle"])
    assert q.delete(r2["receiptHandle"])


def test_facts_5_redrive_to_the_fifo_dlq_replaces_the_dedup_id() -> None:
    """AWS: FIFO-queues: after maxReceiveCount receives the message moves to the FIFO DLQ on the next
    receive attempt, its dedup id replaced by its message id; its group goes on without it."""
    clock = VirtualClock()
    dlq = FifoQueue("q-dlq.fifo", clock=clock)
    q = fifo(clock, dlq=dlq, max_receive_count=2)
    q.send("poison", "A", "p")
    q.send("next", "A", "n")
    for _ in range(2):
        assert q.receive(1)[0]["body"] == "poison"
        clock.advance(31)
    assert q.receive(1)[0]["body"] == "next"
    (moved,) = dlq.receive(10)
    assert moved["body"] == "poison"
    assert moved["attributes"]["MessageDeduplicationId"] == moved["messageId"]
    assert moved["eventSourceARN"].endswith(":q-dlq.fifo")


def test_facts_5_a_fifo_queue_needs_a_fifo_dlq_and_a_fifo_name() -> None:
    """AWS: FIFO-queues: FIFO names end in .fifo (80 characters with it); the DLQ of a FIFO queue is FIFO."""
    clock = VirtualClock()
    with pytest.raises(QueueError, match=".fifo"):
        FifoQueue("plain", clock=clock)
    with pytest.raises(QueueError, match="80"):
        FifoQueue("a" * 76 + ".fifo", clock=clock)
    with pytest.raises(QueueError, match="FIFO"):
        FifoQueue("q.fifo", clock=clock, dlq="standard-dlq", max_receive_count=3)  # type: ignore[arg-type]


def test_facts_4_fifo_sends_need_a_group_and_a_dedup_id_and_batches_of_ten() -> None:
    """AWS: API_PipeTargetSqsQueueParameters / 5: MessageGroupId is required; no dedup id (content-based off) fails;
    SendMessageBatch takes at most 10 entries."""
    q = fifo(VirtualClock())
    with pytest.raises(QueueError, match="MessageGroupId"):
        q.send("x", "", "d")
    with pytest.raises(QueueError, match="Deduplication"):
        q.send("x", "A", "")
    with pytest.raises(QueueError, match="1..10"):
        q.send_batch([("x", "A", str(i)) for i in range(11)])


def test_facts_6_2_received_messages_have_the_lambda_sqs_record_shape() -> None:
    """AWS: services-sqs-configure: the record fields Lambda delivers for a FIFO queue (as tests/factories.py)."""
    q = fifo(VirtualClock(1700000000))
    q.send('{"a": 1}', "G", "D")
    (r,) = q.receive(10)
    assert set(r) == {
        "messageId",
        "receiptHandle",
        "body",
        "attributes",
        "messageAttributes",
        "md5OfBody",
        "eventSource",
        "eventSourceARN",
        "awsRegion",
    }
    assert set(r["attributes"]) == {
        "ApproximateReceiveCount",
        "SentTimestamp",
        "SequenceNumber",
        "MessageGroupId",
        "SenderId",
        "MessageDeduplicationId",
        "ApproximateFirstReceiveTimestamp",
    }
    assert (
        r["eventSource"] == "aws:sqs" and r["eventSourceARN"] == "arn:aws:sqs:us-east-1:123456789012:q.fifo"
    )
    assert r["attributes"]["SentTimestamp"] == "1700000000000"
    assert r["md5OfBody"] == hashlib.md5(b'{"a": 1}').hexdigest()


# --- the event source mapping: facts 6 ------------------------------------------------------


@pytest.mark.parametrize("response", [None, {}, {"batchItemFailures": None}, {"batchItemFailures": []}])
def test_facts_6_5_complete_success(response: Any) -> None:
    """AWS: services-sqs-errorhandling: null, {}, a null or empty batchItemFailures: the whole batch succeeded."""
    assert read_response(response, ["m1"]) == (set(), "")


@pytest.mark.parametrize(
    "response",
    [
        {"batchItemFailures": [{"itemIdentifier": "unknown"}]},
        {"batchItemFailures": [{"itemIdentifier": ""}]},
        {"batchItemFailures": [{"itemIdentifier": None}]},
        {"batchItemFailures": [{"id": "m1"}]},
        {"batchItemFailures": "m1"},
        ["m1"],
        "not an object",
        {"batchItemFailures": [{"itemIdentifier": "m1"}], "x": object()},
    ],
)
def test_facts_6_5_complete_failure(response: Any) -> None:
    """AWS: services-sqs-errorhandling: an unknown, empty or null itemIdentifier, a bad key name, or an answer that is
    not a JSON object: the whole batch failed."""
    failed, reason = read_response(response, ["m1", "m2"])
    assert failed is None and reason


def _poller_setup(handler: Any, **kw: Any) -> tuple[VirtualClock, FifoQueue, Poller]:
    clock = VirtualClock()
    q = fifo(clock)
    return clock, q, Poller(q, handler, **kw)


def test_facts_6_5_an_exception_fails_the_whole_batch_until_the_visibility_timeout() -> None:
    """AWS: services-sqs-errorhandling / 6.3: an exception is a complete failure; the batch reappears after the
    visibility timeout."""

    def boom(event: dict[str, Any], context: Any) -> Any:
        raise RuntimeError("db down")

    clock, q, poller = _poller_setup(boom)
    q.send("x", "A", "x")
    res = poller.poll()
    assert res is not None and res.failed and "RuntimeError" in res.complete_failure
    assert poller.poll() is None
    clock.advance(30)
    assert poller.poll() is not None


def test_facts_6_4_listed_failures_stay_and_everything_else_is_deleted() -> None:
    """AWS: services-sqs-errorhandling: Lambda deletes every message not listed, even one after a failed message of
    the same group; that is why the runtime must list the rest of the group."""

    def fail_first(event: dict[str, Any], context: Any) -> Any:
        return {"batchItemFailures": [{"itemIdentifier": event["Records"][0]["messageId"]}]}

    clock, q, poller = _poller_setup(fail_first)
    for i in range(3):
        q.send(f"a{i}", "A", f"a{i}")
    res = poller.poll()
    assert res is not None and len(res.deleted) == 2 and len(res.failed) == 1
    clock.advance(30)
    (again,) = q.receive(10)
    assert again["body"] == "a0" and again["attributes"]["ApproximateReceiveCount"] == "2"


def test_facts_6_1_fifo_event_source_mapping_batch_is_at_most_ten() -> None:
    """AWS: services-sqs-parameters: batch size at most 10 on a FIFO queue."""
    with pytest.raises(ValueError, match="1..10"):
        _poller_setup(lambda e, c: None, batch_size=11)


def test_facts_6_4_the_runtime_holds_back_only_the_failing_group(tmp_path: Path) -> None:
    """AWS: services-sqs-errorhandling + 5 end to end: a poison message of group A holds back the rest of A while
    group B is applied; the held-back message is received (and counted) with the poison, so
    both reach the FIFO DLQ together after maxReceiveCount (AWS: services-sqs-errorhandling, inferred)."""
    from runtime.apply import apply_batch
    from runtime.config import make_engine
    from runtime.registry import load_registry
    from runtime.schema import build_metadata
    from tests.factories import order_body

    registry = load_registry(BUILD / "registry.json")
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    build_metadata(registry, foreign_keys=False).create_all(engine)
    clock = VirtualClock()
    dlq = FifoQueue("orders-sync-dlq.fifo", clock=clock)
    q = FifoQueue("orders-sync.fifo", clock=clock, visibility_timeout=30, dlq=dlq, max_receive_count=3)
    poison = order_body("A", "order.shipped", seq="1")  # an update of a missing row: permanent
    held, other = order_body("A", seq="2"), order_body("B", seq="3")
    for body in (poison, held, other):
        q.send(json.dumps(body), body["orderID"], body["eventID"])
    poller = Poller(q, lambda e, c: apply_batch(e["Records"], engine, registry).response())
    res = poller.poll()
    assert res is not None and len(res.failed) == 2 and len(res.deleted) == 1  # B applied
    for _ in range(2):
        clock.advance(30)
        res = poller.poll()
        assert res is not None and len(res.failed) == 2
    clock.advance(30)
    assert poller.poll() is None  # the 4th receive attempt moves both to the DLQ
    moved = dlq.drain()
    assert [m.body for m in moved] == [json.dumps(poison), json.dumps(held)]
    assert all(m.receive_count == 3 and m.dedup_id == m.message_id for m in moved)
    engine.dispose()


# --- records, sample ------------------------------------------------------------------------


def rec(event_id: str) -> str:
    """The smallest JSON text the reader takes as a stream record."""
    return json.dumps({"eventID": event_id, "eventName": "INSERT", "dynamodb": {}})


def test_reader_accepts_json_lines_getrecords_documents_and_arrays() -> None:
    """AWS: eb-pipes-batching-concurrency / 1.8: JSON lines, GetRecords documents (pretty or not, back to back), and the
    bare array a DynamoDB-sourced Pipe hands downstream."""
    text = (
        f"{rec('1')}\n"
        f'{{\n  "Records": [\n    {rec("2")},\n    {rec("3")}\n  ],\n  "NextShardIterator": "it"\n}}\n'
        f"[{rec('4')}]\n{rec('5')}"
    )
    assert [r["eventID"] for r in RecordReader(io.StringIO(text))] == ["1", "2", "3", "4", "5"]
    # The same as UTF-8 bytes, which is how replay reads its input.
    assert [r["eventID"] for r in RecordReader(io.BytesIO(text.encode()))] == ["1", "2", "3", "4", "5"]


def test_reader_skips_unreadable_lines_and_stops_at_a_broken_document() -> None:
    errors: list[str] = []
    reader = RecordReader(io.StringIO(f"{rec('1')}\n{{nope}}\n7\n{rec('2')}\n"), on_error=errors.append)
    assert [r["eventID"] for r in reader] == ["1", "2"]
    assert (reader.errors, reader.invalid) == (1, 1) and len(errors) == 2
    # Inside a document the next record's start is unknown: what follows is not read.
    errors.clear()
    reader = RecordReader(
        io.StringIO(f'{{"Records": [{rec("1")}, {{oops}}, {rec("2")}]}}\n{rec("3")}'), on_error=errors.append
    )
    assert [r["eventID"] for r in reader] == ["1"]
    assert reader.errors == 1 and "the rest of the input is not read" in errors[0]


def test_reader_streams_in_chunks() -> None:
    """Records are read chunk by chunk, so memory does not grow with the input."""
    line = json.dumps({"eventID": "x", "eventName": "MODIFY", "dynamodb": {}, "pad": "y" * 1000}) + "\n"

    class Counting(io.BytesIO):
        biggest = 0

        def read(self, size: int | None = -1) -> bytes:
            data = super().read(size)
            Counting.biggest = max(Counting.biggest, len(data))
            return data

    fh = Counting(line.encode() * 5000)
    reader = RecordReader(fh)
    assert sum(1 for _ in reader) == 5000 and reader.errors == reader.invalid == 0
    assert Counting.biggest <= 1 << 17


def test_table_of_reads_the_stream_arn() -> None:
    assert table_of(ddb_record({})) == "T"
    assert table_of({"eventSourceARN": "arn:aws:sqs:x:y:q"}) is None


@pytest.mark.parametrize("entity", ["orders", "customers", "order_items"])
def test_sample_records_follow_the_stream_rules(entity: str) -> None:
    """AWS: Streams: eventVersion 1.1, images per StreamViewType (no NewImage on REMOVE, no
    OldImage on INSERT), N values as strings, ApproximateCreationDateTime a number, sequence
    numbers strictly increasing, each item starting with an INSERT."""
    registry = json.loads((BUILD / "registry.json").read_text())
    source = registry["entities"][entity]["source"]
    records = list(Sampler(registry, entity, seed=3).records(400))
    assert records == list(Sampler(registry, entity, seed=3).records(400))  # reproducible
    seqs = [int(r["dynamodb"]["SequenceNumber"]) for r in records]
    assert seqs == sorted(set(seqs))
    seen: set[str] = set()
    for r in records:
        d = r["dynamodb"]
        assert r["eventVersion"] == "1.1" and isinstance(d["ApproximateCreationDateTime"], int)
        assert d["StreamViewType"] == source["stream_view_type"]
        assert table_of(r) == source["table"] and len(r["eventID"]) == 32
        key = json.dumps(d["Keys"], sort_keys=True)
        if key not in seen:
            assert r["eventName"] == "INSERT"
            seen.add(key)
        assert ("NewImage" in d) == (r["eventName"] != "REMOVE" and "NEW" in source["stream_view_type"])
        assert ("OldImage" in d) == (r["eventName"] != "INSERT" and "OLD" in source["stream_view_type"])
        for image in (d.get("NewImage"), d.get("OldImage"), d["Keys"]):
            for av in (image or {}).values():
                if "N" in av:
                    assert isinstance(av["N"], str)


# --- package boundaries ---------------------------------------------------------------------


def test_the_lambda_never_imports_the_local_model_and_the_model_never_imports_generator() -> None:
    """runtime/ is the Lambda package: importing the handler pulls in nothing of synctools.local;
    synctools.local reads build/ only and never imports generator (STYLE lesson 8)."""
    import subprocess
    import sys

    code = (
        "import sys, runtime.handler\n"
        "assert not [m for m in sys.modules if m.startswith('synctools.local')], 'handler imports synctools.local'\n"
        "import synctools.local.commands.replay, synctools.local.commands.sample\n"
        "import synctools.local.replay, synctools.local.sample\n"
        "assert not [m for m in sys.modules if m == 'generator' or m.startswith('generator.')], 'generator'\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)
