"""The movement journal read model: one row per batch movement, signed, with who, why, when
and what it cost where the events record it.

The rows are `ledger.domain.journal_costs.costed_rows`; this module stores and indexes them,
and joins a sale line's recorded costs to its stock item's sold rows. The two are appended
together, in either order, and are joined in memory when one batch of events holds both; a
batch may end between them, and then the sale's costs wait in `journal_sale_costs` until its
sold rows are written, and are deleted once they have been.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ledger import events
from ledger.domain.journal_costs import costed_rows, sale_line_costs, with_sale_costs
from ledger.domain.movements import JOURNAL_COLUMNS
from projections.dialect import Dialect
from projections.projection import Folded, Projection, create_tables

NAME = "journal"
TABLES = ("journal", "journal_sale_costs")
COLUMNS = (*JOURNAL_COLUMNS, "cost")
"""The journal table's columns: a journal row's (`JOURNAL_COLUMNS`) and its cost."""
SALE_COST_COLUMNS = ("sale_id", "sku", "batch_id", "cost")

CREATE = (
    """CREATE TABLE IF NOT EXISTS {journal} (
        position BIGINT NOT NULL, seq INTEGER NOT NULL, kind TEXT NOT NULL,
        outlet TEXT NOT NULL, sku TEXT NOT NULL, batch_id TEXT, quantity BIGINT NOT NULL,
        occurred_at TIMESTAMPTZ NOT NULL, recorded_at TIMESTAMPTZ NOT NULL,
        actor TEXT NOT NULL, reference TEXT NOT NULL, idempotency_key TEXT NOT NULL,
        sale_id TEXT, detail TEXT, cost TEXT,
        PRIMARY KEY (position, seq))""",
    "CREATE INDEX IF NOT EXISTS {journal}_outlet_time ON {journal} (outlet, occurred_at)",
    "CREATE INDEX IF NOT EXISTS {journal}_sku_time ON {journal} (sku, occurred_at)",
    "CREATE INDEX IF NOT EXISTS {journal}_reference ON {journal} (reference)",
    "CREATE INDEX IF NOT EXISTS {journal}_sale ON {journal} (sale_id)",
    """CREATE TABLE IF NOT EXISTS {journal_sale_costs} (
        sale_id TEXT NOT NULL, sku TEXT NOT NULL, batch_id TEXT NOT NULL, cost TEXT,
        PRIMARY KEY (sale_id, sku, batch_id))""",
)

UPGRADE_PROBE = "SELECT cost FROM {journal} WHERE 1 = 0"
"""Fails on a generation written before the journal kept costs (`projections.schema`)."""

COST_SOLD_ROWS = """UPDATE {journal} SET cost = (
        SELECT c.cost FROM {journal_sale_costs} c WHERE c.sale_id = {journal}.sale_id
        AND c.sku = {journal}.sku AND c.batch_id = {journal}.batch_id)
    WHERE kind = 'sold' AND batch_id IS NOT NULL
    AND sale_id IN (SELECT sale_id FROM {journal_sale_costs})
    AND EXISTS (SELECT 1 FROM {journal_sale_costs} c WHERE c.sale_id = {journal}.sale_id
                AND c.sku = {journal}.sku)"""
"""Only the lines whose costs wait: another line of the same sale may be costed already."""
FORGET_COSTED = """DELETE FROM {journal_sale_costs} WHERE EXISTS (
    SELECT 1 FROM {journal} j WHERE j.sale_id = {journal_sale_costs}.sale_id
    AND j.sku = {journal_sale_costs}.sku AND j.kind = 'sold')"""


@dataclass
class Changes:
    """A batch's journal rows, costed where the batch holds what costs them; the costs its
    sales recorded for sold rows in other batches; whether some sold rows wait for a sale
    read in an earlier batch."""

    rows: list[tuple[object, ...]] = field(default_factory=list)
    sale_costs: list[tuple[object, ...]] = field(default_factory=list)
    uncosted_sold: bool = False


class Journal:
    """The `journal` projection (`Projection[Changes]`)."""

    name = NAME
    tables = TABLES

    def prepare(self, cursor: Any, dialect: Dialect, tables: Mapping[str, str]) -> None:
        create_tables(cursor, dialect, CREATE, tables)

    def changes(self, folded: Sequence[Folded]) -> Changes:
        """The journal rows of a batch of events (with their movements) and its sales' line
        costs: pure, so it can run before the transaction."""
        rows: list[tuple[object, ...]] = []
        sales: dict[tuple[str, str], dict[str, str | None]] = {}
        for position, event, moved in folded:
            if isinstance(event, events.SaleRecorded):
                sales.update(sale_line_costs(event))
            else:
                rows += costed_rows(position, event, moved)
        # Most sales are read in the batch that holds their sold rows: joined here, they
        # cost the database nothing more.
        changes = Changes()
        joined: set[tuple[str, str]] = set()
        for row in rows:
            if row[2] == "sold":
                key = (str(row[12]), str(row[4]))  # sale_id, sku
                if key in sales:
                    row = with_sale_costs(row, sales[key])
                    joined.add(key)
                else:
                    changes.uncosted_sold = True
            changes.rows.append(row)
        changes.sale_costs = [(sale_id, sku, batch_id, cost)
                              for (sale_id, sku), costs in sales.items()
                              if (sale_id, sku) not in joined
                              for batch_id, cost in costs.items()]
        return changes

    def write(self, cursor: Any, dialect: Dialect, tables: Mapping[str, str],
              changes: Changes) -> None:
        """Append prepared rows to the journal and cost the sold rows whose sale has been
        read, in the caller's transaction."""
        dialect.insert_rows(cursor, tables["journal"], COLUMNS, changes.rows)
        if changes.sale_costs:
            dialect.insert_rows(cursor, tables["journal_sale_costs"], SALE_COST_COLUMNS,
                                changes.sale_costs)
        if changes.sale_costs or changes.uncosted_sold:
            cursor.execute(dialect.sql(COST_SOLD_ROWS.format(**tables)))
            cursor.execute(dialect.sql(FORGET_COSTED.format(**tables)))


JOURNAL: Projection[Changes] = Journal()
