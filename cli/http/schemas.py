"""Response bodies of the reads, for the OpenAPI document. (Commands answer with the typed
results of `ledger.app.results`; their bodies are those models, without `replayed`.)"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Stuck(BaseModel):
    """The event the read models stop before, which cannot be read (`projections.stuck`):
    a read answers as far as they got, everything up to `position` - 1."""

    position: int
    topic: str
    stream: str
    version: int
    reason: str


class StockRow(BaseModel):
    outlet: str
    sku: str
    on_hand: int
    available: int
    held: int = 0
    """Units on hand in held batches: not available."""
    reorder_level: int | None = None


class OutletStock(BaseModel):
    outlet: str
    position: int
    """Where the read models stood when read: every movement up to it is included."""
    stock: list[StockRow]
    stuck: Stuck | None = None


class SkuStock(BaseModel):
    sku: str
    position: int
    stock: list[StockRow]
    stuck: Stuck | None = None


class BatchRow(BaseModel):
    batch_id: str
    quantity: int
    expires_on: str | None
    received_at: str | None
    unit_cost: str | float | None
    expired: bool
    on_hold: bool = False


class Batches(BaseModel):
    outlet: str
    sku: str
    position: int
    batches: list[BatchRow]
    stuck: Stuck | None = None


class LowStock(BaseModel):
    outlet: str
    position: int
    low_stock: list[StockRow]
    stuck: Stuck | None = None


class Movement(BaseModel):
    model_config = ConfigDict(extra="allow")

    position: int
    seq: int
    kind: str
    outlet: str
    sku: str
    batch_id: str | None
    quantity: int
    occurred_at: str
    recorded_at: str
    actor: str
    reference: str | None
    idempotency_key: str | None
    sale_id: str | None
    detail: Any = None
    cost: str | None = None
    """What the movement cost, signed as its quantity, in the store's currency; null where
    the events do not record it (docs/valuation.md, "The journal's costs")."""


class History(BaseModel):
    outlet: str
    position: int
    movements: list[Movement]
    stuck: Stuck | None = None


class Report(BaseModel):
    """An audit or operator report (trace, replay, verify, status): its members are those of
    the CLI's `--json` output for the same command."""

    model_config = ConfigDict(extra="allow")


class Health(BaseModel):
    status: str
    head: int


# --------------------------------------------------------------------------- reads by lot


class LotReceipt(BaseModel):
    """The lot arriving at an outlet from a supplier (or an opening balance)."""

    position: int
    outlet: str
    occurred_at: str
    reference: str
    actor: str
    quantity: int


class LotRefund(BaseModel):
    refund_id: str | None
    occurred_at: str
    position: int
    quantity: int
    restocked: bool
    """False: returned and written off at once."""


class LotSale(BaseModel):
    """A sale's units of the lot, and the refunds of them."""

    model_config = ConfigDict(extra="allow")

    sale_id: str | None
    outlet: str
    quantity: int
    refunds: list[LotRefund]


class LotTransfer(BaseModel):
    transfer_id: str | None
    from_outlet: str | None
    to_outlet: str | None
    quantity: int
    """Units of the lot dispatched."""
    received: int
    """Units of the lot that have arrived (on the shelf, or settling stock sold short)."""
    dispatched_at: str | None
    received_at: str | None
    status: str
    """`in_transit` or `received`."""


class LotEvent(BaseModel):
    """A write-off, count, expiry or other movement of the lot at an outlet."""

    model_config = ConfigDict(extra="allow")

    position: int
    outlet: str
    occurred_at: str
    reference: str
    actor: str


class LotShelf(BaseModel):
    outlet: str
    quantity: int
    expires_on: str | None


class LotInTransit(BaseModel):
    transfer_id: str | None
    from_outlet: str | None
    to_outlet: str | None
    quantity: int
    dispatched_at: str | None


class LotNow(BaseModel):
    on_shelves: list[LotShelf]
    on_shelves_total: int
    in_transit: list[LotInTransit]
    in_transit_total: int


class LotHold(BaseModel):
    outlet: str | None
    """None: held everywhere."""
    held_at: str
    reason: str
    actor: str


class LotTrace(BaseModel):
    """Where a lot went across every outlet, and where it is now (`ledger trace --json`)."""

    sku: str
    batch_id: str
    found: bool
    """False if the lot has no recorded movement (every list is then empty)."""
    expires_on: str | None
    received: list[LotReceipt]
    transfers: list[LotTransfer]
    sales: list[LotSale]
    written_off: list[LotEvent]
    counted: list[LotEvent]
    expired: list[LotEvent]
    other: list[LotEvent]
    now: LotNow
    holds: list[LotHold]
    """Holds on the lot not released: it may not be sold, transferred or written off there."""
    movements: int
    """How many movements of the lot the trace read."""
    position: int
    stuck: Stuck | None = None


class ExpiringRow(BaseModel):
    expires_on: str
    sku: str
    batch_id: str
    outlet: str
    quantity: int
    expired: bool
    """Its expiry date has come: not sellable, whether swept yet or not."""
    held: bool
    """A hold (everywhere or at this outlet) makes it unsellable."""
    days_left: int
    """Days from today (UTC) to the expiry date; 0 or less when expired."""


class Expiring(BaseModel):
    """Lots holding stock that expire by `until`, soonest first (`ledger expiring --json`)."""

    on_date: str
    until: str
    position: int
    expiring: list[ExpiringRow]
    stuck: Stuck | None = None


class MovementsRow(BaseModel):
    """One stock item's period: closing = opening + received - sold + refunded_restocked -
    expired - written_off + count_variance + transferred_in - transferred_out + other."""

    outlet: str
    sku: str
    opening: int
    received: int
    sold: int
    refunded_restocked: int
    refunded_written_off: int
    expired: int
    written_off: int
    count_variance: int
    transferred_in: int
    transferred_out: int
    other: int
    closing: int


class MovementsReport(BaseModel):
    """Per stock item, a period's opening balance, movements and closing balance
    (`ledger report movements --json`)."""

    model_config = ConfigDict(populate_by_name=True)

    from_: str = Field(alias="from")
    to: str
    basis: str
    outlet: str | None
    sku: str | None
    position: int
    rows: list[MovementsRow]
    stuck: Stuck | None = None


class ShortSale(BaseModel):
    sale_id: str
    occurred_at: str
    recorded_at: str
    short: int
    """The part of the sale's shortfall still open."""
    late: bool
    """Submitted late by a till (its business time well before it was recorded)."""


class Discrepancy(BaseModel):
    outlet: str
    sku: str
    shortfall: int
    sales: list[ShortSale]


class Discrepancies(BaseModel):
    outlet: str | None
    position: int
    discrepancies: list[Discrepancy]
    stuck: Stuck | None = None
