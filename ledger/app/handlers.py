"""One short function per command: load what it needs, let the aggregates decide, answer.

Each handler reads and changes aggregates through a `UnitOfWork` only; saving, retrying,
queueing and idempotency are the command loop's (`ledger.app.loop`). The decisions themselves
are the aggregates' methods (`StockItem.sell` allocates with `ledger.domain.allocation`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, TypeVar
from uuid import UUID

from ledger import events
from ledger.app import commands as c
from ledger.app import results as r
from ledger.app.unit_of_work import UnitOfWork
from ledger.domain import identity
from ledger.domain.corrections import CorrectionRequest, Receipt, corrected, find_receipt
from ledger.domain.costing import MAX_COST_PLACES, CostPiece, refund_pieces
from ledger.domain.counts import split_found
from ledger.domain.errors import (
    DuplicateReference,
    LotNotHeld,
    RefundExceedsSale,
    TransferAlreadyReceived,
    UnknownSale,
    UnknownTransfer,
)
from ledger.domain.late_sales import is_late_sale, records_shortfall
from ledger.domain.outlet import Outlet, describe_window, parse_window
from ledger.domain.quantities import BatchIdentity, BatchTake
from ledger.domain.rules import allocate_refund_with_shortfall
from ledger.domain.sale import Sale
from ledger.domain.stock_item import MovementContext, StockItem
from ledger.domain.store_settings import StoreSettings, check_unit_cost
from ledger.domain.transfer import Transfer

CommandT = TypeVar("CommandT", bound=c.Command)
ResultT = TypeVar("ResultT", bound=r.CommandResult)


@dataclass(frozen=True, slots=True)
class Handler(Generic[CommandT, ResultT]):
    """How the command loop runs one kind of command."""

    kind: str
    """Recorded with the command's key; names the result class on a replay."""
    result_class: type[ResultT]
    decide: Callable[[UnitOfWork, CommandT, str], ResultT]
    """Decide on the unit of work's aggregates; `str` is the idempotency key."""
    streams: Callable[[CommandT], list[UUID]]
    """The streams known from the command alone, to queue on if this till lost on them lately."""
    records_command: bool = True
    """Whether the key is recorded (idempotent); the expiry sweep's are not."""
    fresh_first: bool = False
    """Decide on fresh state from the first attempt instead of validating cached reads."""
    references: Callable[[CommandT], list[tuple[UUID, str]]] = lambda _: []
    """The streams the command creates that must not exist yet (a sale's), each with the
    name a refusal gives it (`sale S-1`)."""


def already_recorded(reference: str, existing: object) -> str:
    """Why a sale or transfer id cannot be used again, naming where it was used."""
    if isinstance(existing, Sale):
        return (f"{reference} is already recorded, at outlet {existing.outlet}: sale ids are "
                "unique across all outlets (docs/decisions/0011), so give this sale another "
                "id (a till's ids prefixed with its outlet, say)")
    if isinstance(existing, Transfer):
        return (f"{reference} is already recorded, from {existing.from_outlet} to "
                f"{existing.to_outlet}: transfer ids are unique across all outlets")
    return f"{reference} is already recorded"


def level(item: StockItem, on: datetime, held: frozenset[str] = frozenset()) -> r.StockLevel:
    """A stock item's on-hand and available stock on a business day, `held` batches on hand
    but not available."""
    return r.StockLevel(outlet=item.outlet, sku=item.sku, on_hand=item.on_hand,
                        available=item.available(on.date(), held),
                        held=item.held_quantity(held, on.date()))


def held_now(uow: UnitOfWork, sku: str, outlet: str,
             at: datetime | None = None) -> frozenset[str]:
    """The batches of `sku` a movement at `outlet` dated `at` (None: now) may not take."""
    register = uow.holds(sku)
    return frozenset() if register is None else register.held(outlet, at)


def _level(uow: UnitOfWork, item: StockItem, on: datetime) -> r.StockLevel:
    return level(item, on, held_now(uow, item.sku, item.outlet))


def _outlet_and_item(outlet: str, sku: str) -> list[UUID]:
    return [identity.outlet_id(outlet), identity.stock_item_id(outlet, sku)]


def receive(uow: UnitOfWork, command: c.ReceiveStock, key: str) -> r.ReceiptResult:
    context = MovementContext(command.business_time(), command.actor,
                              command.reference or command.batch_id, key)
    uow.prefetch(_outlet_and_item(command.outlet, command.sku))
    uow.outlet_or_open(command.outlet, command.actor)
    item = uow.stock_item_or_open(command.outlet, command.sku)
    check_unit_cost(uow.get(identity.store_settings_id(), StoreSettings), command.unit_cost)
    unit_cost = None if command.unit_cost is None else str(command.unit_cost)
    item.receive(BatchIdentity(batch_id=command.batch_id, quantity=command.quantity,
                               expires_on=command.expires_on, unit_cost=unit_cost), context)
    event = item.pending_events[-1]
    assert isinstance(event, events.BatchReceived)
    return r.ReceiptResult(
        kind="receive", idempotency_key=key, outlet=command.outlet, sku=command.sku,
        batch_id=command.batch_id, quantity=command.quantity,
        shortfall_settled=event.shortfall_settled, stock=_level(uow, item, context.occurred_at))


def _sale_streams(command: c.SellStock) -> list[UUID]:
    return [identity.outlet_id(command.outlet)] + [
        identity.stock_item_id(command.outlet, line.sku) for line in command.lines]


def sell(uow: UnitOfWork, command: c.SellStock, key: str) -> r.SaleResult:
    """Each line is allocated by its stock item (`StockItem.sell`), all lines or none."""
    context = MovementContext(command.business_time(), command.actor, command.sale_id, key)
    uow.prefetch(_sale_streams(command)
                 + uow.hold_register_ids([line.sku for line in command.lines]))
    outlet = uow.outlet(command.outlet)
    now = c.now()
    outlet.check_sale_time(command.sale_id, context.occurred_at, now)
    # A late sale's goods have left the shop: short of stock, it is recorded with its
    # shortfall whatever the outlet's policy (`ledger.domain.late_sales`).
    shortfall_recorded = records_shortfall(
        is_late_sale(context.occurred_at, now, outlet.late_sales_window), outlet.allow_negative)
    sold: list[r.SoldLine] = []
    for line in command.lines:
        item = uow.stock_item(command.outlet, line.sku)
        allocation = item.sell(command.sale_id, line.quantity, outlet.allocation_policy,
                               shortfall_recorded, context,
                               held_now(uow, line.sku, command.outlet, context.occurred_at))
        sold.append(r.SoldLine(sku=line.sku, quantity=line.quantity, takes=allocation.takes,
                               unallocated=allocation.unallocated, costs=allocation.costs,
                               stock=_level(uow, item, context.occurred_at)))
    recorded_lines = [events.SaleLine(sku=s.sku, quantity=s.quantity, takes=s.takes,
                                      unallocated=s.unallocated, costs=s.costs) for s in sold]
    uow.add_created(Sale.record(command.sale_id, command.outlet, recorded_lines,
                                context.occurred_at, command.actor, key),
                    unique_reference=f"sale {command.sale_id}")
    return r.SaleResult(kind="sell", idempotency_key=key, sale_id=command.sale_id,
                        outlet=command.outlet, lines=tuple(sold))


def refund(uow: UnitOfWork, command: c.RefundSale, key: str) -> r.RefundResult:
    """Units go back to the batches the sale took them from (`allocate_refund_with_shortfall`)."""
    context = MovementContext(command.business_time(), command.actor, command.refund_id, key)
    sale = uow.get(identity.sale_id(command.sale_id), Sale)
    if sale is None:
        raise UnknownSale(command.sale_id)
    if command.refund_id in sale.refund_ids:
        raise DuplicateReference(
            f"refund {command.refund_id} of sale {command.sale_id} is already recorded")
    uow.prefetch([identity.stock_item_id(sale.outlet, line.sku) for line in command.lines])
    refunded: list[r.RefundedLine] = []
    for line in command.lines:
        if line.sku not in sale.lines:
            raise RefundExceedsSale(command.sale_id, line.sku, line.quantity, 0)
        takes, unallocated = allocate_refund_with_shortfall(
            command.sale_id, line.sku, sale.sold_takes(line.sku),
            sale.refunded_by_batch(line.sku), sale.unallocated_left(line.sku), line.quantity)
        item = uow.stock_item(sale.outlet, line.sku)
        costs = returned_costs(sale, line.sku, takes)
        restocked, written_off = item.refund(command.sale_id, command.refund_id, takes,
                                             unallocated, command.write_off, context, costs)
        event = item.pending_events[-1]
        assert isinstance(event, events.StockRefunded)
        refunded.append(r.RefundedLine(
            sku=line.sku, quantity=line.quantity, restocked=restocked, written_off=written_off,
            unallocated=unallocated, stock=_level(uow, item, context.occurred_at),
            restocked_costs=tuple(event.restocked_costs)))
    sale.refund(command.refund_id,
                [events.RefundLine(**line.model_dump(
                    exclude={"stock", "restocked_costs", "restocked_cost"}))
                 for line in refunded],
                context.occurred_at, command.actor, key)
    return r.RefundResult(kind="refund", idempotency_key=key, sale_id=command.sale_id,
                          refund_id=command.refund_id, outlet=sale.outlet,
                          lines=tuple(refunded))


def returned_costs(sale: Sale, sku: str,
                   takes: Sequence[BatchTake]) -> dict[str, list[CostPiece]]:
    """Per batch, the cost pieces units returned to it come back at: those the sale took
    them at, after the units of the batch already refunded (`costing.refund_pieces`)."""
    line = sale.lines[sku]
    refunded = sale.refunded_by_batch(sku)
    return {take.batch_id: refund_pieces(take.batch_id, line.costs,
                                         refunded.get(take.batch_id, 0), take.quantity)
            for take in takes}


def count(uow: UnitOfWork, command: c.CountStock, key: str) -> r.CountResult:
    """Found batches (declared so, `ledger.domain.counts.split_found`) are recorded first,
    so that a whole-SKU count sets every batch, found ones included."""
    context = MovementContext(command.business_time(), command.actor,
                              command.count_id or key, key)
    uow.outlet(command.outlet)
    item = uow.stock_item(command.outlet, command.sku)
    _, found = split_found(command.outlet, command.sku, set(item.batches), command.counts,
                           set(command.found))
    found_batches = {
        batch_id: BatchIdentity(
            batch_id=batch_id, quantity=quantity,
            expires_on=command.found[batch_id].expires_on,
            unit_cost=None if command.found[batch_id].unit_cost is None
            else str(command.found[batch_id].unit_cost))
        for batch_id, quantity in found.items()}
    item.find(found_batches, context.reference, context)
    event = item.count(command.counts, command.whole_sku, context)
    return r.CountResult(kind="count", idempotency_key=key, outlet=command.outlet,
                         sku=command.sku, whole_sku=command.whole_sku,
                         counts=tuple(event.counts), shortfall_cleared=event.shortfall_cleared,
                         stock=_level(uow, item, context.occurred_at),
                         found=tuple(found_batches.values()))


def write_off(uow: UnitOfWork, command: c.WriteOffStock, key: str) -> r.WriteOffResult:
    context = MovementContext(command.business_time(), command.actor,
                              command.reference or command.reason, key)
    outlet = uow.outlet(command.outlet)
    item = uow.stock_item(command.outlet, command.sku)
    takes = item.write_off(command.quantity, command.batch_id, command.reason,
                           outlet.allocation_policy, context,
                           held_now(uow, command.sku, command.outlet, context.occurred_at))
    return r.WriteOffResult(kind="write-off", idempotency_key=key, outlet=command.outlet,
                            sku=command.sku, reason=command.reason, takes=takes,
                            stock=_level(uow, item, context.occurred_at))


def _arrive(uow: UnitOfWork, transfer: Transfer, context: MovementContext) -> StockItem:
    uow.outlet_or_open(transfer.to_outlet, context.actor)
    destination = uow.stock_item_or_open(transfer.to_outlet, transfer.sku)
    destination.receive_transfer(transfer.transfer_id, transfer.from_outlet, transfer.batches,
                                 context)
    transfer.complete(context.occurred_at, context.actor)
    return destination


def _transfer_streams(command: c.TransferStock) -> list[UUID]:
    return [*_outlet_and_item(command.from_outlet, command.sku),
            identity.stock_item_id(command.to_outlet, command.sku)]


def transfer(uow: UnitOfWork, command: c.TransferStock, key: str) -> r.TransferResult:
    context = MovementContext(command.business_time(), command.actor, command.transfer_id, key)
    outlet = uow.outlet(command.from_outlet)
    source = uow.stock_item(command.from_outlet, command.sku)
    batches = source.dispatch(command.transfer_id, command.to_outlet, command.quantity,
                              outlet.allocation_policy, context,
                              held_now(uow, command.sku, command.from_outlet,
                                       context.occurred_at))
    if command.in_transit:
        # Refuse now what the destination could never receive, rather than strand it.
        waiting = uow.get(identity.stock_item_id(command.to_outlet, command.sku), StockItem)
        if waiting is not None:
            waiting.check_can_receive(batches)
    started = uow.add(
        Transfer.start(command.transfer_id, command.from_outlet, command.to_outlet,
                       command.sku, batches, context.occurred_at, command.actor, key),
        unique_reference=f"transfer {command.transfer_id}")
    destination = None if command.in_transit else _arrive(uow, started, context)
    return r.TransferResult(
        kind="transfer", idempotency_key=key, transfer_id=command.transfer_id,
        from_outlet=command.from_outlet, to_outlet=command.to_outlet, sku=command.sku,
        batches=batches, received=not command.in_transit,
        from_stock=_level(uow, source, context.occurred_at),
        to_stock=None if destination is None else _level(uow, destination,
                                                         context.occurred_at))


def receive_transfer(uow: UnitOfWork, command: c.ReceiveTransfer, key: str) -> r.TransferResult:
    context = MovementContext(command.business_time(), command.actor, command.transfer_id, key)
    started = uow.get(identity.transfer_id(command.transfer_id), Transfer)
    if started is None:
        raise UnknownTransfer(command.transfer_id)
    if started.received:
        raise TransferAlreadyReceived(f"transfer {command.transfer_id} was already received")
    destination = _arrive(uow, started, context)
    source = uow.stock_item(started.from_outlet, started.sku)
    return r.TransferResult(
        kind="transfer-receive", idempotency_key=key, transfer_id=command.transfer_id,
        from_outlet=started.from_outlet, to_outlet=started.to_outlet, sku=started.sku,
        batches=started.batches, received=True,
        from_stock=_level(uow, source, context.occurred_at),
        to_stock=_level(uow, destination, context.occurred_at))


def set_reorder_level(uow: UnitOfWork, command: c.SetReorderLevel,
                      key: str) -> r.ReorderLevelResult:
    uow.outlet_or_open(command.outlet, command.actor)
    item = uow.stock_item_or_open(command.outlet, command.sku)
    if item.reorder_level != command.level:
        item.set_reorder_level(command.level, command.actor)
    return r.ReorderLevelResult(kind="reorder-level", idempotency_key=key,
                                outlet=command.outlet, sku=command.sku, level=command.level)


def settings_of(outlet: Outlet) -> r.OutletSettings:
    window = outlet.late_sales_window
    return r.OutletSettings(outlet=outlet.outlet, allocation_policy=outlet.allocation_policy,
                            allow_negative=outlet.allow_negative,
                            late_sales_window=None if window is None else describe_window(window))


def set_outlet_policy(uow: UnitOfWork, command: c.SetOutletPolicy,
                      key: str) -> r.OutletPolicyResult:
    """Settings not given keep their values: an existing outlet's as they are, a new one's
    the defaults. Only what changes is recorded."""
    outlet = uow.get(identity.outlet_id(command.outlet), Outlet)
    if outlet is None:
        outlet = uow.add(Outlet.open(command.outlet, command.actor,
                                     command.allocation_policy or "fefo",
                                     bool(command.allow_negative)))
    else:
        outlet.set_policy(command.allocation_policy, command.allow_negative, command.actor)
    if command.late_sales_window is not None:
        outlet.set_late_sales_window(parse_window(command.late_sales_window), command.actor)
    return r.OutletPolicyResult(kind="outlet-policy", idempotency_key=key,
                                **settings_of(outlet).model_dump())


def store_settings_of(settings: StoreSettings | None) -> r.StoreSettingsResult:
    if settings is None:
        return r.StoreSettingsResult(kind="store-currency", currency=None,
                                     cost_places=MAX_COST_PLACES)
    return r.StoreSettingsResult(kind="store-currency", currency=settings.currency,
                                 cost_places=settings.cost_places)


def set_store_currency(uow: UnitOfWork, command: c.SetStoreCurrency,
                       key: str) -> r.StoreSettingsResult:
    """Record the store's currency once; the same again changes nothing, another is refused."""
    settings = uow.get(identity.store_settings_id(), StoreSettings)
    if settings is None:
        settings = uow.add(StoreSettings.set_currency(command.currency, command.cost_places,
                                                      command.actor))
    else:
        settings.check_same(command.currency, command.cost_places)
    return store_settings_of(settings).model_copy(update={"idempotency_key": key})


def expire_stock_item(uow: UnitOfWork, command: c.ExpireBatches, _: str) -> r.ExpiryResult:
    """Expire one stock item's due batches (`command` names its outlet, SKU and `as_of`)."""
    assert command.outlet is not None and command.sku is not None and command.as_of is not None
    context = MovementContext(command.business_time(), command.actor,
                              f"expiry sweep as of {command.as_of}", f"expire:{command.as_of}")
    item = uow.stock_item(command.outlet, command.sku)
    item.expire(command.as_of, context)
    expired = tuple(
        r.ExpiredBatch(outlet=command.outlet, sku=command.sku, batch_id=e.batch_id,
                       quantity=e.quantity, expires_on=e.expires_on)
        for e in item.pending_events if isinstance(e, events.BatchExpired))
    return r.ExpiryResult(kind="expire", as_of=command.as_of, expired=expired)


def _hold_result(command: c.HoldLot | c.ReleaseLot, key: str, held: bool,
                 since: datetime) -> r.HoldResult:
    return r.HoldResult(kind="hold" if held else "release", idempotency_key=key,
                        sku=command.sku, batch_id=command.batch_id, outlet=command.outlet,
                        held=held, reason=command.reason, held_since=since)


def hold(uow: UnitOfWork, command: c.HoldLot, key: str) -> r.HoldResult:
    """Record a hold in the SKU's register, which every later movement of the SKU reads,
    at every outlet, whenever its stock arrives (docs/decisions/0013)."""
    if command.outlet is not None:
        uow.outlet(command.outlet)
    at = command.business_time()
    register = uow.hold_register_or_open(command.sku)
    register.hold(command.batch_id, command.outlet, command.reason, command.actor, at, key)
    return _hold_result(command, key, True, at)


def release(uow: UnitOfWork, command: c.ReleaseLot, key: str) -> r.HoldResult:
    register = uow.holds(command.sku)
    if register is None:
        raise LotNotHeld(command.sku, command.batch_id, command.outlet)
    ended = register.release(command.batch_id, command.outlet, command.reason, command.actor,
                             command.business_time(), key)
    return _hold_result(command, key, False, ended.held_at)


def correct_receipt(uow: UnitOfWork, command: c.CorrectReceipt,
                    key: str) -> r.CorrectionResult:
    """Find the receipt among the stock item's receipts as corrected so far, then let the
    stock item decide (`ledger.domain.corrections.plan_correction`)."""
    context = MovementContext(command.business_time(), command.actor, command.receipt, key)
    uow.outlet(command.outlet)
    item = uow.stock_item(command.outlet, command.sku)
    receipt = find_receipt(receipts_of(uow, item), command.outlet, command.sku,
                           command.receipt)
    request = CorrectionRequest(
        quantity=command.quantity, expires_on=command.expires_on,
        unit_cost=None if command.unit_cost is None else str(command.unit_cost),
        batch_id=command.batch_id)
    event = item.correct_receipt(receipt, request, command.reason, context,
                                 dispatched_to(uow, item, receipt.batch_id))
    return r.CorrectionResult(
        kind="correct-receipt", idempotency_key=key, outlet=command.outlet, sku=command.sku,
        receipt=receipt.reference, receipt_version=receipt.version, batch_id=event.batch_id,
        quantity=(event.quantity_before, event.quantity_after),
        expires_on=(event.expires_on_before, event.expires_on_after),
        unit_cost=(event.unit_cost_before, event.unit_cost_after),
        corrected_batch_id=event.corrected_batch_id, reason=command.reason,
        stock=_level(uow, item, context.occurred_at))


def dispatched_to(uow: UnitOfWork, item: StockItem, batch_id: str) -> tuple[str, ...]:
    """The outlets units of `batch_id` were dispatched to from the stock item, in the order
    first sent, read from its stream."""
    outlets: dict[str, None] = {}
    for event in uow.app.events.get(item.id, lte=item.version - len(item.pending_events)):
        if isinstance(event, events.TransferDispatched) and any(
                batch.batch_id == batch_id for batch in event.batches):
            outlets[event.to_outlet] = None
    return tuple(outlets)


def receipts_of(uow: UnitOfWork, item: StockItem) -> list[Receipt]:
    """The stock item's receipts as the ledger believes them now, each with its corrections
    applied, read from its stream (corrections are rare: they may read it whole)."""
    receipts: dict[int, Receipt] = {}
    for event in uow.app.events.get(item.id, lte=item.version - len(item.pending_events)):
        if isinstance(event, events.BatchReceived):
            receipts[event.originator_version] = Receipt(
                version=event.originator_version, reference=event.reference,
                batch_id=event.batch.batch_id, quantity=event.batch.quantity,
                expires_on=event.batch.expires_on, unit_cost=event.batch.unit_cost,
                shortfall_settled=event.shortfall_settled)
        elif isinstance(event, events.ReceiptCorrected):
            receipts[event.receipt_version] = corrected(
                receipts[event.receipt_version], event.quantity_after, event.expires_on_after,
                event.unit_cost_after, event.corrected_batch_id)
    return list(receipts.values())


def _stock_item_of(command: c.ExpireBatches) -> list[UUID]:
    assert command.outlet is not None and command.sku is not None
    return [identity.stock_item_id(command.outlet, command.sku)]


RECEIVE = Handler("receive", r.ReceiptResult, receive,
                  lambda cmd: _outlet_and_item(cmd.outlet, cmd.sku))
SELL = Handler("sell", r.SaleResult, sell, _sale_streams,
               references=lambda cmd: [(identity.sale_id(cmd.sale_id), f"sale {cmd.sale_id}")])
REFUND = Handler("refund", r.RefundResult, refund,
                 lambda cmd: [identity.sale_id(cmd.sale_id)])
COUNT = Handler("count", r.CountResult, count, lambda cmd: _outlet_and_item(cmd.outlet, cmd.sku))
WRITE_OFF = Handler("write-off", r.WriteOffResult, write_off,
                    lambda cmd: _outlet_and_item(cmd.outlet, cmd.sku))
TRANSFER = Handler("transfer", r.TransferResult, transfer, _transfer_streams,
                   references=lambda cmd: [(identity.transfer_id(cmd.transfer_id),
                                            f"transfer {cmd.transfer_id}")])
RECEIVE_TRANSFER = Handler("transfer-receive", r.TransferResult, receive_transfer,
                           lambda cmd: [identity.transfer_id(cmd.transfer_id)])
SET_REORDER_LEVEL = Handler("reorder-level", r.ReorderLevelResult, set_reorder_level,
                            lambda cmd: _outlet_and_item(cmd.outlet, cmd.sku))
SET_OUTLET_POLICY = Handler("outlet-policy", r.OutletPolicyResult, set_outlet_policy,
                            lambda cmd: [identity.outlet_id(cmd.outlet)])
HOLD = Handler("hold", r.HoldResult, hold,
               lambda cmd: [identity.hold_register_id(cmd.sku)])
RELEASE = Handler("release", r.HoldResult, release,
                  lambda cmd: [identity.hold_register_id(cmd.sku)])
CORRECT_RECEIPT = Handler("correct-receipt", r.CorrectionResult, correct_receipt,
                          lambda cmd: _outlet_and_item(cmd.outlet, cmd.sku))
SET_STORE_CURRENCY = Handler("store-currency", r.StoreSettingsResult, set_store_currency,
                             lambda cmd: [identity.store_settings_id()])
EXPIRE_STOCK_ITEM = Handler("expire", r.ExpiryResult, expire_stock_item, _stock_item_of,
                            records_command=False, fresh_first=True)

RESULT_CLASSES: dict[str, type[r.CommandResult]] = {
    handler.kind: handler.result_class
    for handler in (RECEIVE, SELL, REFUND, COUNT, WRITE_OFF, TRANSFER, RECEIVE_TRANSFER,
                    SET_REORDER_LEVEL, SET_OUTLET_POLICY, SET_STORE_CURRENCY, HOLD, RELEASE,
                    CORRECT_RECEIPT)
}
"""The result class of each kind of command recorded with its key, to replay it."""
