"""The movement journal: one row per batch movement, signed, with who, why and when.

Stock sold into negative, and receipts that settle it, appear as rows without a batch, so that
the sum of a stock item's rows up to any position is its quantity on hand at that position.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

from ledger import events
from projections.dialect import Dialect

NAME = "journal"
TABLES = ("journal",)

COLUMNS = ("position", "seq", "kind", "outlet", "sku", "batch_id", "quantity", "occurred_at",
           "recorded_at", "actor", "reference", "idempotency_key", "sale_id", "detail")

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

INSERT = (f"INSERT INTO {{journal}} ({', '.join(COLUMNS)}) VALUES "
          f"({', '.join(['%s'] * len(COLUMNS))})")

Row = tuple[str, str | None, int, str | None]  # kind, batch, signed quantity, detail


def movements(event: object) -> Iterator[Row]:
    """The signed batch movements one event records."""
    if isinstance(event, events.BatchReceived):
        yield "received", event.batch.batch_id, event.batch.quantity - event.shortfall_settled, None
        if event.shortfall_settled:
            yield "received", None, event.shortfall_settled, "settled shortfall"
    elif isinstance(event, events.StockSold):
        for take in event.takes:
            yield "sold", take.batch_id, -take.quantity, f"sale {event.sale_id}"
        if event.unallocated:
            yield "sold", None, -event.unallocated, f"sale {event.sale_id}: unallocated"
    elif isinstance(event, events.StockRefunded):
        for take in event.restocked:
            yield "refunded", take.batch_id, take.quantity, f"sale {event.sale_id}"
        for take in event.written_off:
            yield ("refunded_written_off", take.batch_id, 0,
                   f"sale {event.sale_id}: {take.quantity} returned and written off")
    elif isinstance(event, events.BatchExpired):
        yield "expired", event.batch_id, -event.quantity, f"expired {event.expires_on}"
    elif isinstance(event, events.StockCounted):
        for count in event.counts:
            yield ("counted", count.batch_id, count.variance,
                   f"expected {count.expected}, counted {count.counted}")
        if event.shortfall_cleared:
            yield "counted", None, event.shortfall_cleared, "shortfall cleared by count"
    elif isinstance(event, events.StockWrittenOff):
        for take in event.takes:
            yield "written_off", take.batch_id, -take.quantity, event.reason
    elif isinstance(event, events.TransferDispatched):
        for batch in event.batches:
            yield ("transfer_dispatched", batch.batch_id, -batch.quantity,
                   f"to {event.to_outlet}")
    elif isinstance(event, events.TransferReceived):
        remaining = event.shortfall_settled
        for batch in event.batches:
            settled = min(remaining, batch.quantity)
            remaining -= settled
            yield ("transfer_received", batch.batch_id, batch.quantity - settled,
                   f"from {event.from_outlet}")
        if event.shortfall_settled:
            yield ("transfer_received", None, event.shortfall_settled,
                   f"from {event.from_outlet}: settled shortfall")


def rows(position: int, event: object) -> Iterator[tuple[Any, ...]]:
    if not isinstance(event, events.StockMovement):
        return
    recorded_at: datetime = event.timestamp
    sale_id = getattr(event, "sale_id", None)
    for seq, (kind, batch_id, quantity, detail) in enumerate(movements(event)):
        yield (position, seq, kind, event.outlet, event.sku, batch_id, quantity,
               event.occurred_at, recorded_at, event.actor, event.reference,
               event.idempotency_key, sale_id, detail)


def apply(cursor: Any, dialect: Dialect, tables: dict[str, str],
          batch_of_events: Sequence[tuple[int, object]]) -> None:
    journal_rows = [dialect.row(row) for position, event in batch_of_events
                    for row in rows(position, event)]
    if journal_rows:
        cursor.executemany(dialect.sql(INSERT.format(**tables)), journal_rows)
