"""A stock item: one SKU at one outlet, with its batches. The consistency boundary of a sale."""

from __future__ import annotations

import bisect
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from eventsourcing.domain import Aggregate

from ledger import events
from ledger.domain.allocation import (
    Allocation,
    BatchStock,
    allocate_in_order,
    fefo_key,
    fifo_key,
    is_sellable,
)
from ledger.domain.corrections import BatchFacts, CorrectionRequest, Receipt, plan_correction
from ledger.domain.costing import CostPiece, take_costs
from ledger.domain.errors import BatchConflict, InsufficientStock, InvariantBroken, UnknownBatch
from ledger.domain.identity import stock_item_id
from ledger.domain.late_sales import restocks_shortfall
from ledger.domain.layers import (
    Layer,
    common_cost,
    consume_first_in,
    costs_taken,
    on_shelf,
    take_first_in,
    with_layer,
)
from ledger.domain.quantities import AllocationPolicy, BatchIdentity, BatchTake
from ledger.domain.rules import BatchExpiry, batches_due_to_expire, count_batches, settle_shortfall


@dataclass(slots=True)
class BatchState:
    """One batch at the stock item: its identity, and its live cost layers (`ledger.domain.
    layers`), kept in first-in-first-out order."""

    batch_id: str
    expires_on: date | None
    received_seq: int
    received_at: datetime | None
    """Business time of the batch's first arrival here."""
    layers: list[Layer] = field(default_factory=list)
    quantity: int = 0
    """The sum of the layers' quantities."""
    expired: bool = False

    def as_stock(self, at: datetime | None = None) -> BatchStock:
        """The allocation's view of the batch for a movement dated `at`: only the units of
        layers on the shelf by then (`on_shelf`); every unit when `at` is None."""
        quantity = self.quantity if at is None else self.on_shelf(at)
        return BatchStock(self.batch_id, quantity, self.expires_on, self.received_seq)

    def on_shelf(self, at: datetime | None) -> int:
        layers = self.layers
        if at is None or not layers or layers[-1].received_at <= at:
            return self.quantity
        return on_shelf(layers, at)

    @property
    def unit_cost(self) -> str | None:
        """The unit cost every live layer shares (None if they differ or lack one)."""
        return common_cost(self.layers)

    def copy(self) -> BatchState:
        # `copy.copy` of a slotted dataclass goes through `__reduce_ex__`: five times slower.
        # Layers are immutable: a new list of the same layers is a full copy.
        return BatchState(self.batch_id, self.expires_on, self.received_seq, self.received_at,
                          list(self.layers), self.quantity, self.expired)


@dataclass(frozen=True, slots=True)
class MovementContext:
    """Who, when and why: the fields every movement event carries."""

    occurred_at: datetime
    actor: str
    reference: str
    idempotency_key: str

    def fields(self, item: StockItem) -> dict[str, Any]:
        return {
            "outlet": item.outlet,
            "sku": item.sku,
            "occurred_at": self.occurred_at,
            "actor": self.actor,
            "reference": self.reference,
            "idempotency_key": self.idempotency_key,
        }


class StockItem(Aggregate):
    """Batches of one SKU at one outlet.

    Live batches (quantity above zero) are also kept in FEFO and FIFO order, so that allocation
    walks only the batches it takes from, however many live batches there are. Each batch
    keeps one cost layer per arrival (`ledger.domain.layers`); a movement dated in the past
    is decided against the layers that were on the shelf then.
    """

    def __init__(self, outlet: str, sku: str) -> None:
        self.outlet = outlet
        self.sku = sku
        self.batches: dict[str, BatchState] = {}
        self.fefo_order: list[tuple[int, int, str]] = []
        self.fifo_order: list[tuple[int, str]] = []
        self.batch_total = 0
        self.shortfall = 0
        self.reorder_level: int | None = None
        self.next_received_seq = 0
        self.next_layer_seq = 0
        # Batch states this object may change in place; None: all of them. A clone shares the
        # batch states with its original, and each copies one before its first change.
        self.owned_batches: set[str] | None = None

    @classmethod
    def open(cls, outlet: str, sku: str) -> StockItem:
        return cls._create(
            events.StockItemOpened, id=stock_item_id(outlet, sku), outlet=outlet, sku=sku
        )

    def clone(self) -> StockItem:
        """A copy to decide on, cheaper than a deep copy: the batch states are shared until
        either side changes one (copy on write); the orders hold immutable tuples."""
        other = object.__new__(StockItem)
        other.__dict__.update(self.__dict__)
        other.__dict__["_pending_events"] = []
        other.batches = dict(self.batches)
        other.fefo_order = list(self.fefo_order)
        other.fifo_order = list(self.fifo_order)
        self.owned_batches = set()
        other.owned_batches = set()
        return other

    def writable_batch(self, batch_id: str) -> BatchState:
        """The batch's state, copied first if it is shared with a clone or an original."""
        batch = self.batches[batch_id]
        owned = self.owned_batches
        if owned is not None and batch_id not in owned:
            batch = self.batches[batch_id] = batch.copy()
            owned.add(batch_id)
        return batch

    # ------------------------------------------------------------------ reads

    @property
    def on_hand(self) -> int:
        """Everything on the shelf, expired or not, less stock sold into negative."""
        return self.batch_total - self.shortfall

    def available(self, on_date: date, held: frozenset[str] = frozenset()) -> int:
        """Sellable stock on `on_date`: on hand less the live batches `is_sellable` refuses
        and the `held` ones (`ledger.domain.holds`).

        The FEFO order is by expiry, so the unsellable batches are its first ones."""
        unsellable = 0
        for *_, batch_id in self.fefo_order:
            batch = self.batches[batch_id]
            if is_sellable(batch.expires_on, on_date):
                break
            unsellable += batch.quantity
        return self.batch_total - unsellable - self.shortfall - self.held_quantity(
            held, on_date)

    def held_quantity(self, held: frozenset[str], on_date: date | None = None) -> int:
        """Units on the shelf in `held` batches (of those sellable on `on_date`, if given:
        an expired batch is unavailable already)."""
        total = 0
        for batch_id in held:
            batch = self.batches.get(batch_id)
            if batch is not None and batch.quantity > 0 and (
                    on_date is None or is_sellable(batch.expires_on, on_date)):
                total += batch.quantity
        return total

    def available_at(self, at: datetime, held: frozenset[str] = frozenset()) -> int:
        """What a sale dated `at` could take: the units of layers on the shelf by then, in
        batches sellable on its date and not `held`, less stock sold into negative."""
        on_date = at.date()
        on_shelf_then = 0
        for *_, batch_id in self.fefo_order:
            batch = self.batches[batch_id]
            if batch_id not in held and is_sellable(batch.expires_on, on_date):
                on_shelf_then += batch.on_shelf(at)
        return on_shelf_then - self.shortfall

    def live_batches(self, policy: AllocationPolicy, at: datetime | None = None,
                     held: frozenset[str] = frozenset()) -> Iterator[BatchStock]:
        """The batches holding stock and not `held`, in the order of the policy's key
        (`POLICY_KEYS`), each with what a movement dated `at` may take of it (all of it when
        `at` is None)."""
        order = self.fefo_order if policy == "fefo" else self.fifo_order
        for key in order:
            if held and key[-1] in held:
                continue
            yield self.batches[key[-1]].as_stock(at)

    def batch_quantities(self) -> dict[str, int]:
        return {b.batch_id: b.quantity for b in self.batches.values() if b.quantity != 0}

    # ------------------------------------------------------------------ decisions

    def receive(self, batch: BatchIdentity, context: MovementContext) -> None:
        existing = self.batches.get(batch.batch_id)
        if existing is not None:
            self._check_same_batch(existing, batch)
        self.trigger_event(
            events.BatchReceived,
            batch=batch,
            shortfall_settled=settle_shortfall(self.shortfall, batch.quantity),
            **context.fields(self),
        )

    def sell(
        self,
        sale_id: str,
        quantity: int,
        policy: AllocationPolicy,
        allow_negative: bool,
        context: MovementContext,
        held: frozenset[str] = frozenset(),
    ) -> Allocation:
        """Allocate a sale line from the layers on the shelf at its business time, skipping
        `held` batches. `allow_negative`: record what no batch covers as a shortfall (the
        outlet's policy, or a late sale's, `ledger.domain.late_sales`) instead of refusing."""
        at = context.occurred_at
        allocation = self.allocate(quantity, policy, at.date(), at, held)
        if allocation.unallocated and not allow_negative:
            raise self._short(f"sale {sale_id}", quantity, at, held)
        # Costed before the event takes the units from their layers.
        allocation = Allocation(allocation.takes, allocation.unallocated,
                                self.costs_of(allocation.takes))
        self.trigger_event(
            events.StockSold,
            sale_id=sale_id,
            takes=allocation.takes,
            unallocated=allocation.unallocated,
            **context.fields(self),
        )
        return allocation

    def costs_of(self, takes: Sequence[BatchTake]) -> tuple[CostPiece, ...]:
        """What these takes would cost now: each batch's units first in, first out from its
        layers (`ledger.domain.costing.take_costs`). Changes nothing."""
        pieces: list[CostPiece] = []
        for take in takes:
            pieces += take_costs(take.batch_id, self.batches[take.batch_id].layers,
                                 take.quantity)
        return tuple(pieces)

    def allocate(self, quantity: int, policy: AllocationPolicy, on_date: date,
                 at: datetime | None = None,
                 held: frozenset[str] = frozenset()) -> Allocation:
        """Allocate by `policy` from batches sellable on `on_date` and not `held`, taking
        only what was on the shelf at `at` (None: everything on the shelf now)."""
        return allocate_in_order(self.live_batches(policy, at, held), quantity, on_date)

    def refund(
        self,
        sale_id: str,
        refund_id: str,
        takes: Sequence[BatchTake],
        unallocated: int,
        write_off: bool,
        context: MovementContext,
        costs: Mapping[str, Sequence[CostPiece]] | None = None,
    ) -> tuple[tuple[BatchTake, ...], tuple[BatchTake, ...]]:
        """Return units to their batches; a batch whose expiry date has come is written off.

        `unallocated` units were sold into negative stock; restocked, they settle the shortfall.
        Restocked units come back as layers of their own, at the refund's business time and
        at the cost they left with: `costs` holds, per batch, the pieces the returned units
        of it left at (`ledger.domain.costing.refund_pieces`); a batch it does not name comes
        back without a recorded cost.
        """
        on_date = context.occurred_at.date()
        restocked: list[BatchTake] = []
        written_off: list[BatchTake] = []
        for take in takes:
            batch = self.batches[take.batch_id]
            sellable = is_sellable(batch.expires_on, on_date) and not batch.expired
            (restocked if sellable and not write_off else written_off).append(take)
        self.trigger_event(
            events.StockRefunded,
            sale_id=sale_id,
            refund_id=refund_id,
            restocked=tuple(restocked),
            written_off=tuple(written_off),
            unallocated_returned=unallocated,
            unallocated_restocked=restocks_shortfall(write_off, self.shortfall, unallocated),
            restocked_costs=tuple(_restock_pieces(restocked, costs or {})),
            **context.fields(self),
        )
        return tuple(restocked), tuple(written_off)

    def expire(self, as_of: date, context: MovementContext) -> list[BatchTake]:
        due = batches_due_to_expire(
            (
                BatchExpiry(b.batch_id, b.expires_on, b.quantity, b.expired)
                for b in self.batches.values()
            ),
            as_of,
        )
        for take in due:
            expires_on = self.batches[take.batch_id].expires_on
            assert expires_on is not None  # batches_due_to_expire only returns dated batches
            self.trigger_event(
                events.BatchExpired,
                batch_id=take.batch_id,
                quantity=take.quantity,
                expires_on=expires_on,
                as_of=as_of,
                **context.fields(self),
            )
        return due

    def count(
        self, counted: Mapping[str, int], whole_sku: bool, context: MovementContext
    ) -> events.StockCounted:
        for batch_id in counted:
            if batch_id not in self.batches:
                raise UnknownBatch(self.outlet, self.sku, batch_id)
        counts = count_batches(self.batch_quantities(), counted, whole_sku=whole_sku)
        self.trigger_event(
            events.StockCounted,
            whole_sku=whole_sku,
            counts=counts,
            shortfall_cleared=self.shortfall if whole_sku else 0,
            **context.fields(self),
        )
        event = self.pending_events[-1]
        assert isinstance(event, events.StockCounted)
        return event

    def write_off(
        self,
        quantity: int,
        batch_id: str | None,
        reason: str,
        policy: AllocationPolicy,
        context: MovementContext,
        held: frozenset[str] = frozenset(),
    ) -> tuple[BatchTake, ...]:
        """Write off a named batch (held or not: a recalled lot is destroyed so), or else
        what the policy allocates from the batches not `held`."""
        takes = self._take_named_or_allocated(quantity, batch_id, policy, context, "write-off",
                                              held)
        self.trigger_event(events.StockWrittenOff, reason=reason, takes=takes,
                           **context.fields(self))
        return takes

    def dispatch(
        self,
        transfer_id: str,
        to_outlet: str,
        quantity: int,
        policy: AllocationPolicy,
        context: MovementContext,
        held: frozenset[str] = frozenset(),
    ) -> tuple[BatchIdentity, ...]:
        """Send stock to another outlet: one entry per batch and unit cost taken, so that the
        destination receives the cost layers that left (first in, first out). `held` batches
        stay."""
        takes = self._take_named_or_allocated(quantity, None, policy, context,
                                              f"transfer {transfer_id}", held)
        batches: list[BatchIdentity] = []
        for take in takes:
            batch = self.batches[take.batch_id]
            _, taken = take_first_in(batch.layers, take.quantity)
            for unit_cost, part in costs_taken(taken):
                batches.append(BatchIdentity(batch_id=take.batch_id, quantity=part,
                                             expires_on=batch.expires_on, unit_cost=unit_cost))
        self.trigger_event(
            events.TransferDispatched,
            transfer_id=transfer_id,
            to_outlet=to_outlet,
            batches=tuple(batches),
            **context.fields(self),
        )
        return tuple(batches)

    def receive_transfer(
        self,
        transfer_id: str,
        from_outlet: str,
        batches: Sequence[BatchIdentity],
        context: MovementContext,
    ) -> None:
        self.check_can_receive(batches)
        total = sum(batch.quantity for batch in batches)
        self.trigger_event(
            events.TransferReceived,
            transfer_id=transfer_id,
            from_outlet=from_outlet,
            batches=tuple(batches),
            shortfall_settled=settle_shortfall(self.shortfall, total),
            **context.fields(self),
        )

    def check_can_receive(self, batches: Sequence[BatchIdentity]) -> None:
        """Refuse batches whose id this stock item already holds with another expiry."""
        for batch in batches:
            existing = self.batches.get(batch.batch_id)
            if existing is not None:
                self._check_same_batch(existing, batch)

    def find(self, found: Mapping[str, BatchIdentity], count_reference: str,
             context: MovementContext) -> None:
        """Record batches a count found that the ledger did not know here (`StockFound`),
        each at the expiry and cost the count gives."""
        for batch in found.values():
            if batch.batch_id in self.batches:
                raise BatchConflict(f"batch {batch.batch_id} is known at outlet "
                                    f"{self.outlet}: count it, it is not found stock")
            self.trigger_event(events.StockFound, count_reference=count_reference,
                               batch=batch, **context.fields(self))

    def correct_receipt(self, receipt: Receipt, request: CorrectionRequest, reason: str,
                        context: MovementContext, sent_to: tuple[str, ...] = ()
                        ) -> events.ReceiptCorrected:
        """Correct a receipt typed wrong (`plan_correction` decides whether it may be);
        `sent_to` names the outlets the receipt's batch was dispatched to from here."""
        batch = self.batches.get(receipt.batch_id)
        facts = BatchFacts(0, receipt.expires_on, False, sent_to) if batch is None else \
            BatchFacts(batch.quantity, batch.expires_on, batch.expired, sent_to)
        target_id = request.batch_id
        target = self.batches.get(target_id) if target_id else None
        after = plan_correction(self.outlet, self.sku, receipt, request, facts,
                                None if target is None else BatchFacts(
                                    target.quantity, target.expires_on, target.expired))
        moved = after.batch_id != receipt.batch_id
        self.trigger_event(
            events.ReceiptCorrected, receipt_version=receipt.version,
            receipt_reference=receipt.reference, batch_id=receipt.batch_id,
            quantity_before=receipt.quantity, quantity_after=after.quantity,
            expires_on_before=receipt.expires_on, expires_on_after=after.expires_on,
            unit_cost_before=receipt.unit_cost, unit_cost_after=after.unit_cost,
            corrected_batch_id=after.batch_id if moved else None,
            quantity_moved=after.quantity - receipt.shortfall_settled if moved else 0,
            reason=reason, **context.fields(self))
        event = self.pending_events[-1]
        assert isinstance(event, events.ReceiptCorrected)
        return event

    def set_reorder_level(self, level: int | None, actor: str) -> None:
        self.trigger_event(events.ReorderLevelSet, outlet=self.outlet, sku=self.sku,
                           level=level, actor=actor)

    def _take_named_or_allocated(
        self,
        quantity: int,
        batch_id: str | None,
        policy: AllocationPolicy,
        context: MovementContext,
        what: str,
        held: frozenset[str] = frozenset(),
    ) -> tuple[BatchTake, ...]:
        at = context.occurred_at
        if batch_id is None:
            allocation = self.allocate(quantity, policy, at.date(), at, held)
            if allocation.unallocated:
                raise InsufficientStock(what, self.outlet, self.sku, quantity,
                                        allocation.allocated,
                                        self._when_it_mattered(at, held))
            return allocation.takes
        batch = self.batches.get(batch_id)
        if batch is None:
            raise UnknownBatch(self.outlet, self.sku, batch_id)
        then = batch.on_shelf(at)
        if then < quantity:
            raise InsufficientStock(f"{what} batch {batch_id}", self.outlet, self.sku,
                                    quantity, max(then, 0),
                                    at if then != batch.quantity else None)
        return (BatchTake(batch_id=batch_id, quantity=quantity),)

    def _short(self, reference: str, quantity: int, at: datetime,
               held: frozenset[str] = frozenset()) -> InsufficientStock:
        return InsufficientStock(reference, self.outlet, self.sku, quantity,
                                 max(0, self.available_at(at, held)),
                                 self._when_it_mattered(at, held))

    def _when_it_mattered(self, at: datetime,
                          held: frozenset[str] = frozenset()) -> datetime | None:
        """`at`, if less was on the shelf then than is now: a refusal then names the time."""
        return at if self.available_at(at, held) != self.available(at.date(), held) else None

    @staticmethod
    def _check_same_batch(existing: BatchState, incoming: BatchIdentity) -> None:
        if existing.expires_on != incoming.expires_on:
            raise BatchConflict(
                f"batch {existing.batch_id} is recorded with expiry {existing.expires_on}, "
                f"not {incoming.expires_on}"
            )

    # ------------------------------------------------------------------ evolution (events)

    def add_to_batch(self, identity: BatchIdentity, quantity: int, at: datetime,
                     source: str) -> None:
        """`quantity` of `identity` arrived at business time `at`: a new layer at its cost."""
        batch = self.batches.get(identity.batch_id)
        if batch is None:
            batch = BatchState(
                batch_id=identity.batch_id,
                expires_on=identity.expires_on,
                received_seq=self.next_received_seq,
                received_at=at,
            )
            self.next_received_seq += 1
            self.batches[identity.batch_id] = batch
            if self.owned_batches is not None:
                self.owned_batches.add(identity.batch_id)
        else:
            batch = self.writable_batch(identity.batch_id)
        self._add_layer(batch, quantity, at, identity.unit_cost, source)

    def take_from_batch(self, batch_id: str, quantity: int) -> None:
        """`quantity` left the batch: from its layers first in, first out."""
        batch = self.writable_batch(batch_id)
        if quantity > batch.quantity:
            raise InvariantBroken(
                f"{self.outlet}/{self.sku} batch {batch_id}: took {quantity} of {batch.quantity}"
            )
        consume_first_in(batch.layers, quantity)  # a writable batch owns its list of layers
        self._change_batch(batch, batch.quantity - quantity)

    def return_to_batch(self, batch_id: str, quantity: int, at: datetime, source: str,
                        unit_cost: str | None = None) -> None:
        """Units came back to the batch (a refund's restock): a layer of their own, at the
        cost they left with (None: not recorded)."""
        self._add_layer(self.writable_batch(batch_id), quantity, at, unit_cost, source)

    def set_batch(self, batch_id: str, quantity: int, at: datetime, source: str) -> None:
        """A count found `quantity` in the batch: units short leave first in, first out;
        units found beyond what was expected are a layer of their own, with no cost."""
        batch = self.writable_batch(batch_id)
        if quantity < 0:
            raise InvariantBroken(f"{self.outlet}/{self.sku} batch {batch_id} < 0")
        if quantity < batch.quantity:
            self.take_from_batch(batch_id, batch.quantity - quantity)
        elif quantity > batch.quantity:
            self._add_layer(batch, quantity - batch.quantity, at, None, source)

    def settle_shortfall(self, quantity: int) -> None:
        self.shortfall -= quantity

    def apply_correction(self, event: events.ReceiptCorrected) -> None:
        """A receipt's correction: its cost, then its quantity, then its expiry or batch id."""
        source = f"receipt {event.receipt_reference}"
        batch_id = event.batch_id
        if event.unit_cost_after != event.unit_cost_before and batch_id in self.batches:
            batch = self.writable_batch(batch_id)
            batch.layers = [
                Layer(layer.seq, layer.received_at, layer.quantity, layer.received,
                      event.unit_cost_after, layer.source)
                if layer.source == source else layer for layer in batch.layers]
        change = event.quantity_after - event.quantity_before
        identity = BatchIdentity(batch_id=batch_id, quantity=0,
                                 expires_on=event.expires_on_before,
                                 unit_cost=event.unit_cost_after)
        if change > 0:
            self.add_to_batch(identity, change, event.occurred_at, source)
        elif change < 0:
            self._take_from_source(batch_id, -change, source)
        moved_to = event.corrected_batch_id
        if moved_to is None:
            if event.expires_on_after != event.expires_on_before:
                self._set_expiry(batch_id, event.expires_on_after)
            return
        self._take_from_source(batch_id, event.quantity_moved, source)
        self.add_to_batch(BatchIdentity(batch_id=moved_to, quantity=event.quantity_moved,
                                        expires_on=event.expires_on_after,
                                        unit_cost=event.unit_cost_after),
                          event.quantity_moved, event.occurred_at, source)

    def _take_from_source(self, batch_id: str, quantity: int, source: str) -> None:
        """Take `quantity` from the batch: from the layers `source` made first, then first
        in, first out."""
        batch = self.writable_batch(batch_id)
        if quantity > batch.quantity:
            raise InvariantBroken(
                f"{self.outlet}/{self.sku} batch {batch_id}: took {quantity} of {batch.quantity}")
        remaining = quantity
        layers: list[Layer] = []
        for layer in batch.layers:
            part = min(layer.quantity, remaining) if layer.source == source else 0
            remaining -= part
            if layer.quantity - part:
                layers.append(Layer(layer.seq, layer.received_at, layer.quantity - part,
                                    layer.received, layer.unit_cost, layer.source))
        consume_first_in(layers, remaining)
        batch.layers = layers
        self._change_batch(batch, batch.quantity - quantity)

    def _set_expiry(self, batch_id: str, expires_on: date | None) -> None:
        """A corrected expiry date: the batch takes its new place in the FEFO order."""
        batch = self.writable_batch(batch_id)
        live = batch.quantity > 0
        if live:
            _remove_sorted(self.fefo_order, fefo_key(batch))
        batch.expires_on = expires_on
        if live:
            bisect.insort(self.fefo_order, fefo_key(batch))

    def _add_layer(self, batch: BatchState, quantity: int, at: datetime,
                   unit_cost: str | None, source: str) -> None:
        if quantity < 0:
            raise InvariantBroken(f"{self.outlet}/{self.sku} batch {batch.batch_id} < 0")
        if quantity == 0:
            return
        layer = Layer(seq=self.next_layer_seq, received_at=at, quantity=quantity,
                      received=quantity, unit_cost=unit_cost, source=source)
        self.next_layer_seq += 1
        batch.layers = with_layer(batch.layers, layer)
        self._change_batch(batch, batch.quantity + quantity)

    def _change_batch(self, batch: BatchState, quantity: int) -> None:
        if quantity < 0:
            raise InvariantBroken(f"{self.outlet}/{self.sku} batch {batch.batch_id} < 0")
        was_live = batch.quantity > 0
        self.batch_total += quantity - batch.quantity
        batch.quantity = quantity
        is_live = quantity > 0
        if is_live and not was_live:
            bisect.insort(self.fefo_order, fefo_key(batch))
            bisect.insort(self.fifo_order, fifo_key(batch))
        elif was_live and not is_live:
            _remove_sorted(self.fefo_order, fefo_key(batch))
            _remove_sorted(self.fifo_order, fifo_key(batch))


def _restock_pieces(restocked: Sequence[BatchTake],
                    costs: Mapping[str, Sequence[CostPiece]]) -> list[CostPiece]:
    """The restocked takes as cost pieces: a batch's given pieces, or one without a cost."""
    pieces: list[CostPiece] = []
    for take in restocked:
        given = costs.get(take.batch_id)
        if given is None:
            pieces.append(CostPiece(batch_id=take.batch_id, quantity=take.quantity))
            continue
        if sum(piece.quantity for piece in given) != take.quantity:
            raise InvariantBroken(f"batch {take.batch_id}: restocking {take.quantity}, "
                                  f"costed {sum(piece.quantity for piece in given)}")
        pieces += given
    return pieces


def _remove_sorted(order: list[Any], key: Any) -> None:
    index = bisect.bisect_left(order, key)
    if index == len(order) or order[index] != key:
        raise InvariantBroken(f"live batch {key} missing from its order")
    del order[index]
