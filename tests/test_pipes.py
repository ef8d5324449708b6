"""EventBridge Pipes artifacts: the input-template renderer and the filter compiler."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import pytest

from generator.emit import pipes
from generator.model import AttrPath, Condition, Entity, Field, Model
from runtime.aws_limits import PIPES_TEMPLATE_CHARS

REPO_ROOT = Path(__file__).resolve().parent.parent
PLACEHOLDER = re.compile(r"<\$[^<>]*>")

# The seed article's filter_criteria, as Pipes receives it (compact, keys sorted).
SEED_PATTERN = '{"dynamodb":{"NewImage":{"event":{"M":{"event_id":{"S":[{"exists":true}]}}}}},"eventName":["INSERT","MODIFY"]}'


def entity(model: Model, name: str) -> Entity:
    return next(e for e in model.entities if e.name == name)


def attr(name: str, path: str, type_: str = "S", image: str = "new") -> Field:
    return Field(name, "attribute", type_, attribute=AttrPath.parse(path), image=image)


# --- input template ------------------------------------------------------------------------


def test_dotted_field_names_nest_in_declaration_order() -> None:
    # GIVEN fields whose dotted names share a prefix, declared apart
    fields = (
        attr("orderDetails.status", "status"),
        Field("orderID", "key", "S", key="order_id"),
        attr("orderDetails.total", "total", "N"),
        Field("eventID", "meta", "S", meta="eventID"),
    )

    # WHEN rendered
    tree = pipes.template_tree(fields)

    # THEN members of one object are grouped where the object first appears
    assert pipes.render_template(tree) == (
        "{\n"
        '  "orderDetails": {\n'
        '    "status": <$.dynamodb.NewImage.status.S>,\n'
        '    "total": <$.dynamodb.NewImage.total.N>\n'
        "  },\n"
        '  "orderID": <$.dynamodb.Keys.order_id.S>,\n'
        '  "eventID": <$.eventID>\n'
        "}"
    )
    assert pipes.render_template(tree, indent=None) == (
        '{"orderDetails":{"status":<$.dynamodb.NewImage.status.S>,"total":<$.dynamodb.NewImage.total.N>},'
        '"orderID":<$.dynamodb.Keys.order_id.S>,"eventID":<$.eventID>}'
    )


def test_typed_fields_carry_the_whole_attribute_value_and_list_paths_enter_l() -> None:
    # GIVEN a typed field and a list path  THEN their JSON paths
    typed = Field(
        "profile", "attribute", "M", attribute=AttrPath.parse("profile"), image="old", carry="typed"
    )
    listed = attr("firstSku", "items[0].sku")
    assert typed.json_path == "$.dynamodb.OldImage.profile"
    assert listed.json_path == "$.dynamodb.NewImage.items.L[0].M.sku.S"


@pytest.mark.parametrize("name", ["orders", "customers", "order_items"])
def test_every_placeholder_is_unquoted_and_the_template_is_json_once_filled(model: Model, name: str) -> None:
    # GIVEN a bundled entity's template
    e = entity(model, name)
    text = pipes.input_template(e)

    # THEN no placeholder sits inside quotes (facts 1.3: a quoted object loses its quotes)
    assert '"<' not in text and '>"' not in text
    placeholders = PLACEHOLDER.findall(text)
    assert sorted(p[1:-1] for p in placeholders) == sorted(f.json_path for f in e.fields)

    # AND with every placeholder replaced by a JSON value it parses to the nested field names
    filled = json.loads(PLACEHOLDER.sub("null", text))
    flat: list[str] = []

    def walk(node: object, prefix: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{prefix}.{k}" if prefix else k)
        else:
            flat.append(prefix)

    walk(filled, "")
    assert sorted(flat) == sorted(f.name for f in e.fields)


def test_a_template_over_the_limit_pretty_falls_back_to_compact(model: Model) -> None:
    # GIVEN an entity with enough fields that the pretty template exceeds 8192 characters
    # but the compact one does not
    base = entity(model, "orders")
    fields = tuple(attr(f"f{i:03d}", f"a{i}") for i in range(215))
    big = replace(base, fields=fields)
    tree = pipes.template_tree(fields)
    pretty, compact = pipes.render_template(tree), pipes.render_template(tree, indent=None)
    assert len(pretty) > PIPES_TEMPLATE_CHARS >= len(compact)

    # WHEN the template is chosen
    text = pipes.input_template(big)

    # THEN it is the compact form, which fits
    assert text == compact
    assert "\n" not in text


def test_a_small_template_stays_pretty(model: Model) -> None:
    # GIVEN orders  WHEN its template is chosen  THEN the indented form, within the limit
    text = pipes.input_template(entity(model, "orders"))
    assert text.startswith("{\n  ")
    assert len(text) <= PIPES_TEMPLATE_CHARS


# --- filters -------------------------------------------------------------------------------


def test_orders_compiles_to_the_seed_articles_exact_pattern(model: Model) -> None:
    # GIVEN orders  WHEN its filter compiles  THEN exactly the seed article's pattern
    patterns = pipes.filter_patterns(entity(model, "orders"))
    assert [pipes.pattern_text(p) for p in patterns] == [SEED_PATTERN]


def test_new_image_conditions_leave_remove_records_in_a_pattern_of_their_own(model: Model) -> None:
    # GIVEN order_items: all event names, one condition on the new image
    patterns = pipes.filter_patterns(entity(model, "order_items"))

    # THEN INSERT/MODIFY need the attribute; REMOVE (no new image: facts 1.8) passes unconditioned
    assert patterns == [
        {"eventName": ["INSERT", "MODIFY"], "dynamodb": {"NewImage": {"sku": {"S": [{"exists": True}]}}}},
        {"eventName": ["REMOVE"]},
    ]


def test_new_and_old_image_conditions_split_every_event_name(model: Model) -> None:
    # GIVEN a condition on each image
    base = entity(model, "order_items")
    flt = replace(
        base.filter,
        event_names=("INSERT", "MODIFY", "REMOVE"),
        require_attributes=(
            Condition(AttrPath.parse("sku"), "S", "new", ()),
            Condition(AttrPath.parse("meta.rev"), "N", "old", ()),
        ),
    )

    # WHEN compiled
    patterns = pipes.filter_patterns(replace(base, filter=flt))

    # THEN INSERT sees only the new image, REMOVE only the old one, MODIFY both
    new = {"NewImage": {"sku": {"S": [{"exists": True}]}}}
    old = {"OldImage": {"meta": {"M": {"rev": {"N": [{"exists": True}]}}}}}
    assert patterns == [
        {"eventName": ["INSERT"], "dynamodb": new},
        {"eventName": ["MODIFY"], "dynamodb": {**new, **old}},
        {"eventName": ["REMOVE"], "dynamodb": old},
    ]


def test_outbox_event_types_filter_the_new_image(model: Model) -> None:
    # GIVEN customers (outbox id and types)  WHEN compiled  THEN new-image conditions, REMOVE apart
    patterns = pipes.filter_patterns(entity(model, "customers"))
    outbox = {
        "id": {"S": [{"exists": True}]},
        "type": {"S": ["customer.registered", "customer.updated", "customer.status_changed"]},
    }
    assert patterns == [
        {"eventName": ["INSERT", "MODIFY"], "dynamodb": {"NewImage": {"outbox": {"M": outbox}}}},
        {"eventName": ["REMOVE"]},
    ]


def test_the_and_pattern_is_merged_into_every_generated_pattern(model: Model) -> None:
    # GIVEN an and_pattern  WHEN compiled  THEN each generated pattern carries it
    base = entity(model, "order_items")
    tenant = {"dynamodb": {"Keys": {"order_id": {"S": [{"prefix": "acme#"}]}}}}
    patterns = pipes.filter_patterns(replace(base, filter=replace(base.filter, and_pattern=tenant)))
    assert [p["dynamodb"]["Keys"] for p in patterns] == [tenant["dynamodb"]["Keys"]] * 2
    assert patterns[0]["dynamodb"]["NewImage"] == {"sku": {"S": [{"exists": True}]}}


def test_an_and_pattern_contradicting_a_generated_value_conflicts(model: Model) -> None:
    # GIVEN an and_pattern narrowing eventName  WHEN compiled  THEN PatternConflict names it
    base = entity(model, "orders")
    flt = replace(base.filter, and_pattern={"eventName": ["INSERT"]})
    with pytest.raises(pipes.PatternConflict) as exc:
        pipes.filter_patterns(replace(base, filter=flt))
    assert str(exc.value) == "eventName"


def test_or_patterns_are_appended_as_copies(model: Model) -> None:
    # GIVEN an escape-hatch pattern
    base = entity(model, "orders")
    extra = {"eventName": ["REMOVE"], "userIdentity": {"type": ["Service"]}}
    e = replace(base, filter=replace(base.filter, or_patterns=(extra,)))

    # WHEN compiled and the result is changed
    patterns = pipes.filter_patterns(e)
    patterns[1]["eventName"].append("INSERT")

    # THEN it came after the generated pattern, and the model was not touched
    assert pipes.pattern_text(patterns[0]) == SEED_PATTERN
    assert extra == {"eventName": ["REMOVE"], "userIdentity": {"type": ["Service"]}}


def test_merge_pattern_is_a_deep_and_that_refuses_two_value_lists() -> None:
    # GIVEN two fragments  WHEN merged  THEN a deep AND, the inputs untouched, conflicts refused
    base = {"a": {"b": ["x"]}, "c": ["y"]}
    assert pipes.merge_pattern(base, {"a": {"d": ["z"]}, "c": ["y"]}) == {
        "a": {"b": ["x"], "d": ["z"]},
        "c": ["y"],
    }
    assert base == {"a": {"b": ["x"]}, "c": ["y"]}
    with pytest.raises(pipes.PatternConflict, match=r"^a\.b$"):
        pipes.merge_pattern(base, {"a": {"b": ["w"]}})


def test_pattern_text_is_compact_with_sorted_keys() -> None:
    # GIVEN a pattern  WHEN serialised for AWS  THEN compact, sorted, UTF-8 kept
    assert (
        pipes.pattern_text({"b": ["é"], "a": {"y": [1], "x": [True]}})
        == '{"a":{"x":[true],"y":[1]},"b":["é"]}'
    )
