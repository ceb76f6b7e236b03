"""The recorded facts: every event the ledger appends, and how it changes its aggregate.

These classes are the contract with auditors. Their topics (`ledger.events:Name`) and fields are
recorded with every event; a change of meaning is a new `class_version` with an
`upcast_vN_vN+1` static method, never an edit of an existing field's meaning.

Quantities in events are positive; the kind of event says the direction (a sale takes, a
receipt adds). `timestamp` is when the ledger recorded the event; `occurred_at` is the business
time the till or operator gave.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from typing import TYPE_CHECKING, Any, TypeVar
from uuid import UUID

from eventsourcing.domain import Aggregate, AggregateCreated, AggregateEvent
from eventsourcing.utils import get_topic
from pydantic import BaseModel, ConfigDict

from ledger.domain.costing import CostPiece
from ledger.domain.holds import Hold
from ledger.domain.quantities import (
    AllocationPolicy,
    BatchCount,
    BatchIdentity,
    BatchTake,
    shelved,
)

if TYPE_CHECKING:
    from ledger.domain.balance_import import BalanceImport
    from ledger.domain.command_record import CommandRecord
    from ledger.domain.hold_register import HoldRegister
    from ledger.domain.outlet import Outlet
    from ledger.domain.sale import Sale
    from ledger.domain.stock_item import StockItem
    from ledger.domain.store_settings import StoreSettings
    from ledger.domain.transfer import Transfer


CreatedT = TypeVar("CreatedT", bound=AggregateCreated)


def created_event(aggregate_class: type[Aggregate], event_class: type[CreatedT],
                  originator_id: UUID, **fields: Any) -> CreatedT:
    """The event that starts a new stream, exactly as `Aggregate._create` would record it,
    for a caller that needs only the event (a new sale's stream, say) and not the aggregate
    that `_create` would also build from it."""
    return event_class(originator_topic=get_topic(aggregate_class), originator_id=originator_id,
                       originator_version=aggregate_class.INITIAL_VERSION,
                       timestamp=event_class.create_timestamp(), **fields)


# --------------------------------------------------------------------------- payload models


class SaleLine(BaseModel):
    """One SKU of a sale and the batches it was allocated from."""

    model_config = ConfigDict(frozen=True)

    sku: str
    quantity: int
    takes: tuple[BatchTake, ...]
    unallocated: int = 0
    costs: tuple[CostPiece, ...] | None = None
    """What the takes cost, a piece per batch and unit cost in the order the units left
    (`ledger.domain.costing.take_costs`); None on lines of sales recorded before sales
    recorded their costs (`SaleRecorded` version 1)."""


class RefundLine(BaseModel):
    """One SKU of a refund: batches restocked and batches written off on return."""

    model_config = ConfigDict(frozen=True)

    sku: str
    quantity: int
    restocked: tuple[BatchTake, ...]
    written_off: tuple[BatchTake, ...]
    unallocated: int = 0
    """Units of the line that had been sold into negative stock, returned by this refund."""


PAYLOAD_MODELS: tuple[type[BaseModel], ...] = (
    BatchTake, BatchIdentity, BatchCount, SaleLine, RefundLine, CostPiece,
)


# --------------------------------------------------------------------------- stock item


class StockItemOpened(AggregateCreated):
    """The first movement of a SKU at an outlet opened its stock item."""

    outlet: str
    sku: str


class StockMovement(AggregateEvent):
    """Fields every movement of stock carries."""

    outlet: str
    sku: str
    occurred_at: datetime
    actor: str
    reference: str
    idempotency_key: str


class BatchReceived(StockMovement):
    """A batch (or more of an existing one) arrived at the outlet.

    `shortfall_settled` of the quantity covered stock sold into negative before it arrived; the
    rest went onto the batch, as a cost layer of its own at `batch.unit_cost` (a second receipt
    of a batch never changes the cost of the first), on the shelf from `occurred_at`.
    """

    batch: BatchIdentity
    shortfall_settled: int

    def apply(self, aggregate: StockItem) -> None:
        aggregate.settle_shortfall(self.shortfall_settled)
        aggregate.add_to_batch(self.batch, self.batch.quantity - self.shortfall_settled,
                               self.occurred_at, f"receipt {self.reference}")


class StockSold(StockMovement):
    """One line of a sale left these batches; `unallocated` was sold into negative stock."""

    sale_id: str
    takes: Sequence[BatchTake]
    unallocated: int

    def apply(self, aggregate: StockItem) -> None:
        for take in self.takes:
            aggregate.take_from_batch(take.batch_id, take.quantity)
        aggregate.shortfall += self.unallocated


class StockRefunded(StockMovement):
    """Units of an earlier sale came back: `restocked` onto their batches, `written_off` not.

    `unallocated_returned` units had been sold into negative stock (from no batch); restocked,
    they settle the shortfall that sale created.

    Version 2 adds `restocked_costs`: the restocked units as cost pieces, at the cost they
    left with (`ledger.domain.costing.refund_pieces`), each a cost layer of its own. A version
    1 refund restocked its units as layers without a recorded cost; it reads back so, each
    restocked take one piece with no unit cost.
    """

    class_version = 2

    sale_id: str
    refund_id: str
    restocked: Sequence[BatchTake]
    written_off: Sequence[BatchTake]
    unallocated_returned: int
    unallocated_restocked: bool
    restocked_costs: Sequence[CostPiece]

    @staticmethod
    def upcast_v1_v2(state: dict[str, Any]) -> None:
        state["restocked_costs"] = [
            CostPiece(batch_id=_field(take, "batch_id"), quantity=_field(take, "quantity"))
            for take in state["restocked"]]

    def apply(self, aggregate: StockItem) -> None:
        for piece in self.restocked_costs:
            aggregate.return_to_batch(piece.batch_id, piece.quantity, self.occurred_at,
                                      f"refund {self.refund_id} of sale {self.sale_id}",
                                      piece.unit_cost)
        if self.unallocated_restocked:
            aggregate.settle_shortfall(self.unallocated_returned)


class BatchExpired(StockMovement):
    """The remaining quantity of a batch past its expiry date was written off (once, ever)."""

    batch_id: str
    quantity: int
    expires_on: date
    as_of: date

    def apply(self, aggregate: StockItem) -> None:
        aggregate.take_from_batch(self.batch_id, self.quantity)
        aggregate.writable_batch(self.batch_id).expired = True


class StockCounted(StockMovement):
    """A stock take set batches to what was counted; each count carries its variance.

    A whole-SKU count also clears any shortfall (`shortfall_cleared`): the shelf was counted.
    """

    whole_sku: bool
    counts: Sequence[BatchCount]
    shortfall_cleared: int

    def apply(self, aggregate: StockItem) -> None:
        for count in self.counts:
            aggregate.set_batch(count.batch_id, count.counted, self.occurred_at,
                                f"count {self.reference}")
        aggregate.settle_shortfall(self.shortfall_cleared)


class StockWrittenOff(StockMovement):
    """Damage, theft, samples: quantities left batches for a stated reason."""

    reason: str
    takes: Sequence[BatchTake]

    def apply(self, aggregate: StockItem) -> None:
        for take in self.takes:
            aggregate.take_from_batch(take.batch_id, take.quantity)


class TransferDispatched(StockMovement):
    """Stock left this outlet for another; in transit it is on neither shelf.

    `batches` holds an entry per batch and unit cost taken: a batch whose units left from cost
    layers of different costs has one entry per cost, in the order they left (recorded so
    since cost layers were kept; earlier dispatches have one entry per batch)."""

    transfer_id: str
    to_outlet: str
    batches: Sequence[BatchIdentity]

    def apply(self, aggregate: StockItem) -> None:
        for batch in self.batches:
            aggregate.take_from_batch(batch.batch_id, batch.quantity)


class TransferReceived(StockMovement):
    """Stock sent by another outlet arrived, batch identity and expiry kept."""

    transfer_id: str
    from_outlet: str
    batches: Sequence[BatchIdentity]
    shortfall_settled: int

    def apply(self, aggregate: StockItem) -> None:
        aggregate.settle_shortfall(self.shortfall_settled)
        for batch, quantity in shelved(self.batches, self.shortfall_settled):
            aggregate.add_to_batch(batch, quantity, self.occurred_at,
                                   f"transfer {self.transfer_id} from {self.from_outlet}")


class StockFound(StockMovement):
    """A count found a batch the ledger did not know at the outlet: found stock, on the shelf
    from `occurred_at`, as a layer at `batch.unit_cost` (None: no cost recorded)."""

    count_reference: str
    batch: BatchIdentity

    def apply(self, aggregate: StockItem) -> None:
        aggregate.add_to_batch(self.batch, self.batch.quantity, self.occurred_at,
                               f"found by count {self.count_reference}")


class ReceiptCorrected(StockMovement):
    """A receipt typed wrong was corrected; the receipt itself stays in the history.

    `receipt_version` is the corrected `BatchReceived`'s version in this stream, and
    `receipt_reference` its reference (delivery note, else batch id). Each field is recorded
    as it stood before and after (a field not corrected is equal in both). Units a corrected
    quantity adds, or a corrected batch id moves, come onto the shelf at the correction's
    business time, as the ledger learns of them; units it takes away leave the receipt's own
    cost layers first. A corrected expiry date applies to the whole batch at this outlet (a
    batch has one expiry); a corrected cost to the receipt's units still on the shelf.
    """

    receipt_version: int
    receipt_reference: str
    batch_id: str
    quantity_before: int
    quantity_after: int
    expires_on_before: date | None
    expires_on_after: date | None
    unit_cost_before: str | None
    unit_cost_after: str | None
    corrected_batch_id: str | None
    """The batch id the receipt should have named; None: the batch id was right."""
    quantity_moved: int
    """Units moved to `corrected_batch_id` (0 when it is None): the receipt's units on the
    shelf, all of it but what settled stock sold into negative."""
    reason: str

    def apply(self, aggregate: StockItem) -> None:
        aggregate.apply_correction(self)


class ReorderLevelSet(AggregateEvent):
    """The level at or below which the stock item shows on the low-stock list."""

    outlet: str
    sku: str
    level: int | None
    actor: str

    def apply(self, aggregate: StockItem) -> None:
        aggregate.reorder_level = self.level


# --------------------------------------------------------------------------- outlet


class OutletOpened(AggregateCreated):
    outlet: str
    allocation_policy: AllocationPolicy
    allow_negative: bool
    actor: str


class OutletPolicySet(AggregateEvent):
    """How the outlet allocates stock, and whether it may sell into negative stock: both, as
    they stand after the change (a change of one carries the other as it was)."""

    allocation_policy: AllocationPolicy
    allow_negative: bool
    actor: str

    def apply(self, aggregate: Outlet) -> None:
        aggregate.allocation_policy = self.allocation_policy
        aggregate.allow_negative = self.allow_negative


class LateSalesWindowSet(AggregateEvent):
    """How far back a sale at the outlet may be dated: `seconds` before the ledger's clock
    when it is decided; None, any age (back to the earliest business time). Until an outlet
    records one, it has no window."""

    seconds: int | None
    actor: str

    def apply(self, aggregate: Outlet) -> None:
        aggregate.late_sales_window = self.seconds


# --------------------------------------------------------------------------- sale


class SaleRecorded(AggregateCreated):
    """A sale, all lines at once, as the stock items recorded it.

    Version 2: each line carries what its takes cost (`SaleLine.costs`). A version 1 sale
    recorded no costs; its lines read back with `costs` None (not recorded), never as zero.
    """

    class_version = 2

    @staticmethod
    def upcast_v1_v2(state: dict[str, Any]) -> None:
        # Lines decode to `SaleLine`, whose `costs` defaults to None: a line written as a
        # mapping (a reader without the transcodings) says so explicitly.
        state["lines"] = [
            {**line, "costs": None} if isinstance(line, dict) else line
            for line in state["lines"]]

    sale_id: str
    outlet: str
    lines: Sequence[SaleLine]
    occurred_at: datetime
    actor: str
    idempotency_key: str


class SaleRefunded(AggregateEvent):
    refund_id: str
    lines: Sequence[RefundLine]
    occurred_at: datetime
    actor: str
    idempotency_key: str

    def apply(self, aggregate: Sale) -> None:
        aggregate.record_refund(self.refund_id, self.lines)


# --------------------------------------------------------------------------- transfer


class TransferStarted(AggregateCreated):
    transfer_id: str
    from_outlet: str
    to_outlet: str
    sku: str
    batches: Sequence[BatchIdentity]
    occurred_at: datetime
    actor: str
    idempotency_key: str


class TransferCompleted(AggregateEvent):
    occurred_at: datetime
    actor: str

    def apply(self, aggregate: Transfer) -> None:
        aggregate.received = True


# --------------------------------------------------------------------------- idempotency


class CommandAccepted(AggregateCreated):
    """A command was accepted under an idempotency key; `result` is what its caller was told."""

    key: str
    kind: str
    fingerprint: str
    result: dict[str, Any]

    def apply(self, aggregate: CommandRecord) -> None:
        pass


# --------------------------------------------------------------------------- store settings


class StoreCurrencySet(AggregateCreated):
    """The store's one currency (ISO 4217 code) and how many decimal places its unit costs
    may have: every cost in the store is in it. Recorded once; a store without this event
    has no currency named and allows costs of up to six places."""

    currency: str
    cost_places: int
    actor: str

    def apply(self, aggregate: StoreSettings) -> None:
        pass


# --------------------------------------------------------------------------- holds


class HoldRegisterOpened(AggregateCreated):
    """The first hold of one of a SKU's lots opened the SKU's hold register."""

    sku: str


class LotHeld(AggregateEvent):
    """A lot (the SKU's batch `batch_id`) was made unsellable at `outlet`, or at every outlet
    (None), from `occurred_at` until released: a recall, a quality check, a damaged delivery.
    Held stock stays on hand; no movement without a named batch takes it."""

    sku: str
    batch_id: str
    outlet: str | None
    reason: str
    actor: str
    occurred_at: datetime
    idempotency_key: str

    def apply(self, aggregate: HoldRegister) -> None:
        aggregate.add_hold(Hold(self.batch_id, self.outlet, self.occurred_at, self.reason,
                                self.actor))


class LotReleased(AggregateEvent):
    """The hold of a lot in the scope named (`outlet`, None: everywhere) ended."""

    sku: str
    batch_id: str
    outlet: str | None
    reason: str
    actor: str
    occurred_at: datetime
    idempotency_key: str

    def apply(self, aggregate: HoldRegister) -> None:
        aggregate.end_hold(self.batch_id, self.outlet, self.occurred_at, self.reason)


# --------------------------------------------------------------------------- opening balances


class BalanceImportStarted(AggregateCreated):
    """An import of opening balances began: its file, by name and sha256 digest, how many rows
    it holds, and in how many chunks of at most `chunk_rows` rows (in the import's own row
    order, `ledger.domain.opening_balances.plan_chunks`) it is recorded.

    The rows themselves are `BatchReceived` events of their stock items, each with the file
    and line as its reference (`source:line`) and `import:<digest>:<line>` as its key.
    """

    source: str
    digest: str
    rows: int
    chunks: int
    chunk_rows: int
    actor: str


class BalanceChunkImported(AggregateEvent):
    """Chunk `chunk` (rows `first_row` to `first_row + rows - 1` in the import's order) was
    recorded, in the same transaction as its receipts: the import's progress, which a rerun
    resumes from."""

    chunk: int
    first_row: int
    rows: int

    def apply(self, aggregate: BalanceImport) -> None:
        aggregate.chunks_recorded = self.chunk + 1
        aggregate.rows_recorded += self.rows


def _field(value: object, name: str) -> Any:
    """A field of a payload as decoded (a model) or as a mapping."""
    return value[name] if isinstance(value, dict) else getattr(value, name)
