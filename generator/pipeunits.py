"""The Pipes of a model: one per entity, or ONE shared by every entity of a single-table
design (entities reading one DynamoDB table, told apart by `source.discriminator`).

A Pipe has one filter (up to five patterns, OR'ed), one input template and one target
(AWS: eb-pipes-event-filtering, eb-pipes-input-transformation), and a stream shard serves at most two
readers without throttling (AWS: Streams). So the entities of one table share one Pipe, one
FIFO queue with its DLQs, and one event source mapping; the sync Lambda picks the entity by
the discriminator the template carries. The checks make the members agree on every setting of
that Pipe (generator.checks.shared), so the unit takes them from its first member.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from generator.model import Discriminator, Entity, Model, Pipeline, Routing, Source

# The message field (top-level template key) carrying a shared Pipe's discriminator. No field
# of a mapping can have this name (field names start with a letter or '_'), so it never collides.
DISCRIMINATOR_FIELD = "@discriminator"


@dataclass(frozen=True)
class PipeUnit:
    """One EventBridge Pipe with its queues and event source mapping."""

    name: str  # Terraform label base: the entity's name, or the table's label for a shared Pipe
    members: tuple[Entity, ...]  # sorted by name; one unless shared
    shared: bool

    @property
    def first(self) -> Entity:
        return self.members[0]

    @property
    def pipeline(self) -> Pipeline:
        return self.first.pipeline

    @property
    def routing(self) -> Routing:
        return self.first.routing

    @property
    def source(self) -> Source:
        return self.first.source

    @property
    def discriminator(self) -> Discriminator | None:
        return self.first.source.discriminator if self.shared else None

    @property
    def description(self) -> str:
        return ", ".join(e.name for e in self.members)


def table_label(table: str) -> str:
    """A Terraform label for a table name ([A-Za-z0-9_.-]+)."""
    label = re.sub(r"[^A-Za-z0-9_-]", "_", table)
    return label if re.match(r"^[A-Za-z_]", label) else "_" + label


def shared_label(table: str) -> str:
    """The Terraform label base of a table's shared Pipe."""
    return f"{table_label(table)}_shared"


def pipe_units(model: Model) -> tuple[PipeUnit, ...]:
    """Every live Pipe, in a fixed order (by label)."""
    units: list[PipeUnit] = []
    shared: dict[str, list[Entity]] = {}
    for e in model.live:
        if e.source.discriminator is not None:
            shared.setdefault(e.source.table, []).append(e)
        else:
            units.append(PipeUnit(e.name, (e,), False))
    for table, members in shared.items():
        units.append(PipeUnit(shared_label(table), tuple(sorted(members, key=lambda e: e.name)), True))
    return tuple(sorted(units, key=lambda u: u.name))
