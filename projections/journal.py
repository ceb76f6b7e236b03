"""The movement journal read model: one row per batch movement, signed, with who, why and when.

The rows are `ledger.movements.journal_rows`; this module only stores and indexes them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ledger.domain.movements import JOURNAL_COLUMNS, journal_rows
from projections.dialect import Dialect
from projections.projection import Folded, Projection, create_tables

NAME = "journal"
TABLES = ("journal",)

CREATE = (
    """CREATE TABLE IF NOT EXISTS {journal} (
        position BIGINT NOT NULL, seq INTEGER NOT NULL, kind TEXT NOT NULL,
        outlet TEXT NOT NULL, sku TEXT NOT NULL, batch_id TEXT, quantity BIGINT NOT NULL,
        occurred_at TIMESTAMPTZ NOT NULL, recorded_at TIMESTAMPTZ NOT NULL,
        actor TEXT NOT NULL, reference TEXT NOT NULL, idempotency_key TEXT NOT NULL,
        sale_id TEXT, detail TEXT,
        PRIMARY KEY (position, seq))""",
    "CREATE INDEX IF NOT EXISTS {journal}_outlet_time ON {journal} (outlet, occurred_at)",
    "CREATE INDEX IF NOT EXISTS {journal}_sku_time ON {journal} (sku, occurred_at)",
    "CREATE INDEX IF NOT EXISTS {journal}_reference ON {journal} (reference)",
    "CREATE INDEX IF NOT EXISTS {journal}_sale ON {journal} (sale_id)",
)


Rows = list[tuple[object, ...]]


class Journal:
    """The `journal` projection (`Projection[Rows]`)."""

    name = NAME
    tables = TABLES

    def prepare(self, cursor: Any, dialect: Dialect, tables: Mapping[str, str]) -> None:
        create_tables(cursor, dialect, CREATE, tables)

    def changes(self, folded: Sequence[Folded]) -> Rows:
        """The journal rows of a batch of events (with their movements): pure, so it can run
        before the transaction."""
        return [row for position, event, moved in folded
                for row in journal_rows(position, event, moved)]

    def write(self, cursor: Any, dialect: Dialect, tables: Mapping[str, str],
              changes: Rows) -> None:
        """Append prepared rows to the journal, in the caller's transaction."""
        dialect.insert_rows(cursor, tables["journal"], JOURNAL_COLUMNS, changes)


JOURNAL: Projection[Rows] = Journal()
