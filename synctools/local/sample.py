"""Realistic DynamoDB stream records for one registry entity (`ddb-sql-sync sample`).

Everything is derived from registry.json: the source table, its keys and stream view type,
the outbox attribute, where each message field lives in the record (its `source` JSON path),
and what the columns fed by each field accept (type, length, precision/scale, value map,
timestamp format, version counters). Nothing entity-specific is hard-coded.

Per item: an INSERT, then MODIFYs, then sometimes a REMOVE; items are interleaved like a real
stream (a window of live items), SequenceNumbers increase strictly, eventIDs are 32 hex
digits, ApproximateCreationDateTime is epoch seconds (a JSON number, AWS: Streams), N values
are strings, and Keys / NewImage / OldImage follow the stream view type (AWS: Streams). Every
record carries the full images, so the final state of each item can be computed from the
records alone. When the entity has an outbox, a few MODIFYs drop it (writes without a domain
event): the Pipe's filter skips those, as it would in AWS.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

INT_RANGES = {"smallint": 2**15 - 1, "integer": 2**31 - 1, "bigint": 2**63 - 1}
NAMES = (
    "Hanako",
    "Taro",
    "Yuki",
    "Aiko",
    "Kenji",
    "Sakura",
    "Emma",
    "Liam",
    "Noah",
    "Olivia",
    "Mateo",
    "Zoe",
)
SURNAMES = ("Yamada", "Sato", "Suzuki", "Tanaka", "Ito", "Smith", "Garcia", "Muller", "Rossi", "Dubois")
STATUSES = ("pending", "confirmed", "processing", "shipped", "delivered", "cancelled")
WORDS = ("alpha", "bravo", "cedar", "delta", "ember", "fjord", "grove", "harbor", "indigo", "juniper")
STREAM_LABEL = "2023-11-14T22:13:20.000"
SEQUENCE_BASE = 400_000_000_000_000_000_000  # 21 digits, like DynamoDB stream sequence numbers
EVENT_NAMES = ("INSERT", "MODIFY", "REMOVE")
_TOKEN = re.compile(r"^([A-Z]+)((?:\[\d+\])*)$")


class SampleError(ValueError):
    pass


@dataclass
class _Attr:
    """One item attribute some message field reads (shared by new- and old-image fields)."""

    tokens: tuple[str, ...]  # path below the image: ("order_details", "M", "total_amount", "N")
    leaf: str  # DynamoDB type of the value at the end of the path
    fields: list[str] = field(default_factory=list)
    columns: list[dict[str, Any]] = field(default_factory=list)
    role: str = "data"  # data | version | type | key_column


@dataclass
class _Item:
    keys: dict[str, Any]  # attribute name -> AttributeValue
    writes: list[str]  # planned event names (noise MODIFYs are "MODIFY-")
    values: dict[tuple[str, ...], Any] = field(default_factory=dict)  # attr tokens -> AttributeValue
    image: dict[str, Any] | None = None  # current item (None before INSERT / after REMOVE)
    revision: int = 0
    step: int = 0


def _canonical_number(d: Decimal) -> str:
    """DynamoDB returns numbers normalised: no trailing zeros, no exponent."""
    text = format(d.normalize(), "f")
    return text if text != "-0" else "0"


class Sampler:
    def __init__(
        self,
        registry: dict[str, Any],
        entity: str,
        *,
        seed: int = 0,
        region: str = "ap-northeast-1",
        account: str = "123456789012",
        window: int = 32,
        start_time: int = 1_700_000_000,
    ) -> None:
        entities = registry.get("entities", {})
        if entity not in entities:
            raise SampleError(
                f"entity {entity!r} is not in the registry (entities: {', '.join(sorted(entities))})"
            )
        self.entity = entity
        self.raw = entities[entity]
        source = self.raw.get("source")
        if not source or not source.get("table"):
            raise SampleError(
                f"the registry has no source table for {entity!r} (registry from an older generator?); "
                "rebuild with python -m generator build"
            )
        self.rng = random.Random(f"sample:{entity}:{seed}")
        self.region, self.account = region, account
        self.table = source["table"]
        self.view = source.get("stream_view_type", "NEW_AND_OLD_IMAGES")
        self.pk = source["partition_key"]
        self.sk = source.get("sort_key")
        self.outbox = source.get("outbox")
        self.arn = f"arn:aws:dynamodb:{region}:{account}:table/{self.table}/stream/{STREAM_LABEL}"
        self.window = max(1, window)
        self.time = start_time
        self.sequence = SEQUENCE_BASE + self.rng.randrange(10**9)
        self.key_counter = self.rng.randrange(1, 10**5)
        self.attrs = self._attributes()
        # A single-table design's entity: its items carry its discriminator (a key prefix, or
        # an attribute's value), or its Pipe would filter them out.
        self.discriminator: dict[str, Any] | None = self.raw.get("discriminator")
        self.insert_types, self.modify_types = self._event_types()
        self.key_attrs = {self.pk["name"]} | ({self.sk["name"]} if self.sk else set())

    # -- reading the registry -------------------------------------------------------------

    def _columns_of(self, name: str) -> list[dict[str, Any]]:
        out = []
        for table in self.raw.get("tables", {}).values():
            for col in table.get("columns", []):
                if name in col.get("fields", []):
                    out.append({**col, "_table": table})
        return out

    def _attributes(self) -> dict[tuple[str, ...], _Attr]:
        versions: dict[str, str] = {}
        key_fields: set[str] = set()
        for table in self.raw.get("tables", {}).values():
            v = table.get("version")
            if v:
                for f in v.get("fields", []):
                    versions[f] = v.get("kind", "integer")
            for col in table.get("columns", []):
                if col["name"] in table.get("key", []):
                    key_fields.update(col.get("fields", []))
        type_fields = set(self.raw.get("type_from", []))
        attrs: dict[tuple[str, ...], _Attr] = {}
        for name, spec in self.raw.get("fields", {}).items():
            if spec.get("kind") != "attribute":
                continue
            src = spec.get("source", "")
            m = re.match(r"^\$\.dynamodb\.(NewImage|OldImage)\.(.+)$", src)
            if not m:
                raise SampleError(f"field {name}: cannot read attribute path {src!r}")
            tokens = tuple(m.group(2).split("."))
            typed = spec.get("carry") == "typed"
            leaf = spec["type"] if typed or len(tokens) == 1 else tokens[-1]
            if not typed and len(tokens) > 1:
                tokens = tokens[:-1]  # the path ends in the type key; keep the attribute path
            attr = attrs.get(tokens)
            if attr is None:
                attr = attrs[tokens] = _Attr(tokens, leaf)
            attr.fields.append(name)
            attr.columns.extend(self._columns_of(name))
            if name in versions:
                attr.role = "version"
            elif name in type_fields and attr.role == "data":
                attr.role = "type"
            elif name in key_fields and attr.role == "data":
                attr.role = "key_column"
        return attrs

    def _event_types(self) -> tuple[list[str], list[str]]:
        rules = self.raw.get("rules", {})
        custom = sorted(t for t in rules if t not in EVENT_NAMES)
        if not custom:
            return [], []

        def creates(t: str) -> bool:
            return any(
                a["action"] in ("insert", "upsert")
                or (a["action"] == "update" and a.get("if_missing") == "upsert")
                for a in rules[t]
            )

        creating = [t for t in custom if creates(t)] or custom
        insert = creating[:1]
        modify = [t for t in custom if t not in insert] or insert
        return insert, modify

    # -- values ---------------------------------------------------------------------------

    def _key_value(self, spec: dict[str, Any], n: int, sort: bool = False) -> dict[str, Any]:
        if spec["type"] == "N":
            return {"N": str(n)}
        if spec["type"] == "B":
            return {"B": "".join(self.rng.choice("ABCDEFGHIJKLMNOP") for _ in range(8)) + "=="}
        d = self.discriminator
        if d and d["kind"] == "key" and d["name"] == spec["name"]:
            return {"S": f"{d['value']}{n:03d}" if sort else f"{d['value']}{n:08d}"}
        base = re.sub(r"_?id$", "", spec["name"], flags=re.I) or spec["name"]
        prefix = re.sub(r"[^A-Za-z]", "", base)[:3].upper() or "K"
        return {"S": f"{prefix}#{n:03d}" if sort else f"{prefix}-{n:08d}"}

    def _scalar(self, attr: _Attr, item: _Item) -> Any:
        """A Python value fitting every column the attribute feeds."""
        rng = self.rng
        cols = attr.columns
        maps = [c["map"] for c in cols if c.get("map") and c.get("on_unmapped", "fail") == "fail"]
        if maps:
            keys = set(maps[0])
            for m in maps[1:]:
                keys &= set(m)
            if not keys:
                raise SampleError(f"attribute {'.'.join(attr.tokens)}: its value maps share no key")
            return rng.choice(sorted(keys))
        col: dict[str, Any] = cols[0] if cols else {}
        ctype = col["type"] if col else None
        name = (attr.tokens[-1] + " " + " ".join(c["name"] for c in cols)).lower()
        length = min((c["length"] for c in cols if c.get("length")), default=None)
        if ctype in INT_RANGES:
            top = INT_RANGES[ctype]
            if any(w in name for w in ("quantity", "qty", "count")):
                return rng.randint(1, 12)
            return rng.randint(1, min(top, 999_999 if "id" in name else 1000))
        if ctype == "decimal":
            precision, scale = col.get("precision") or 12, col.get("scale") or 0
            top = min(10 ** (precision - scale) - 1, 99_999)
            places = min(scale, 2)
            return Decimal(rng.randint(1, top * 10**places)) / (10**places)
        if ctype == "float":
            return round(rng.uniform(0, 1000), 3)
        if ctype == "boolean":
            return rng.random() < 0.3
        if ctype in ("timestamp", "date"):
            t = self.time - rng.randrange(0, 86400 * 400)
            fmt = col.get("format")
            if ctype == "date":
                return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d")
            if fmt == "epoch_seconds" or (fmt is None and attr.leaf == "N"):
                return t
            if fmt == "epoch_millis":
                return t * 1000 + rng.randrange(1000)
            return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        if attr.leaf in ("N", "NS"):
            return rng.randint(0, 1000)
        if attr.leaf == "BOOL":
            return rng.random() < 0.3
        text = self._text(name, item)
        return text[:length] if length else text

    def _text(self, name: str, item: _Item) -> str:
        rng = self.rng
        if "email" in name:
            return f"{rng.choice(NAMES).lower()}.{rng.randrange(10**6)}@example.com"
        if "family" in name or "surname" in name or "last" in name:
            return rng.choice(SURNAMES)
        if "name" in name:
            return rng.choice(NAMES)
        if "status" in name or "state" in name:
            return rng.choice(STATUSES)
        if "sku" in name:
            return f"SKU-{rng.randrange(10**5):05d}"
        if "currency" in name:
            return rng.choice(("JPY", "USD", "EUR"))
        return f"{rng.choice(WORDS)}-{rng.randrange(10**4)}"

    def _document(self, depth: int = 0) -> dict[str, Any]:
        """A small map attribute (for json columns): {"plan": {"S": ..}, "points": {"N": ..}, ...}."""
        rng = self.rng
        doc: dict[str, Any] = {
            "plan": {"S": rng.choice(("free", "silver", "gold"))},
            "points": {"N": _canonical_number(Decimal(rng.randrange(10**5)) / 10)},
            "gift": {"BOOL": rng.random() < 0.5},
        }
        if rng.random() < 0.5:
            doc["tags"] = {"L": [{"S": rng.choice(WORDS)} for _ in range(rng.randint(1, 3))]}
        if depth == 0 and rng.random() < 0.3:
            doc["note"] = {"NULL": True}
        return doc

    def _attribute_value(self, attr: _Attr, item: _Item) -> Any:
        leaf = attr.leaf
        if attr.role == "version":
            return {leaf: str(item.revision)} if leaf in ("N", "S") else {"N": str(item.revision)}
        if leaf == "M":
            return {"M": self._document()}
        if leaf == "L":
            return {"L": [{"S": self.rng.choice(WORDS)} for _ in range(self.rng.randint(1, 3))]}
        if leaf == "NULL":
            return {"NULL": True}
        if leaf in ("SS", "NS"):
            n = self.rng.randint(1, 3)
            vals = sorted(
                {str(self.rng.randrange(1000)) if leaf == "NS" else self.rng.choice(WORDS) for _ in range(n)}
            )
            return {leaf: vals}
        if leaf == "B":
            return {"B": "AAECAwQ="}
        value = self._scalar(attr, item)
        if leaf == "BOOL":
            return {
                "BOOL": bool(value) if not isinstance(value, str) else value.lower() in ("true", "1", "yes")
            }
        if leaf == "N":
            if isinstance(value, bool):
                value = int(value)
            d = value if isinstance(value, Decimal) else Decimal(str(value))
            return {"N": _canonical_number(d)}
        if isinstance(value, bool):
            return {"S": "true" if value else "false"}
        if isinstance(value, Decimal):
            return {"S": _canonical_number(value)}
        return {"S": str(value)}

    # -- items ----------------------------------------------------------------------------

    def _plan(self) -> list[str]:
        rng = self.rng
        writes = ["INSERT"]
        for _ in range(rng.choice((0, 1, 1, 2, 2, 3, 3, 4, 5, 6, 8))):
            writes.append("MODIFY-" if self.outbox and rng.random() < 0.08 else "MODIFY")
        if rng.random() < 0.15:
            writes.append("REMOVE")
        return writes

    def _new_items(self) -> list[_Item]:
        self.key_counter += 1
        pk_value = self._key_value(self.pk, self.key_counter)
        if not self.sk:
            return [_Item({self.pk["name"]: pk_value}, self._plan())]
        lines = self.rng.randint(1, 4)
        return [
            _Item(
                {self.pk["name"]: pk_value, self.sk["name"]: self._key_value(self.sk, i, sort=True)},
                self._plan(),
            )
            for i in range(1, lines + 1)
        ]

    def _apply_write(
        self, item: _Item, kind: str
    ) -> tuple[str, dict[str, Any] | None, dict[str, Any] | None]:
        """Change the item for one write; returns (eventName, old image, new image)."""
        old = item.image
        if kind == "REMOVE":
            item.image = None
            return "REMOVE", old, None
        noise = kind == "MODIFY-"
        item.revision += 1
        event_type = ""
        if self.insert_types:
            event_type = self.rng.choice(self.insert_types if kind == "INSERT" else self.modify_types)
        box = self.outbox
        values = item.values
        for tokens, attr in self.attrs.items():
            if tokens[0] in self.key_attrs or (box and tokens[0] == box["attribute"]):
                continue  # keys come from Keys; the outbox is rewritten below
            if attr.role == "version":
                values[tokens] = self._attribute_value(attr, item)  # counts every write
            elif noise:
                continue
            elif attr.role == "type" and event_type:
                values[tokens] = {"S": event_type}
            elif tokens not in values or (attr.role != "key_column" and self.rng.random() < 0.35):
                # A target key fed by an attribute is an identity: stable for the item's life.
                values[tokens] = self._attribute_value(attr, item)
        image: dict[str, Any] = dict(item.keys)
        for tokens, value in values.items():
            _place(image, tokens, value)
        d = self.discriminator
        if d and d["kind"] == "attribute":
            image[d["name"]] = {"S": d["value"]}
        if box and not noise:
            # The Transactional Outbox: each domain write carries a new event in the item.
            image[box["attribute"]] = {
                "M": {
                    box["event_id"]: {"S": _hex(self.rng, 32)},
                    box["event_type"]: {"S": event_type or "changed"},
                }
            }
            for tokens, attr in self.attrs.items():
                if tokens[0] == box["attribute"] and tokens[-1] not in (box["event_id"], box["event_type"]):
                    value = {"S": event_type} if attr.role == "type" else self._attribute_value(attr, item)
                    _place(image, tokens, value)
        elif noise:
            image["touched_at"] = {"N": str(self.time)}  # an attribute no mapping reads
        item.image = image
        return ("INSERT" if kind == "INSERT" else "MODIFY"), old, image

    def _record(self, name: str, keys: dict[str, Any], old: Any, new: Any) -> dict[str, Any]:
        self.sequence += self.rng.randint(1, 40)
        if self.rng.random() < 0.1:
            self.time += 1
        dyn: dict[str, Any] = {"ApproximateCreationDateTime": self.time, "Keys": dict(keys)}
        if new is not None and self.view in ("NEW_IMAGE", "NEW_AND_OLD_IMAGES"):
            dyn["NewImage"] = new
        if old is not None and self.view in ("OLD_IMAGE", "NEW_AND_OLD_IMAGES"):
            dyn["OldImage"] = old
        dyn["SequenceNumber"] = str(self.sequence)
        dyn["SizeBytes"] = _size(keys) + _size(dyn.get("NewImage")) + _size(dyn.get("OldImage"))
        dyn["StreamViewType"] = self.view
        return {
            "eventID": _hex(self.rng, 32),
            "eventName": name,
            "eventVersion": "1.1",
            "eventSource": "aws:dynamodb",
            "awsRegion": self.region,
            "dynamodb": dyn,
            "eventSourceARN": self.arn,
        }

    def records(self, count: int) -> Iterator[dict[str, Any]]:
        """`count` stream records, items interleaved within a window of live items."""
        live: list[_Item] = []
        queued: list[_Item] = []
        emitted = 0
        while emitted < count:
            while len(live) < self.window:
                if not queued:
                    queued = self._new_items()
                live.append(queued.pop(0))
            i = self.rng.randrange(len(live))
            item = live[i]
            kind = item.writes[item.step]
            item.step += 1
            name, old, new = self._apply_write(item, kind)
            yield self._record(name, item.keys, old, new)
            emitted += 1
            if item.step >= len(item.writes):
                live[i] = live[-1]
                live.pop()


def _hex(rng: random.Random, n: int) -> str:
    return f"{rng.getrandbits(4 * n):0{n}x}"


def _size(av: Any) -> int:
    if not av:
        return 0
    return sum(len(k) + _av_size(v) for k, v in av.items())


def _av_size(av: Any) -> int:
    if isinstance(av, dict):
        return sum(_av_size(v) for v in av.values()) + 1
    if isinstance(av, list):
        return sum(_av_size(v) for v in av) + 1
    return len(str(av))


def _place(image: dict[str, Any], tokens: tuple[str, ...], value: Any) -> None:
    """Set the attribute at `tokens` (name, TYPE[, name, TYPE ...]) to `value`, creating the
    maps and lists on the way (order_details.M.total_amount -> {"order_details": {"M": {...}}})."""
    name = tokens[0]
    if len(tokens) == 1:
        image[name] = value
        return
    m = _TOKEN.match(tokens[1])
    if not m:
        raise SampleError(f"unsupported attribute path {'.'.join(tokens)}")
    kind, indexes = m.group(1), [int(i) for i in re.findall(r"\d+", m.group(2))]
    if kind == "M" and not indexes:
        current = image.get(name)
        inner = {"M": dict(current["M"])} if isinstance(current, dict) and "M" in current else {"M": {}}
        image[name] = inner
        _place(inner["M"], tokens[2:], value)
        return
    if kind == "L" and len(indexes) == 1:
        current = image.get(name)
        items = list(current["L"]) if isinstance(current, dict) and "L" in current else []
        while len(items) <= indexes[0]:
            items.append({"M": {}})
        rest = tokens[2:]
        if len(rest) >= 2 and rest[0] == "M":
            element = {"M": dict(items[indexes[0]].get("M", {}))}
            _place(element["M"], rest[1:], value)
            items[indexes[0]] = element
        else:
            items[indexes[0]] = value
        image[name] = {"L": items}
        return
    raise SampleError(f"unsupported attribute path {'.'.join(tokens)}")
