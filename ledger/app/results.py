"""What each command returns: typed, JSON-ready, and the same on an idempotent repeat."""

from __future__ import annotations

from datetime import date, datetime

from pydantic import BaseModel, ConfigDict, computed_field

from ledger.domain.costing import CostPiece, value_of
from ledger.domain.quantities import BatchCount, BatchIdentity, BatchTake
from ledger.events import RefundLine, SaleLine


class CommandResult(BaseModel):
    """Common to every result: the kind of command, its recorded position, and whether this
    answer replays an earlier acceptance of the same command (an idempotent repeat)."""

    model_config = ConfigDict(frozen=True)

    kind: str
    idempotency_key: str = ""
    position: int | None = None
    replayed: bool = False


class StockLevel(BaseModel):
    model_config = ConfigDict(frozen=True)

    outlet: str
    sku: str
    on_hand: int
    available: int
    held: int = 0
    """Units on hand in held batches (not expired): on hand, not available."""


class ReceiptResult(CommandResult):
    outlet: str
    sku: str
    batch_id: str
    quantity: int
    shortfall_settled: int
    stock: StockLevel


class SoldLine(SaleLine):
    """A sale line as recorded, and the stock it left; `cost` is what its takes cost (a
    decimal string in the store's currency), `unvalued` the units taken that have no cost.
    Units sold into negative (`unallocated`) are valued when a receipt settles them."""

    stock: StockLevel

    @computed_field  # type: ignore[prop-decorator]
    @property
    def cost(self) -> str | None:
        return None if self.costs is None else str(value_of(self.costs).value)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def unvalued(self) -> int:
        return 0 if self.costs is None else value_of(self.costs).unvalued


class SaleResult(CommandResult):
    sale_id: str
    outlet: str
    lines: tuple[SoldLine, ...]


class RefundedLine(RefundLine):
    """A refund line as recorded, and the stock it left; `restocked_costs`, the cost the
    restocked units came back at (the cost they left with)."""

    stock: StockLevel
    restocked_costs: tuple[CostPiece, ...] | None = None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def restocked_cost(self) -> str | None:
        if self.restocked_costs is None:
            return None
        return str(value_of(self.restocked_costs).value)


class RefundResult(CommandResult):
    sale_id: str
    refund_id: str
    outlet: str
    lines: tuple[RefundedLine, ...]


class ExpiredBatch(BaseModel):
    model_config = ConfigDict(frozen=True)

    outlet: str
    sku: str
    batch_id: str
    quantity: int
    expires_on: date


class ExpiryResult(CommandResult):
    as_of: date
    expired: tuple[ExpiredBatch, ...]


class CountResult(CommandResult):
    outlet: str
    sku: str
    whole_sku: bool
    counts: tuple[BatchCount, ...]
    shortfall_cleared: int
    stock: StockLevel
    found: tuple[BatchIdentity, ...] = ()
    """Batches the count found that the ledger did not know here: found stock."""


class HoldResult(CommandResult):
    """A hold placed (`held` true) or released, and the stock it leaves where it applies."""

    sku: str
    batch_id: str
    outlet: str | None
    """The outlet it applies at; None: every outlet."""
    held: bool
    reason: str
    held_since: datetime
    """Business time the hold began."""


class CorrectionResult(CommandResult):
    """A receipt as it was and as corrected."""

    outlet: str
    sku: str
    receipt: str
    receipt_version: int
    batch_id: str
    quantity: tuple[int, int]
    expires_on: tuple[date | None, date | None]
    unit_cost: tuple[str | None, str | None]
    corrected_batch_id: str | None
    reason: str
    stock: StockLevel


class WriteOffResult(CommandResult):
    outlet: str
    sku: str
    reason: str
    takes: tuple[BatchTake, ...]
    stock: StockLevel


class TransferResult(CommandResult):
    transfer_id: str
    from_outlet: str
    to_outlet: str
    sku: str
    batches: tuple[BatchIdentity, ...]
    received: bool
    from_stock: StockLevel
    to_stock: StockLevel | None


class ReorderLevelResult(CommandResult):
    outlet: str
    sku: str
    level: int | None


class OutletPolicyResult(CommandResult):
    """An outlet's settings after the command (each one it did not give as it was)."""

    outlet: str
    allocation_policy: str
    allow_negative: bool
    late_sales_window: str | None = None
    """How far back a sale may be dated (`72h`); None: any age. Results recorded before
    the window existed read back with None, which is what those outlets had."""


class OutletSettings(BaseModel):
    """How an outlet allocates, whether it sells into negative, how late a sale it takes."""

    model_config = ConfigDict(frozen=True)

    outlet: str
    allocation_policy: str
    allow_negative: bool
    late_sales_window: str | None
    """`72h` and the like; None: a sale of any age (back to the earliest business time)."""


class CostLayer(BaseModel):
    """Units of a batch that arrived together, at one unit cost."""

    model_config = ConfigDict(frozen=True)

    received_at: datetime
    """Business time of the arrival."""
    quantity: int
    """Units of it still on the shelf."""
    received: int
    unit_cost: str | None
    """None: the arrival recorded no cost (a refund's restock, units a count found)."""
    source: str


class BatchHeld(BaseModel):
    """One batch of a stock item, its cost layers and their value."""

    model_config = ConfigDict(frozen=True)

    batch_id: str
    quantity: int
    expires_on: date | None
    received_at: datetime | None
    """Business time of the batch's first arrival here."""
    unit_cost: str | None
    """The unit cost every layer on the shelf has; None when they differ or lack one (the
    layers tell)."""
    value: str | None
    """Quantity times unit cost summed over the layers that have a cost, exact; None if none
    has one."""
    unvalued: int
    """Units in layers without a cost: unvalued, never worth zero."""
    expired: bool
    """Its expiry date has come by the read's date (`on_date`), written off yet or not."""
    written_off_as_expired: bool
    """The expiry sweep has written it off."""
    on_hold: bool = False
    """A hold (at this outlet or everywhere) keeps it from being sold: on hand, not
    available."""
    layers: tuple[CostLayer, ...]
    """First in, first out: the order units leave in."""


class StockItemBatches(BaseModel):
    """A stock item's batches holding stock, first expiry first, as the write model has them."""

    model_config = ConfigDict(frozen=True)

    outlet: str
    sku: str
    on_date: date
    """The date `expired` is reckoned on: today (UTC) unless the read named one."""
    batches: tuple[BatchHeld, ...]


class StoreSettingsResult(CommandResult):
    """The store's currency and the decimal places its costs may have (None: not named; costs
    then have at most six places)."""

    currency: str | None
    cost_places: int
