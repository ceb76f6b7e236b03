"""Response bodies of the reads, for the OpenAPI document. (Commands answer with the typed
results of `ledger.app.results`; their bodies are those models, without `replayed`.)"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict


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
