"""Structural validation: the JSON Schemas and the located, actionable messages made from them."""

from __future__ import annotations

import copy
import random
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from generator import schema
from generator.diagnostics import Diagnostic
from generator.schemacheck import compile_check
from generator.yamlload import LoadError, load_file, load_yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
BROKEN = REPO_ROOT / "tests" / "broken"

# A small valid mapping; tests change one line of it.
VALID = """\
entity: orders
source:
  table: orders
  partition_key: {name: order_id, type: S}
message:
  fields:
    eventID: {meta: eventID}
    orderID: {key: order_id}
    status: {attribute: order_details.status, type: S}
target:
  tables:
    - table: orders
      key: [order_id]
      columns:
        order_id: {field: orderID, type: string}
        status: {field: status, type: string}
events:
  rules:
    - on: order.created
      do: [{action: upsert, table: orders}]
"""


def problems(text: str, kind: str = "mapping") -> list[Diagnostic]:
    return schema.validate(load_yaml(text, "mappings/x.yaml"), kind)


def summary(diags: list[Diagnostic]) -> list[tuple[int, int, str, str]]:
    return [(d.line, d.col, d.path, d.message) for d in diags]


@pytest.mark.parametrize("kind", ["mapping", "project"])
def test_the_shipped_schemas_are_valid_draft_2020_12(kind: str) -> None:
    # GIVEN a shipped schema  WHEN checked against the metaschema  THEN it is valid
    Draft202012Validator.check_schema(schema.load_schema(kind))


def _properties(node: Any, defs: dict[str, Any], where: str = "") -> list[tuple[str, dict[str, Any]]]:
    """Every property schema, with a `$ref` resolved to its definition (local keys win)."""
    out = []
    if isinstance(node, dict):
        for name, sub in node.get("properties", {}).items():
            ref = sub.get("$ref", "").rsplit("/", 1)[-1]
            out.append((f"{where}.{name}", {**defs.get(ref, {}), **sub}))
        for key, sub in node.items():
            out.extend(_properties(sub, defs, f"{where}/{key}"))
    elif isinstance(node, list):
        for i, sub in enumerate(node):
            out.extend(_properties(sub, defs, f"{where}[{i}]"))
    return out


@pytest.mark.parametrize("kind", ["mapping", "project"])
def test_every_property_is_documented_for_editors(kind: str) -> None:
    # GIVEN the schema the editor reads (build/schemas/*.json)
    loaded = schema.load_schema(kind)
    props = _properties(loaded, loaded.get("$defs", {}))

    # THEN every property has a description and an example, so hover help is never empty
    undocumented = [where for where, sub in props if "description" not in sub]
    without_examples = [where for where, sub in props if "examples" not in sub]
    assert props
    assert not undocumented
    assert not without_examples


@pytest.mark.parametrize("name", ["orders.yaml", "customers.yaml", "order_items.yaml"])
def test_the_bundled_mappings_are_structurally_valid(name: str) -> None:
    # GIVEN a bundled mapping  WHEN validated  THEN no structural problem
    doc = load_file(REPO_ROOT / "mappings" / name, f"mappings/{name}")
    assert schema.validate(doc, "mapping") == []


def test_the_bundled_project_is_structurally_valid() -> None:
    # GIVEN the bundled project.yaml  WHEN validated  THEN no structural problem
    assert schema.validate(load_file(REPO_ROOT / "project.yaml", "project.yaml"), "project") == []


def test_the_small_mapping_used_below_is_valid() -> None:
    # GIVEN the base text of the tests below  WHEN validated  THEN it is clean
    assert problems(VALID) == []


def test_unknown_key_points_at_the_key_and_suggests_the_closest() -> None:
    # GIVEN a misspelt key inside a column
    text = VALID.replace("{field: status, type: string}", "{field: status, type: string, nulable: true}")

    # WHEN validated
    (diag,) = problems(text)

    # THEN it is located at the key and the hint names the right spelling first
    assert summary([diag]) == [(16, 47, "target.tables[0].columns.status.nulable", "unknown key 'nulable'")]
    assert diag.hint.startswith("did you mean 'nullable'? allowed here: const, default, description")


def test_wrong_types_say_what_was_expected_and_what_was_found() -> None:
    # GIVEN a string for a list and a number for an enum  WHEN validated  THEN both say what they are
    text = VALID.replace("key: [order_id]", "key: order_id").replace("type: S}\ntarget", "type: 5}\ntarget")
    diags = problems(text)
    assert summary(diags) == [
        (9, 53, "message.fields.status.type", "number 5 is not allowed"),
        (13, 12, "target.tables[0].key", "expected a list, got string 'order_id'"),
    ]


def test_a_trailing_newline_does_not_pass_an_anchored_pattern() -> None:
    # GIVEN an SQL identifier ending in a newline (Python's '$' matches before a final '\n')
    text = VALID.replace("- table: orders", '- table: "orders\\n"')

    # WHEN validated
    diags = problems(text)

    # THEN the identifier pattern refuses it, as an ECMA-262 pattern does
    assert summary(diags) == [
        (
            12,
            14,
            "target.tables[0].table",
            "string 'orders\\n' does not have the required form (a letter or '_', then letters, digits or '_')",
        )
    ]


@pytest.mark.parametrize("name", ["a-b", "1st", "x y", "é"])
def test_column_names_are_plain_identifiers_reported_at_the_key(name: str) -> None:
    # GIVEN a column whose name is not a plain SQL identifier
    text = VALID.replace("        status: {field: status", f'        "{name}": {{field: status')

    # WHEN validated
    (diag,) = problems(text)

    # THEN the diagnostic names the key itself, at the key
    assert (diag.line, diag.col, diag.path) == (16, 9, f"target.tables[0].columns.{name}")
    assert (
        diag.message
        == f"key {name!r} does not have the required form (a letter or '_', then letters, digits or '_')"
    )
    assert diag.code == "schema-key-name"


def test_an_over_long_identifier_is_reported_as_too_long() -> None:
    # GIVEN a 64-character table name  WHEN validated  THEN it is too long, not 'of the wrong form'
    long_name = "t" * 64
    (diag,) = problems(VALID.replace("- table: orders", f"- table: {long_name}"))
    assert diag.path == "target.tables[0].table"
    assert diag.message == f"string '{long_name}' is 64 characters, longer than the 63 allowed"
    assert "at most 63 characters" in diag.hint


@pytest.mark.parametrize("path", ["a..b", "a b", "x.y[z]", "a.", ".a", "a[1", "a[-1]"])
def test_attribute_paths_are_checked_by_the_schema(path: str) -> None:
    # GIVEN a field reading an attribute path Pipes cannot address
    (diag,) = problems(VALID.replace("attribute: order_details.status", f'attribute: "{path}"'))

    # THEN the schema refuses it at the value, with the form in the hint (and nothing else
    # is reported, so the field's users do not cascade into "not in the message")
    assert (diag.line, diag.path) == (9, "message.fields.status.attribute")
    assert (
        diag.message
        == f"string {path!r} does not have the required form (names of letters, digits, '_' and '-' joined by '.', each optionally followed by list indexes such as [0])"
    )
    assert "what a JSON path of a Pipes input transformer can address" in diag.hint


@pytest.mark.parametrize("path", ["a", "a_b-c", "items[0].sku", "a.b[2][3].c"])
def test_valid_attribute_paths_pass(path: str) -> None:
    # GIVEN an addressable attribute path  WHEN validated  THEN it passes
    assert problems(VALID.replace("attribute: order_details.status", f'attribute: "{path}"')) == []


def test_a_field_with_two_sources_is_one_clear_error() -> None:
    # GIVEN a field with key and meta  WHEN validated  THEN one error names both
    (diag,) = problems(VALID.replace("orderID: {key: order_id}", "orderID: {key: order_id, meta: eventID}"))
    assert (diag.path, diag.message) == ("message.fields.orderID", "gives 'key' and 'meta' together")
    assert diag.hint == "keep exactly one of attribute, key, meta"


def test_a_field_with_no_source_is_one_clear_error() -> None:
    # GIVEN a field with neither attribute, key nor meta  WHEN validated  THEN one error lists them
    (diag,) = problems(VALID.replace("orderID: {key: order_id}", "orderID: {type: S}"))
    assert (diag.path, diag.message) == ("message.fields.orderID", "gives none of attribute, key, meta")


def test_an_attribute_without_its_type_names_the_missing_key() -> None:
    # GIVEN attribute without type  WHEN validated  THEN the missing companion is named
    (diag,) = problems(VALID.replace("{attribute: order_details.status, type: S}", "{attribute: status}"))
    assert (diag.path, diag.message) == ("message.fields.status", "'attribute' needs 'type' too")


def test_inside_a_one_of_the_branch_that_fits_the_value_reports_its_own_errors() -> None:
    # GIVEN `do:` as a list whose action misspells a key (the other form is the string "ignore")
    text = VALID.replace("{action: upsert, table: orders}", "{action: upsert, tabel: orders}")

    # WHEN validated
    diags = problems(text)

    # THEN the list branch's errors are reported where they are, not a raw oneOf message
    assert summary(diags) == [
        (20, 29, "events.rules[0].do[0].tabel", "unknown key 'tabel'"),
        (20, 12, "events.rules[0].do[0]", "missing required key 'table'"),
    ]
    assert diags[0].hint.startswith("did you mean 'table'?")


def test_a_list_item_of_the_wrong_type_is_located_at_the_item() -> None:
    # GIVEN a number in an 'on' list  WHEN validated  THEN the error points at that item
    (diag,) = problems(VALID.replace("- on: order.created", "- on: [order.created, 7]"))
    assert summary([diag]) == [(19, 27, "events.rules[0].on[1]", "expected a string, got number 7")]


def test_yes_for_a_boolean_explains_yaml_12() -> None:
    # GIVEN managed: yes  WHEN validated  THEN the hint explains YAML 1.2 booleans
    (diag,) = problems(
        VALID.replace("  table: orders\n  partition", "  table: orders\n  managed: yes\n  partition")
    )
    assert diag.message == "expected true or false, got string 'yes'"
    assert diag.hint == "mapping files use YAML 1.2: write true or false"


def test_a_queue_name_over_80_characters_is_too_long() -> None:
    # GIVEN an 81-character queue name  WHEN validated  THEN too long, citing the SQS limit
    name = "q" * 76 + ".fifo"
    (diag,) = problems(VALID + f"pipeline:\n  queue:\n    name: {name}\n")
    assert diag.path == "pipeline.queue.name"
    assert diag.message == f"string '{name}' is 81 characters, longer than the 80 allowed"
    assert "(Amazon SQS queue name rules)" in diag.hint


def test_project_problems_use_the_project_schema() -> None:
    # GIVEN a project file with two problems  WHEN validated  THEN both, from the project schema
    diags = problems("name: Legacy Sync\nregion: ap-northeast-1\nlambda: {memory_mb: 64}\n", "project")
    assert summary(diags) == [
        (3, 21, "lambda.memory_mb", "64 is below the minimum 128"),
        (
            1,
            7,
            "name",
            "string 'Legacy Sync' does not have the required form (a lower-case letter, then up to 39 lower-case letters, digits or '-')",
        ),
    ]


# --- the compiled yes/no check gives jsonschema's verdict ---------------------------------
#
# schema.validate asks generator/schemacheck.py first and runs jsonschema only when it says
# no; a wrong "yes" would hide errors, a wrong "no" would only cost time. Both must agree.


def _documents(kind: str) -> list[Any]:
    if kind == "mapping":
        paths = sorted((REPO_ROOT / "mappings").glob("*.yaml")) + sorted(BROKEN.glob("*.yaml"))
    else:
        paths = [REPO_ROOT / "project.yaml", *sorted((BROKEN / "project").glob("*.yaml"))]
    docs = []
    for path in paths:
        try:
            docs.append(load_file(path, path.name).data)
        except LoadError:
            continue  # a YAML syntax case: nothing for the schema to check
    return docs


def _words(node: Any, out: set[str]) -> set[str]:
    """Property names, enum options and examples of a schema: likely-valid replacement values."""
    if isinstance(node, dict):
        out.update(node.get("properties", {}))
        out.update(v for v in node.get("enum", []) + node.get("examples", []) if isinstance(v, str))
        for value in node.values():
            _words(value, out)
    elif isinstance(node, list):
        for value in node:
            _words(value, out)
    return out


def _mutate(rng: random.Random, data: Any, words: list[str]) -> Any:
    """`data` with one value replaced, one key removed, renamed or added, or one item repeated."""
    data = copy.deepcopy(data)
    spots: list[tuple[Any, Any]] = []

    def walk(node: Any) -> None:
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        for key, value in items:
            spots.append((node, key))
            walk(value)

    walk(data)
    if not spots:
        return data
    parent, key = rng.choice(spots)
    values = [
        None,
        True,
        False,
        0,
        1,
        -1,
        11,
        1.0,
        2.5,
        "",
        "x",
        "orders\n",
        "a" * 90,
        [],
        {},
        [1, 1],
        *words,
    ]
    action = rng.randrange(4)
    if action == 0 or not isinstance(parent, dict):
        if action == 3 and isinstance(parent, list):
            parent.append(copy.deepcopy(parent[key]))
        else:
            parent[key] = copy.deepcopy(rng.choice(values))
    elif action == 1:
        del parent[key]
    elif action == 2:
        parent[rng.choice(words)] = parent.pop(key)
    else:
        parent[rng.choice(words)] = copy.deepcopy(rng.choice([parent[key], *values]))
    return data


@pytest.mark.parametrize("kind", ["mapping", "project"])
def test_the_compiled_check_agrees_with_jsonschema(kind: str) -> None:
    # GIVEN the bundled and broken documents, and 600 mutations of them (a fixed seed)
    rng = random.Random(1127)
    docs = _documents(kind)
    words = sorted(_words(schema.load_schema(kind), set()))
    samples = docs + [_mutate(rng, rng.choice(docs), words) for _ in range(600)]
    samples += [_mutate(rng, sample, words) for sample in samples[-200:]]

    # WHEN each is checked both ways  THEN the verdicts are the same, and both kinds occur
    validator = schema._validator(kind)
    check = compile_check(validator)
    verdicts = [validator.is_valid(sample) for sample in samples]
    assert [check(sample) for sample in samples] == verdicts
    assert 50 < sum(verdicts) < len(samples) - 50


def test_the_compiled_check_refuses_keywords_it_cannot_mirror() -> None:
    # GIVEN a schema using unevaluatedProperties  WHEN compiled  THEN a loud error, not a guess
    with pytest.raises(ValueError, match="unevaluatedProperties"):
        compile_check(Draft202012Validator({"type": "object", "unevaluatedProperties": False}))


def test_a_valid_document_never_reaches_jsonschema(monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN jsonschema's error iterator made to fail
    def fail(*args: object) -> None:
        raise AssertionError("iter_errors called for a valid document")

    monkeypatch.setattr(type(schema._validator("mapping")), "iter_errors", fail)

    # WHEN a valid mapping is validated  THEN the compiled check alone accepts it
    assert problems(VALID) == []


def test_every_pattern_of_the_schemas_is_explained_in_words() -> None:
    # GIVEN every `pattern` of the shipped schemas
    from generator.schema import PATTERN_WORDS, load_schema

    def patterns(node: object) -> list[str]:
        if isinstance(node, dict):
            own = [node["pattern"]] if isinstance(node.get("pattern"), str) else []
            return own + [p for v in node.values() for p in patterns(v)]
        if isinstance(node, list):
            return [p for v in node for p in patterns(v)]
        return []

    found = {p for kind in ("mapping", "project", "mapping-test") for p in patterns(load_schema(kind))}
    # THEN a refusal can say the required form in words, not as a regular expression
    assert found - PATTERN_WORDS.keys() == set()
