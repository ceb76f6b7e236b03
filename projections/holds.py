"""The holds read model: which lots are held now, and where (one row per hold not released).

A hold everywhere has the scope '' (no outlet id is empty). Reads join it to the batches by SKU
and batch id, so a hold everywhere covers stock that arrives at any outlet later, as the write
model's hold register does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ledger import events
from projections.dialect import Dialect
from projections.projection import Folded, Projection, create_tables

NAME = "holds"
TABLES = ("holds",)
EVERYWHERE = ""
"""The scope of a hold at every outlet: no outlet id is empty."""

CREATE = (
    """CREATE TABLE IF NOT EXISTS {holds} (
        sku TEXT NOT NULL, batch_id TEXT NOT NULL, scope TEXT NOT NULL,
        held_at TIMESTAMPTZ NOT NULL, reason TEXT NOT NULL, actor TEXT NOT NULL,
        position BIGINT NOT NULL,
        PRIMARY KEY (sku, batch_id, scope))""",
)

DELETE = "DELETE FROM {holds} WHERE sku = %s AND batch_id = %s AND scope = %s"
INSERT = """INSERT INTO {holds} (sku, batch_id, scope, held_at, reason, actor, position)
    VALUES (%s, %s, %s, %s, %s, %s, %s)"""

Change = tuple[bool, tuple[object, ...]]
"""(held, row): a hold to insert (the whole row) or a release to delete (its key)."""


def scope_of(outlet: str | None) -> str:
    return EVERYWHERE if outlet is None else outlet


class Holds:
    """The `holds` projection (`Projection[list[Change]]`)."""

    name = NAME
    tables = TABLES

    def prepare(self, cursor: Any, dialect: Dialect, tables: Mapping[str, str]) -> None:
        create_tables(cursor, dialect, CREATE, tables)

    def changes(self, folded: Sequence[Folded]) -> list[Change]:
        """Holds and releases in recorded order: a lot held, released and held again in one
        batch ends held."""
        found: list[Change] = []
        for position, event, _ in folded:
            if isinstance(event, events.LotHeld):
                found.append((True, (event.sku, event.batch_id, scope_of(event.outlet),
                                     event.occurred_at, event.reason, event.actor, position)))
            elif isinstance(event, events.LotReleased):
                found.append((False, (event.sku, event.batch_id, scope_of(event.outlet))))
        return found

    def write(self, cursor: Any, dialect: Dialect, tables: Mapping[str, str],
              changes: list[Change]) -> None:
        """Apply holds and releases in order, in the caller's transaction."""
        for held, row in changes:
            cursor.execute(dialect.sql(DELETE.format(**tables)), dialect.row(row[:3]))
            if held:
                cursor.execute(dialect.sql(INSERT.format(**tables)), dialect.row(row))


HOLDS: Projection[list[Change]] = Holds()
