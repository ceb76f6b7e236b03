"""The lots read model: every movement of a lot (SKU and batch id) across outlets, and where
each lot stands at each outlet, indexed by lot and by expiry date.

A recall asks where one lot went; answered from the journal it would read the SKU's whole
history at every outlet. Here a lot's movements sit together under their `(sku, batch_id)`
index, so a trace costs what the lot itself did. `lot_shelves` keeps a lot's quantity and
expiry date per outlet; its partial index on the expiry date of shelves that still hold stock
answers "what expires within 30 days" as a range, not a scan of every batch ever received.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from ledger import events
from ledger.domain.movements import Movement, arrivals, corrected_expiry, movements
from projections.dialect import Dialect
from projections.projection import Folded, Projection, create_tables

NAME = "lots"
TABLES = ("lot_movements", "lot_shelves")

CREATE = (
    """CREATE TABLE IF NOT EXISTS {lot_movements} (
        position BIGINT NOT NULL, seq INTEGER NOT NULL,
        sku TEXT NOT NULL, batch_id TEXT NOT NULL, outlet TEXT NOT NULL, kind TEXT NOT NULL,
        quantity BIGINT NOT NULL, units BIGINT NOT NULL,
        occurred_at TIMESTAMPTZ NOT NULL, recorded_at TIMESTAMPTZ NOT NULL,
        actor TEXT NOT NULL, reference TEXT NOT NULL,
        sale_id TEXT, refund_id TEXT, transfer_id TEXT, counterpart TEXT, detail TEXT,
        PRIMARY KEY (position, seq))""",
    "CREATE INDEX IF NOT EXISTS {lot_movements}_lot ON {lot_movements} "
    "(sku, batch_id, position, seq)",
    """CREATE TABLE IF NOT EXISTS {lot_shelves} (
        sku TEXT NOT NULL, batch_id TEXT NOT NULL, outlet TEXT NOT NULL,
        quantity BIGINT NOT NULL, expires_on DATE, received_at TIMESTAMPTZ,
        PRIMARY KEY (sku, batch_id, outlet))""",
    # Only shelves holding stock are worth listing as expiring: sold-out and swept lots, the
    # bulk of a long history, stay out of the index.
    # One index: with a second one led by the outlet, a planner scanned all of it for a
    # list across outlets, since it is small, rather than take the range of this one.
    "CREATE INDEX IF NOT EXISTS {lot_shelves}_expiry ON {lot_shelves} "
    "(expires_on, sku, batch_id, outlet) WHERE quantity > 0",
)

MOVEMENT_COLUMNS = ("position", "seq", "sku", "batch_id", "outlet", "kind", "quantity",
                    "units", "occurred_at", "recorded_at", "actor", "reference", "sale_id",
                    "refund_id", "transfer_id", "counterpart", "detail")
"""The columns of a lot movement row, in the order `lot_rows` yields them."""

SHELF_COLUMNS = ("sku", "batch_id", "outlet", "quantity", "expires_on", "received_at")

ON_SHELF_CONFLICT = """
    ON CONFLICT (sku, batch_id, outlet) DO UPDATE SET
        quantity = {lot_shelves}.quantity + excluded.quantity,
        expires_on = COALESCE(excluded.expires_on, {lot_shelves}.expires_on),
        received_at = COALESCE({lot_shelves}.received_at, excluded.received_at)"""
"""A lot takes the expiry date of its latest arrival at an outlet, as the stock read model
does (a stock item refuses a second arrival of a batch with another expiry)."""


SET_EXPIRY = """
    UPDATE {lot_shelves} SET expires_on = %s WHERE sku = %s AND batch_id = %s AND outlet = %s"""
"""A receipt's correction gave its batch another expiry date (or none)."""


def _counterpart(event: object) -> str | None:
    """The other outlet of a transfer movement."""
    if isinstance(event, events.TransferDispatched):
        return event.to_outlet
    if isinstance(event, events.TransferReceived):
        return event.from_outlet
    return None


def lot_rows(position: int, event: object,
             moved: Sequence[Movement] | None = None) -> Iterator[tuple[object, ...]]:
    """One row per movement of a named batch, in `MOVEMENT_COLUMNS` order.

    `quantity` is the signed change to the shelf, as in the journal; `units` is how many units
    the movement concerned: a return written off moves nothing onto the shelf but concerns the
    units returned, and an arrival that settled stock sold into negative concerns all that
    arrived (of which only the rest went onto the shelf)."""
    if not isinstance(event, events.StockMovement):
        return
    written_off = iter(event.written_off if isinstance(event, events.StockRefunded) else ())
    arrived = iter(arrivals(event))
    sale_id = getattr(event, "sale_id", None)
    refund_id = getattr(event, "refund_id", None)
    transfer_id = getattr(event, "transfer_id", None)
    counterpart = _counterpart(event)
    for seq, movement in enumerate(movements(event) if moved is None else moved):
        if movement.batch_id is None:
            continue
        units = abs(movement.quantity)
        # An event of a kind added later that names these kinds falls back to the quantity.
        if movement.kind == "refunded_written_off":
            take = next(written_off, None)
            units = units if take is None else take.quantity
        elif movement.kind in ("received", "transfer_received"):
            batch = next(arrived, None)
            units = units if batch is None else batch.quantity
        yield (position, seq, event.sku, movement.batch_id, event.outlet, movement.kind,
               movement.quantity, units, event.occurred_at, event.timestamp, event.actor,
               event.reference, sale_id, refund_id, transfer_id, counterpart,
               movement.detail)


@dataclass
class _Shelf:
    quantity: int = 0
    expires_on: date | None = None
    received_at: Any = None


@dataclass
class Changes:
    """The rows one batch of events adds, and the change it makes to each lot's shelves."""

    rows: list[tuple[object, ...]] = field(default_factory=list)
    shelves: dict[tuple[str, str, str], _Shelf] = field(default_factory=dict)
    expiries: dict[tuple[str, str, str], date | None] = field(default_factory=dict)
    """Shelves whose expiry date a receipt's correction changed, with the date it now is."""


def fold(changes: Changes, position: int, event: object,
         moved: Sequence[Movement] | None = None) -> None:
    """Fold one event into the pending changes of a batch of events."""
    if not isinstance(event, events.StockMovement):
        return
    moved = tuple(movements(event)) if moved is None else moved
    changes.rows.extend(lot_rows(position, event, moved))
    for movement in moved:
        if movement.batch_id is None:
            continue
        shelf = _shelf(changes, event.sku, movement.batch_id, event.outlet)
        shelf.quantity += movement.quantity
    for batch in arrivals(event):
        shelf = _shelf(changes, event.sku, batch.batch_id, event.outlet)
        shelf.expires_on = batch.expires_on or shelf.expires_on
        if shelf.received_at is None:
            shelf.received_at = event.occurred_at
    expiry = corrected_expiry(event)
    if expiry is not None:
        key = (expiry[0], expiry[1], event.outlet)
        _shelf(changes, *key).expires_on = changes.expiries[key] = expiry[2]


def _shelf(changes: Changes, sku: str, batch_id: str, outlet: str) -> _Shelf:
    key = (sku, batch_id, outlet)
    shelf = changes.shelves.get(key)
    if shelf is None:
        changes.shelves[key] = shelf = _Shelf()
    return shelf


class Lots:
    """The `lots` projection (`Projection[Changes]`)."""

    name = NAME
    tables = TABLES

    def prepare(self, cursor: Any, dialect: Dialect, tables: Mapping[str, str]) -> None:
        create_tables(cursor, dialect, CREATE, tables)

    def changes(self, folded: Sequence[Folded]) -> Changes:
        """The rows a batch of events (with their movements) makes: pure, so it can run
        before the transaction."""
        changes = Changes()
        for position, event, moved in folded:
            fold(changes, position, event, moved)
        return changes

    def write(self, cursor: Any, dialect: Dialect, tables: Mapping[str, str],
              changes: Changes) -> None:
        """Append the lot movements and upsert the shelves, in the caller's transaction."""
        if changes.rows:
            dialect.insert_rows(cursor, tables["lot_movements"], MOVEMENT_COLUMNS,
                                changes.rows)
        shelves = [(sku, batch_id, outlet, s.quantity, s.expires_on, s.received_at)
                   for (sku, batch_id, outlet), s in changes.shelves.items()]
        if shelves:
            dialect.upsert_rows(cursor, tables["lot_shelves"], SHELF_COLUMNS, shelves,
                                ON_SHELF_CONFLICT.format(**tables))
        for (sku, batch_id, outlet), expires_on in changes.expiries.items():
            cursor.execute(dialect.sql(SET_EXPIRY.format(**tables)),
                           dialect.row((expires_on, sku, batch_id, outlet)))


LOTS: Projection[Changes] = Lots()
