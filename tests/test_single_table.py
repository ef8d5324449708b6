"""Single-table designs: the entities of one DynamoDB table told apart by a discriminator share
ONE Pipe (filter, template, queue, event source mapping); the runtime picks the entity by the
discriminator in the message. The bundled shop_* mappings, and broken ones with located errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from generator.cli import main
from generator.emit import pipes, registry
from generator.load import load
from generator.model import Model
from generator.output import render
from generator.pipeunits import DISCRIMINATOR_FIELD, pipe_units
from runtime.decode import DecodeError, entity_for, parse_sqs_record
from runtime.registry import parse_registry
from synctools.local.patterns import FilterSet

REPO_ROOT = Path(__file__).resolve().parent.parent
SHOP = ("shop_customers", "shop_orders", "shop_order_lines")


@pytest.fixture(scope="module")
def model() -> Model:
    loaded = load(REPO_ROOT)
    assert loaded.model is not None, loaded.diagnostics.render_text()
    return loaded.model


def _record(
    event: str, keys: dict[str, Any], new: dict[str, Any] | None, old: dict[str, Any] | None
) -> dict[str, Any]:
    ddb: dict[str, Any] = {"Keys": keys, "SequenceNumber": "100", "ApproximateCreationDateTime": 1700000000}
    if new is not None:
        ddb["NewImage"] = {**keys, **new}
    if old is not None:
        ddb["OldImage"] = {**keys, **old}
    return {
        "eventID": "e1",
        "eventName": event,
        "eventSourceARN": "arn:aws:dynamodb:x:1:table/shop/stream/s",
        "dynamodb": ddb,
    }


def _message(template: str, record: dict[str, Any], message_id: str = "m1") -> dict[str, Any]:
    """The SQS record the shared Pipe would send for a stream record (its template, routing)."""
    import tempfile

    from synctools.local.transform import PipeContext, PipeTarget, load_template

    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "t.txt"
        p.write_text(template, encoding="utf-8")
        target = PipeTarget(load_template(p), "$.dynamodb.Keys.PK.S", "$.eventID", PipeContext("shop-pipe"))
        entry = target.entry(record)
    return {
        "messageId": message_id,
        "body": entry.body,
        "attributes": {"MessageGroupId": entry.group_id},
        "eventSourceARN": "arn:aws:sqs:x:1:shop-sync.fifo",
    }


def test_the_three_shop_entities_share_one_pipe_queue_and_event_source_mapping(model: Model) -> None:
    # GIVEN the bundled mappings  WHEN their Pipes are formed
    shared = [u for u in pipe_units(model) if u.shared]
    # THEN the shop table has one shared Pipe carrying its three entities
    assert [(u.name, [e.name for e in u.members]) for u in shared] == [("shop_shared", sorted(SHOP))]
    unit = shared[0]
    # AND one filter pattern: the entities' patterns differ in the SK prefix only, so they merge
    patterns = pipes.unit_patterns(unit)
    assert patterns == [
        {
            "dynamodb": {
                "Keys": {"SK": {"S": [{"prefix": "PROFILE"}, {"prefix": "LINE#"}, {"prefix": "ORDER#"}]}}
            },
            "eventName": ["INSERT", "MODIFY", "REMOVE"],
        }
    ]
    # AND the Terraform holds one Pipe, one FIFO queue and one event source mapping for them
    files = render(model)
    tf = json.loads(files["terraform/shop_shared.tf.json"])["resource"]
    assert list(tf["aws_pipes_pipe"]) == ["shop_shared"]
    assert list(tf["aws_lambda_event_source_mapping"]) == ["shop_shared"]
    assert sorted(tf["aws_sqs_queue"]) == ["shop_shared", "shop_shared_dlq", "shop_shared_pipe_dlq"]
    assert tf["aws_pipes_pipe"]["shop_shared"]["target_parameters"]["sqs_queue_parameters"] == {
        "message_group_id": "$.dynamodb.Keys.PK.S",
        "message_deduplication_id": "$.eventID",
    }
    for name in SHOP:
        own = json.loads(files[f"terraform/{name}.tf.json"])
        assert "aws_pipes_pipe" not in own.get("resource", {})
        # AND each entity's outputs point at the shared resources
        assert own["output"][f"{name}_queue_url"]["value"] == "${aws_sqs_queue.shop_shared.url}"
        # AND its README says it shares the Pipe, and how its items are told apart
        readme = files[f"entities/{name}/README.md"]
        assert "shared by every entity of table `shop`" in readme and "SK starts with" in readme
        assert files[f"entities/{name}/input-template.txt"] == files["pipes/shop_shared/input-template.txt"]
    # AND the template carries the discriminator under a name no mapping field can have
    assert f'"{DISCRIMINATOR_FIELD}": <$.dynamodb.Keys.SK.S>' in files["pipes/shop_shared/input-template.txt"]


def test_validate_no_longer_warns_about_stream_readers_on_the_shop_table(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # GIVEN the bundled project  WHEN validated
    assert main(["validate", "--root", str(REPO_ROOT)]) == 0
    err = capsys.readouterr().err
    # THEN three entities on one table are one reader of its stream
    assert "stream-readers" not in err and "Pipes read the stream of 'shop'" not in err


def test_the_runtime_picks_the_entity_by_the_discriminator_in_the_message(model: Model) -> None:
    # GIVEN the registry and the shared Pipe's template as build/ holds them
    reg = parse_registry(json.loads(json.dumps(registry.registry(model))))
    text = render(model)["pipes/shop_shared/input-template.txt"]

    def message(record: dict[str, Any]) -> dict[str, Any]:
        return _message(text, record)

    keys = {"PK": {"S": "ORDER#o-1"}, "SK": {"S": "LINE#3"}}
    # WHEN a line's INSERT and REMOVE arrive  THEN both are order lines
    for rec in (
        _record("INSERT", keys, {"order_id": {"S": "o-1"}}, None),
        _record("REMOVE", keys, None, {"order_id": {"S": "o-1"}}),
    ):
        assert entity_for(parse_sqs_record(message(rec)), reg).name == "shop_order_lines"
    # AND an order item of the same partition is an order
    order = _record("MODIFY", {"PK": {"S": "ORDER#o-1"}, "SK": {"S": "ORDER#o-1"}}, {}, {})
    assert entity_for(parse_sqs_record(message(order)), reg).name == "shop_orders"
    # AND a message whose discriminator matches no entity (the Pipe would have dropped it) is
    # refused permanently, naming the value and the prefixes
    stray = _record("INSERT", {"PK": {"S": "ORDER#o-1"}, "SK": {"S": "NOTE#1"}}, {}, None)
    with pytest.raises(DecodeError, match=r"key SK \('NOTE#1'\) matches no entity's prefix"):
        entity_for(parse_sqs_record(message(stray)), reg)


def test_an_attribute_discriminator_is_read_from_the_new_image_or_the_old_one_of_a_remove() -> None:
    # GIVEN a shared queue told apart by attribute entity_type
    from runtime.registry import SharedQueueSpec

    spec = SharedQueueSpec(
        "q.fifo", "attribute", "entity_type", DISCRIMINATOR_FIELD, (("customer", "c"), ("order", "o"))
    )
    # THEN the new image wins, a REMOVE's old image serves, and a missing attribute matches nothing
    assert spec.entity_name({DISCRIMINATOR_FIELD: {"new": "order", "old": "customer"}}) == ("o", "order")
    assert spec.entity_name({DISCRIMINATOR_FIELD: {"new": "", "old": "customer"}}) == ("c", "customer")
    assert spec.entity_name({DISCRIMINATOR_FIELD: {"new": "", "old": ""}}) == (None, "")
    assert spec.entity_name({}) == (None, "")


def test_compacting_patterns_keeps_exactly_the_records_they_match() -> None:
    # GIVEN patterns of three entities that differ in the discriminator (and one that differs more)
    import itertools

    base = {"eventName": ["INSERT", "MODIFY"]}
    originals = [
        {**base, "dynamodb": {"NewImage": {"entity_type": {"S": [v]}}}} for v in ("customer", "order", "line")
    ] + [{"eventName": ["REMOVE"], "dynamodb": {"OldImage": {"entity_type": {"S": ["order"]}}}}]
    compacted = pipes.compact(originals)
    # THEN fewer patterns
    assert len(compacted) == 2
    # AND every record is matched by the compacted filter exactly when by the original one
    with_filters = [FilterSet(p) for p in (originals, compacted)]
    for event, image, value in itertools.product(
        ("INSERT", "MODIFY", "REMOVE"), ("NewImage", "OldImage"), ("customer", "order", "line", "other", None)
    ):
        item = {} if value is None else {"entity_type": {"S": value}}
        rec = {"eventName": event, "dynamodb": {"Keys": {}, image: item}}
        assert with_filters[0].matches(rec) == with_filters[1].matches(rec), (event, image, value)


# --- broken single-table designs: located errors ----------------------------------------------------

MAPPING = """\
entity: {entity}
source:
  table: {table}
  managed: {managed}
  partition_key: {{name: PK, type: S}}
  sort_key: {{name: SK, type: {sk_type}}}
  stream_view_type: {view}
{discriminator}filter:
  event_names: [INSERT, MODIFY, REMOVE]
message:
  fields:
    eventID: {{meta: eventID}}
    eventName: {{meta: eventName}}
    sequenceNumber: {{meta: SequenceNumber}}
    pk: {{key: PK}}
    {extra_field}
target:
  tables:
    - table: {entity}
      key: [pk]
      columns:
        pk: {{field: pk, type: string, length: 64}}
      version: {{column: sync_version, field: sequenceNumber}}
events:
  type_from: [eventName]
  rules:
    - on: [INSERT, MODIFY]
      do: [{{action: upsert, table: {entity}}}]
    - on: REMOVE
      do: [{{action: delete, table: {entity}}}]
pipeline:
  queue: {{visibility_timeout_seconds: 180, max_receive_count: {mrc}}}
"""


def mapping(
    entity: str,
    discriminator: str | None,
    *,
    managed: bool = False,
    view: str = "NEW_AND_OLD_IMAGES",
    sk_type: str = "S",
    extra_field: str = "note: {attribute: note, type: S}",
    mrc: int = 5,
) -> str:
    return MAPPING.format(
        entity=entity,
        table="single",
        managed="true" if managed else "false",
        view=view,
        sk_type=sk_type,
        discriminator=f"  discriminator: {discriminator}\n" if discriminator else "",
        extra_field=extra_field,
        mrc=mrc,
    )


def validate(tmp_path: Path, capsys: pytest.CaptureFixture[str], files: dict[str, str]) -> list[str]:
    (tmp_path / "mappings").mkdir(parents=True)
    shutil.copy(REPO_ROOT / "project.yaml", tmp_path / "project.yaml")
    for name, text in files.items():
        (tmp_path / "mappings" / name).write_text(text, encoding="utf-8")
    code = main(["validate", "--root", str(tmp_path)])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if ": error: " in line]
    assert code == (1 if lines else 0), err
    return lines


def test_a_valid_attribute_design_validates(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # GIVEN three entities told apart by an attribute  WHEN validated  THEN no error
    assert (
        validate(
            tmp_path,
            capsys,
            {
                "a.yaml": mapping("a", "{attribute: kind, value: a}", managed=True),
                "b.yaml": mapping("b", "{attribute: kind, value: b}"),
                "c.yaml": mapping("c", "{attribute: kind, value: c}"),
            },
        )
        == []
    )


def test_an_entity_of_the_table_without_a_discriminator_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = validate(
        tmp_path,
        capsys,
        {
            "a.yaml": mapping("a", "{key: SK, prefix: 'A#'}", managed=True),
            "b.yaml": mapping("b", None),
        },
    )
    assert len(lines) == 1
    assert lines[0].startswith(
        "mappings/b.yaml:3:10: error: source.table: table 'single' is a single-table design (a declare a "
        "source.discriminator), but this mapping declares none"
    )


def test_overlapping_discriminators_are_errors_at_each_value(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = validate(
        tmp_path,
        capsys,
        {
            "a.yaml": mapping("a", "{key: SK, prefix: 'ORDER#'}", managed=True),
            "b.yaml": mapping("b", "{key: SK, prefix: 'ORDER#LINE#'}"),
        },
    )
    assert [line.split(" - ")[0] for line in lines] == [
        "mappings/b.yaml:8:36: error: source.discriminator.prefix: items whose key SK starts with "
        "'ORDER#LINE#' also match a's discriminator (key SK starts with 'ORDER#', mappings/a.yaml): "
        "an item must belong to one entity"
    ]
    lines = validate(
        tmp_path / "2",
        capsys,
        {
            "a.yaml": mapping("a", "{attribute: kind, value: x}", managed=True),
            "b.yaml": mapping("b", "{attribute: kind, value: x}"),
        },
    )
    assert sorted(line.split(": error: ")[0] for line in lines) == [
        "mappings/a.yaml:8:43",
        "mappings/b.yaml:8:43",
    ]
    assert all(
        "source.discriminator.value: items whose attribute kind = 'x' also match" in line for line in lines
    )


def test_other_broken_designs_are_located(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lines = validate(
        tmp_path / "1",
        capsys,
        {
            "a.yaml": mapping("a", "{key: SK, prefix: 'A#'}", managed=True),
            "b.yaml": mapping("b", "{attribute: kind, value: b}"),
            # a setting and a field source that differ from the first entity's
            "c.yaml": mapping(
                "c", "{key: SK, prefix: 'C#'}", mrc=6, extra_field="note: {attribute: remark, type: S}"
            ),
        },
    )
    text = "\n".join(lines)
    assert (
        "mappings/b.yaml:8:18: error: source.discriminator: the entities of table 'single' share one Pipe and must be told apart one way: this one by attribute kind, mappings/a.yaml by key SK"
        in text
    )
    assert (
        "mappings/c.yaml:33:63: error: pipeline.queue.max_receive_count: pipeline.queue.max_receive_count is 6 here but 5 in mappings/a.yaml"
        in text
    )
    assert (
        "mappings/c.yaml:17:5: error: message.fields.note: message field 'note' is read from $.dynamodb.NewImage.remark here, but from $.dynamodb.NewImage.note in mappings/a.yaml"
        in text
    )
    # AND a number sort key cannot carry a prefix
    lines = validate(
        tmp_path / "3", capsys, {"a.yaml": mapping("a", "{key: SK, prefix: 'A#'}", managed=True, sk_type="N")}
    )
    assert any(
        line.startswith("mappings/a.yaml:8:24: error: source.discriminator.key: key 'SK' is of type N")
        for line in lines
    ), lines
    # AND an attribute read from an image the stream does not carry
    lines = validate(
        tmp_path / "2",
        capsys,
        {"a.yaml": mapping("a", "{attribute: kind, value: a}", managed=True, view="NEW_IMAGE")},
    )
    assert [line.split(" - ")[0] for line in lines] == [
        "mappings/a.yaml:8:30: error: source.discriminator.attribute: the discriminator attribute 'kind' of "
        "REMOVE records is read from the old image, which stream view NEW_IMAGE does not carry"
    ], lines


def test_a_message_held_back_on_the_shared_queue_names_its_entity(model: Model) -> None:
    from runtime.apply import apply_batch
    from runtime.config import make_engine
    from runtime.kinds import BLOCKED, FAILED
    from runtime.schema import build_metadata

    reg = parse_registry(json.loads(json.dumps(registry.registry(model))))
    text = render(model)["pipes/shop_shared/input-template.txt"]
    engine = make_engine("sqlite://")
    build_metadata(reg).create_all(engine)
    order_keys = {"PK": {"S": "ORDER#o-1"}, "SK": {"S": "ORDER#o-1"}}
    line_keys = {"PK": {"S": "ORDER#o-1"}, "SK": {"S": "LINE#1"}}
    # GIVEN an order whose total the column refuses, then a line of the same order (one group)
    poison = _record("INSERT", order_keys, {"order_id": {"S": "o-1"}, "total": {"N": "1.005"}}, None)
    line = _record("INSERT", line_keys, {"order_id": {"S": "o-1"}, "line_no": {"N": "1"}}, None)
    line["eventID"] = "e2"
    # WHEN the batch is applied
    result = apply_batch([_message(text, poison, "m1"), _message(text, line, "m2")], engine, reg)
    # THEN the order fails, and the line held back behind it is named an order line
    first, second = result.outcomes
    assert (first.status, first.entity) == (FAILED, "shop_orders")
    assert (second.status, second.entity) == (BLOCKED, "shop_order_lines")
