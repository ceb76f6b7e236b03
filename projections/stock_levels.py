"""Read models of batch quantities and stock levels per outlet and SKU.

Events are folded in memory, per batch of notifications, into one delta per touched row (from
the same signed movements the journal records), then written with upserts: a batch costs one
statement per touched row, not per event, and nothing has to be read back first.

Stock levels keep a running `batch_total` and `shortfall`, so available stock is the running
total less only the batches whose expiry date has come and that still hold stock.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from ledger import events
from ledger.domain.movements import Movement, arrivals, corrected_expiry, movements
from projections.dialect import Dialect
from projections.projection import Folded, Projection, create_tables

NAME = "stock"
TABLES = ("batches", "stock_levels")

CREATE = (
    """CREATE TABLE IF NOT EXISTS {batches} (
        outlet TEXT NOT NULL, sku TEXT NOT NULL, batch_id TEXT NOT NULL,
        quantity BIGINT NOT NULL, expires_on DATE, received_at TIMESTAMPTZ,
        unit_cost TEXT, expired BOOLEAN NOT NULL,
        PRIMARY KEY (outlet, sku, batch_id))""",
    "CREATE INDEX IF NOT EXISTS {batches}_expiry ON {batches} (outlet, sku, expires_on)",
    """CREATE TABLE IF NOT EXISTS {stock_levels} (
        outlet TEXT NOT NULL, sku TEXT NOT NULL,
        batch_total BIGINT NOT NULL, shortfall BIGINT NOT NULL, reorder_level BIGINT,
        PRIMARY KEY (outlet, sku))""",
)

BATCH_COLUMNS = ("outlet", "sku", "batch_id", "quantity", "expires_on", "received_at",
                 "unit_cost", "expired")

ON_BATCH_CONFLICT = """
    ON CONFLICT (outlet, sku, batch_id) DO UPDATE SET
        quantity = {batches}.quantity + excluded.quantity,
        unit_cost = COALESCE(excluded.unit_cost, {batches}.unit_cost),
        expired = ({batches}.expired OR excluded.expired)"""

UPSERT_LEVEL = """
    INSERT INTO {stock_levels} (outlet, sku, batch_total, shortfall, reorder_level)
    VALUES (%s, %s, %s, %s, NULL)
    ON CONFLICT (outlet, sku) DO UPDATE SET
        batch_total = {stock_levels}.batch_total + excluded.batch_total,
        shortfall = {stock_levels}.shortfall + excluded.shortfall"""

SET_REORDER_LEVEL = """
    UPDATE {stock_levels} SET reorder_level = %s WHERE outlet = %s AND sku = %s"""

SET_EXPIRY = """
    UPDATE {batches} SET expires_on = %s WHERE outlet = %s AND sku = %s AND batch_id = %s"""
"""A receipt's correction gave its batch another expiry date."""


@dataclass
class _BatchChange:
    quantity: int = 0
    expires_on: date | None = None
    received_at: datetime | None = None
    unit_cost: str | None = None
    expired: bool = False


@dataclass
class Changes:
    """The row changes of one batch of events: a delta per touched row."""

    batches: dict[tuple[str, str, str], _BatchChange] = field(default_factory=dict)
    levels: dict[tuple[str, str], list[int]] = field(default_factory=dict)
    reorder_levels: dict[tuple[str, str], int | None] = field(default_factory=dict)
    expiries: dict[tuple[str, str, str], date | None] = field(default_factory=dict)
    """Batches whose expiry a correction changed, with the date it now is."""

    def batch(self, outlet: str, sku: str, batch_id: str) -> _BatchChange:
        key = (outlet, sku, batch_id)
        change = self.batches.get(key)
        if change is None:
            self.batches[key] = change = _BatchChange()
        return change

    def level(self, outlet: str, sku: str) -> list[int]:
        """[batch_total delta, shortfall delta] of a stock item."""
        key = (outlet, sku)
        level = self.levels.get(key)
        if level is None:
            self.levels[key] = level = [0, 0]
        return level


def fold(changes: Changes, event: object, moved: Sequence[Movement] | None = None) -> None:
    """Fold one event into the pending row changes of this batch of notifications (`moved`:
    the event's movements, if the caller has them already)."""
    if isinstance(event, events.StockMovement):
        level = changes.level(event.outlet, event.sku)
        for movement in movements(event) if moved is None else moved:
            if movement.batch_id is None:
                # A movement without a batch settles or creates a shortfall.
                level[1] -= movement.quantity
                continue
            changes.batch(event.outlet, event.sku, movement.batch_id).quantity += (
                movement.quantity)
            level[0] += movement.quantity
        for batch in arrivals(event):
            change = changes.batch(event.outlet, event.sku, batch.batch_id)
            change.expires_on = batch.expires_on
            change.received_at = change.received_at or event.occurred_at
            change.unit_cost = batch.unit_cost or change.unit_cost
        if isinstance(event, events.BatchExpired):
            changes.batch(event.outlet, event.sku, event.batch_id).expired = True
        expiry = corrected_expiry(event)
        if expiry is not None:
            changes.batch(event.outlet, event.sku, expiry[1]).expires_on = expiry[2]
            changes.expiries[(event.outlet, event.sku, expiry[1])] = expiry[2]
    elif isinstance(event, events.StockItemOpened):
        changes.level(event.outlet, event.sku)
    elif isinstance(event, events.ReorderLevelSet):
        changes.level(event.outlet, event.sku)
        changes.reorder_levels[(event.outlet, event.sku)] = event.level


class StockLevels:
    """The `stock` projection (`Projection[Changes]`)."""

    name = NAME
    tables = TABLES

    def prepare(self, cursor: Any, dialect: Dialect, tables: Mapping[str, str]) -> None:
        create_tables(cursor, dialect, CREATE, tables)

    def changes(self, folded: Sequence[Folded]) -> Changes:
        """The row changes a batch of events (with their movements) makes: pure, so it can
        run before the transaction."""
        changes = Changes()
        for _, event, moved in folded:
            fold(changes, event, moved)
        return changes

    def write(self, cursor: Any, dialect: Dialect, tables: Mapping[str, str],
              changes: Changes) -> None:
        """Write prepared row changes to this projection's tables, in the caller's
        transaction."""
        # Levels first: a reorder level may be set on a stock item this batch opened.
        if changes.levels:
            cursor.executemany(
                dialect.sql(UPSERT_LEVEL.format(**tables)),
                [(o, s, total, shortfall)
                 for (o, s), (total, shortfall) in changes.levels.items()],
            )
        for (outlet, sku), level in changes.reorder_levels.items():
            cursor.execute(dialect.sql(SET_REORDER_LEVEL.format(**tables)),
                           (level, outlet, sku))
        rows = [(o, s, b, c.quantity, c.expires_on, c.received_at, c.unit_cost, c.expired)
                for (o, s, b), c in changes.batches.items()]
        if rows:
            dialect.upsert_rows(cursor, tables["batches"], BATCH_COLUMNS, rows,
                                ON_BATCH_CONFLICT.format(**tables))
        for (outlet, sku, batch_id), expires_on in changes.expiries.items():
            cursor.execute(dialect.sql(SET_EXPIRY.format(**tables)),
                           dialect.row((expires_on, outlet, sku, batch_id)))


STOCK_LEVELS: Projection[Changes] = StockLevels()
