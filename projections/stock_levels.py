"""Read models of batch quantities and stock levels per outlet and SKU.

Events are folded in memory per batch of notifications into one final operation per row
(add a delta, or set a value), then written with two upserts: the cost of a batch is one
statement per touched row, not per event, and nothing has to be read back first.

Stock levels keep a running `batch_total` and `shortfall`, so available stock is the running
total less only the batches whose expiry date has come and that still hold stock.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from ledger import events
from projections.dialect import Dialect

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

UPSERT_BATCH_ADD = """
    INSERT INTO {batches} (outlet, sku, batch_id, quantity, expires_on, received_at, unit_cost,
                           expired)
    VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
    ON CONFLICT (outlet, sku, batch_id) DO UPDATE SET
        quantity = {batches}.quantity + excluded.quantity,
        unit_cost = COALESCE(excluded.unit_cost, {batches}.unit_cost),
        expired = ({batches}.expired OR excluded.expired)"""

UPSERT_BATCH_SET = """
    INSERT INTO {batches} (outlet, sku, batch_id, quantity, expires_on, received_at, unit_cost,
                           expired)
    VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
    ON CONFLICT (outlet, sku, batch_id) DO UPDATE SET
        quantity = excluded.quantity,
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


@dataclass
class _BatchChange:
    mode: str = "add"
    quantity: int = 0
    expires_on: date | None = None
    received_at: datetime | None = None
    unit_cost: str | None = None
    expired: bool = False


@dataclass
class _Changes:
    batches: dict[tuple[str, str, str], _BatchChange] = field(default_factory=dict)
    levels: dict[tuple[str, str], list[int]] = field(default_factory=dict)
    reorder_levels: dict[tuple[str, str], int | None] = field(default_factory=dict)

    def batch(self, outlet: str, sku: str, batch_id: str) -> _BatchChange:
        key = (outlet, sku, batch_id)
        change = self.batches.get(key)
        if change is None:
            self.batches[key] = change = _BatchChange()
        return change

    def add(self, outlet: str, sku: str, batch_id: str, quantity: int) -> None:
        self.batch(outlet, sku, batch_id).quantity += quantity
        self.level(outlet, sku)[0] += quantity

    def set(self, outlet: str, sku: str, batch_id: str, quantity: int, variance: int) -> None:
        change = self.batch(outlet, sku, batch_id)
        change.mode, change.quantity = "set", quantity
        self.level(outlet, sku)[0] += variance

    def arrive(self, outlet: str, sku: str, batch: Any, quantity: int,
               received_at: datetime) -> None:
        change = self.batch(outlet, sku, batch.batch_id)
        change.expires_on = batch.expires_on
        change.received_at = change.received_at or received_at
        change.unit_cost = batch.unit_cost or change.unit_cost
        self.add(outlet, sku, batch.batch_id, quantity)

    def shortfall(self, outlet: str, sku: str, delta: int) -> None:
        self.level(outlet, sku)[1] += delta

    def level(self, outlet: str, sku: str) -> list[int]:
        key = (outlet, sku)
        level = self.levels.get(key)
        if level is None:
            self.levels[key] = level = [0, 0]
        return level


def fold(changes: _Changes, event: object) -> None:
    """Fold one event into the pending row changes of this batch of notifications."""
    if isinstance(event, events.BatchReceived):
        changes.arrive(event.outlet, event.sku, event.batch,
                       event.batch.quantity - event.shortfall_settled, event.occurred_at)
        changes.shortfall(event.outlet, event.sku, -event.shortfall_settled)
    elif isinstance(event, events.StockSold):
        for take in event.takes:
            changes.add(event.outlet, event.sku, take.batch_id, -take.quantity)
        changes.shortfall(event.outlet, event.sku, event.unallocated)
    elif isinstance(event, events.StockRefunded):
        for take in event.restocked:
            changes.add(event.outlet, event.sku, take.batch_id, take.quantity)
    elif isinstance(event, events.BatchExpired):
        changes.add(event.outlet, event.sku, event.batch_id, -event.quantity)
        changes.batch(event.outlet, event.sku, event.batch_id).expired = True
    elif isinstance(event, events.StockCounted):
        for count in event.counts:
            changes.set(event.outlet, event.sku, count.batch_id, count.counted, count.variance)
        changes.shortfall(event.outlet, event.sku, -event.shortfall_cleared)
    elif isinstance(event, events.StockWrittenOff):
        for take in event.takes:
            changes.add(event.outlet, event.sku, take.batch_id, -take.quantity)
    elif isinstance(event, events.TransferDispatched):
        for batch in event.batches:
            changes.add(event.outlet, event.sku, batch.batch_id, -batch.quantity)
    elif isinstance(event, events.TransferReceived):
        remaining = event.shortfall_settled
        for batch in event.batches:
            settled = min(remaining, batch.quantity)
            remaining -= settled
            changes.arrive(event.outlet, event.sku, batch, batch.quantity - settled,
                           event.occurred_at)
        changes.shortfall(event.outlet, event.sku, -event.shortfall_settled)
    elif isinstance(event, events.StockItemOpened):
        changes.level(event.outlet, event.sku)
    elif isinstance(event, events.ReorderLevelSet):
        changes.level(event.outlet, event.sku)
        changes.reorder_levels[(event.outlet, event.sku)] = event.level


def apply(cursor: Any, dialect: Dialect, tables: dict[str, str],
          batch_of_events: Sequence[tuple[int, object]]) -> None:
    """Apply a batch of events to this projection's tables, inside the caller's transaction."""
    changes = _Changes()
    for _, event in batch_of_events:
        fold(changes, event)
    # Levels first: a reorder level may be set on a stock item this batch opened.
    if changes.levels:
        cursor.executemany(
            dialect.sql(UPSERT_LEVEL.format(**tables)),
            [(o, s, total, shortfall) for (o, s), (total, shortfall) in changes.levels.items()],
        )
    for (outlet, sku), level in changes.reorder_levels.items():
        cursor.execute(dialect.sql(SET_REORDER_LEVEL.format(**tables)), (level, outlet, sku))
    for mode, statement in (("add", UPSERT_BATCH_ADD), ("set", UPSERT_BATCH_SET)):
        rows = [
            dialect.row((o, s, b, c.quantity, c.expires_on, c.received_at, c.unit_cost,
                         c.expired))
            for (o, s, b), c in changes.batches.items() if c.mode == mode
        ]
        if rows:
            cursor.executemany(dialect.sql(statement.format(**tables)), rows)
