"""EventBridge Pipes artifacts: filter patterns and the input template.

The input template is its own small language, not JSON (AWS: eb-pipes-input-transformation): placeholders such as
`<$.dynamodb.Keys.order_id.S>` sit unquoted where a JSON value goes. It is modelled as a tree
and rendered by `render_template`; it is never produced by json.dumps plus string surgery.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from typing import Any

from generator.model import IMAGE_KEY, Entity, Field
from generator.pipeunits import DISCRIMINATOR_FIELD, PipeUnit
from runtime.aws_limits import PIPES_TEMPLATE_CHARS


@dataclass(frozen=True)
class Placeholder:
    """`<$.path>` placed unquoted.

    Unquoted is deliberate for every kind of value (AWS: eb-pipes-input-transformation): a string comes out as a JSON
    string with the quotes added by Pipes, an object or array as JSON, a boolean as a literal.
    A quoted placeholder ("<$.x>") splices raw text and strips the quotes of objects, so a
    DynamoDB map would arrive as {k:v} and an unescaped '"' in a string breaks the JSON.
    """

    path: str


@dataclass(frozen=True)
class TObject:
    entries: tuple[tuple[str, TObject | Placeholder], ...]


def template_tree(fields: tuple[Field, ...]) -> TObject:
    """Nest dotted field names (orderDetails.status) into objects, keeping declaration order."""

    def build(items: list[tuple[tuple[str, ...], Field]]) -> TObject:
        entries: list[tuple[str, TObject | Placeholder]] = []
        groups: dict[str, list[tuple[tuple[str, ...], Field]]] = {}
        order: list[str] = []
        for parts, fld in items:
            head = parts[0]
            if head not in groups:
                groups[head] = []
                order.append(head)
            groups[head].append((parts[1:], fld))
        for head in order:
            members = groups[head]
            leaf = [f for rest, f in members if not rest]
            if leaf:
                entries.append((head, Placeholder(leaf[0].json_path)))
            else:
                entries.append((head, build(members)))
        return TObject(tuple(entries))

    return build([(f.parts, f) for f in fields])


def render_template(node: TObject | Placeholder, *, indent: int | None = 2, _level: int = 0) -> str:
    """Render the template text exactly as Pipes receives it."""
    if isinstance(node, Placeholder):
        return f"<{node.path}>"
    if not node.entries:
        return "{}"
    if indent is None:
        inner = ",".join(f"{json.dumps(k)}:{render_template(v, indent=None)}" for k, v in node.entries)
        return "{" + inner + "}"
    pad = " " * (indent * (_level + 1))
    inner = ",\n".join(
        f"{pad}{json.dumps(k)}: {render_template(v, indent=indent, _level=_level + 1)}"
        for k, v in node.entries
    )
    return "{\n" + inner + "\n" + " " * (indent * _level) + "}"


class FieldConflict(ValueError):
    """Two entities of one shared Pipe give one message field different sources."""

    def __init__(self, name: str, first: Entity, other: Entity) -> None:
        super().__init__(name)
        self.name, self.first, self.other = name, first, other


def union_fields(unit: PipeUnit) -> tuple[Field, ...]:
    """Every field any member needs, once (members in name order, fields in declaration
    order). A name given two different sources is a FieldConflict (checks report it)."""
    seen: dict[str, tuple[Field, Entity]] = {}
    out: list[Field] = []
    for e in unit.members:
        for f in e.fields:
            prior = seen.get(f.name)
            if prior is None:
                seen[f.name] = (f, e)
                out.append(f)
            elif (prior[0].json_path, prior[0].type, prior[0].carry) != (f.json_path, f.type, f.carry):
                raise FieldConflict(f.name, prior[1], e)
    return tuple(out)


def discriminator_node(unit: PipeUnit) -> Placeholder | TObject | None:
    """Where a shared Pipe's message carries the discriminator: the key's string value, or the
    attribute's value in each image the stream carries (REMOVE records have only the old one)."""
    d = unit.discriminator
    if d is None:
        return None
    if d.kind == "key":
        return Placeholder(f"$.dynamodb.Keys.{d.name}.S")
    return TObject(
        tuple(
            (image, Placeholder(f"$.dynamodb.{IMAGE_KEY[image]}.{d.name}.S"))
            for image in ("new", "old")
            if image in unit.source.images
        )
    )


def unit_tree(unit: PipeUnit) -> TObject:
    """The template of a Pipe: its entity's fields, or every member's plus the discriminator."""
    if not unit.shared:
        return template_tree(unit.first.fields)
    tree = template_tree(union_fields(unit))
    node = discriminator_node(unit)
    if node is None:
        return tree
    return TObject(tree.entries + ((DISCRIMINATOR_FIELD, node),))


def unit_template(unit: PipeUnit) -> str:
    """Pretty when it fits the 8192-character limit, compact otherwise (checks report overflow)."""
    return _fit(unit_tree(unit))


def input_template(entity: Entity) -> str:
    """An entity's own template (of its own Pipe)."""
    return _fit(template_tree(entity.fields))


def _fit(tree: TObject) -> str:
    pretty = render_template(tree)
    if len(pretty) <= PIPES_TEMPLATE_CHARS:
        return pretty
    return render_template(tree, indent=None)


def _set_in(target: dict[str, Any], keys: list[str], value: Any) -> None:
    node = target
    for k in keys[:-1]:
        node = node.setdefault(k, {})
    node[keys[-1]] = value


class PatternConflict(ValueError):
    pass


def merge_pattern(base: dict[str, Any], extra: dict[str, Any], path: str = "") -> dict[str, Any]:
    """Deep-merge `extra` into a copy of `base` (AND); a field given two value lists conflicts."""
    out = copy.deepcopy(base)
    for key, value in extra.items():
        here = f"{path}.{key}" if path else key
        if key in out:
            if isinstance(out[key], dict) and isinstance(value, dict):
                out[key] = merge_pattern(out[key], value, here)
            elif out[key] != value:
                raise PatternConflict(here)
        else:
            out[key] = copy.deepcopy(value)
    return out


def filter_patterns(entity: Entity) -> list[dict[str, Any]]:
    """The Pipe's filters: a record passes when any pattern matches (AWS: eb-pipes-event-filtering).

    Conditions on the new image apply to INSERT and MODIFY records, conditions on the old
    image to MODIFY and REMOVE records (a record has no image it could not have: AWS: Streams),
    so event names are grouped by the conditions that apply to them. Leaves carry the
    DynamoDB type key, because `exists` only matches leaves (AWS: eb-pipes-event-filtering) and a pattern
    without the type key never matches (AWS: eb-pipes-event-filtering).
    """
    flt = entity.filter
    src = entity.source
    disc = src.discriminator
    new_conds: list[tuple[list[str], Any]] = []
    old_conds: list[tuple[list[str], Any]] = []
    if flt.require_outbox and src.outbox:
        new_conds.append(([src.outbox.attribute, "M", src.outbox.event_id, "S"], [{"exists": True}]))
    for cond in flt.require_attributes:
        target = new_conds if cond.image == "new" else old_conds
        target.append((cond.path.pattern_keys(cond.type), [{"exists": True}]))
    if flt.event_types and src.outbox:
        new_conds.append(([src.outbox.attribute, "M", src.outbox.event_type, "S"], list(flt.event_types)))

    groups: dict[str, list[str]] = {}
    conds_for: dict[str, list[tuple[str, list[str], Any]]] = {}
    for name in ("INSERT", "MODIFY", "REMOVE"):
        if name not in flt.event_names:
            continue
        conds: list[tuple[str, list[str], Any]] = []
        if name in ("INSERT", "MODIFY"):
            conds += [("NewImage", k, v) for k, v in new_conds]
        if name in ("MODIFY", "REMOVE"):
            conds += [("OldImage", k, v) for k, v in old_conds]
        if disc is not None and disc.kind == "key":
            # Keys are in every record; prefix matching is supported by Pipes (AWS: eb-pipes-event-filtering).
            conds.append(("Keys", [disc.name, "S"], [{"prefix": disc.value}]))
        elif disc is not None:
            # The entity type is read where the record has it: the new image, or the old one of a REMOVE.
            image = "OldImage" if name == "REMOVE" else "NewImage"
            conds.append((image, [disc.name, "S"], [disc.value]))
        signature = json.dumps(conds, sort_keys=True)
        groups.setdefault(signature, []).append(name)
        conds_for[signature] = conds

    patterns: list[dict[str, Any]] = []
    for signature, names in groups.items():
        # eventName is filterable in practice (facts 2.5: AWS samples and validated Lambda ESM tests).
        pattern: dict[str, Any] = {"eventName": names}
        for image, keys, value in conds_for[signature]:
            _set_in(pattern, ["dynamodb", image, *keys], value)
        if flt.and_pattern:
            pattern = merge_pattern(pattern, flt.and_pattern)
        patterns.append(pattern)
    patterns.extend(copy.deepcopy(p) for p in flt.or_patterns)
    return patterns


def _leaves(node: Any, path: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    if isinstance(node, dict):
        out: dict[tuple[str, ...], Any] = {}
        for k, v in node.items():
            out.update(_leaves(v, path + (k,)))
        return out
    return {path: node}


def _merge_one_leaf(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any] | None:
    """a OR b as one pattern, when they differ in the value list of exactly one leaf (the
    values of one field are OR'ed: AWS: eb-pipes-event-filtering); otherwise None."""
    la, lb = _leaves(a), _leaves(b)
    if la.keys() != lb.keys():
        return None
    differ = [k for k in la if la[k] != lb[k]]
    if len(differ) != 1 or not (isinstance(la[differ[0]], list) and isinstance(lb[differ[0]], list)):
        return None
    merged = copy.deepcopy(a)
    node = merged
    for k in differ[0][:-1]:
        node = node[k]
    node[differ[0][-1]] = la[differ[0]] + [v for v in lb[differ[0]] if v not in la[differ[0]]]
    return merged


def compact(patterns: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The same OR of patterns in fewer of them: two patterns that differ in one leaf's value
    list become one (the filter holds at most five: AWS: eb-pipes-event-filtering). Exact:
    `{a: [x], b: [1]} OR {a: [x], b: [2]}` is `{a: [x], b: [1, 2]}`."""
    out = [copy.deepcopy(p) for p in patterns]
    changed = True
    while changed:
        changed = False
        for i in range(len(out)):
            for j in range(i + 1, len(out)):
                merged = _merge_one_leaf(out[i], out[j])
                if merged is not None:
                    out[i] = merged
                    del out[j]
                    changed = True
                    break
            if changed:
                break
    return out


def unit_patterns(unit: PipeUnit) -> list[dict[str, Any]]:
    """A Pipe's filter: its entity's patterns, or the OR of every member's (each with its
    discriminator), compacted."""
    if not unit.shared:
        return filter_patterns(unit.first)
    return compact([p for e in unit.members for p in filter_patterns(e)])


def pattern_text(pattern: dict[str, Any]) -> str:
    """The pattern string as sent to AWS: compact, key order fixed."""
    return json.dumps(pattern, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
