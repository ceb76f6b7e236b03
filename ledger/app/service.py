"""The Python API for POS integrations and operators: open a ledger, send commands, get results.

    from ledger import Ledger
    with Ledger.open("postgresql://postgres@127.0.0.1/shop") as ledger:
        ledger.receive(outlet="NAIROBI-1", sku="AMOX-500", batch_id="B1", quantity=100)
        result = ledger.sell(outlet="NAIROBI-1", sale_id="S-1", lines=[("AMOX-500", 2)])

Every command is validated (`InvalidInput` names the field), decided by pure rules on the
aggregates, and appended atomically together with a record of its idempotency key. A conflict
with a concurrent writer is retried against fresh state with jittered backoff.
"""

from __future__ import annotations

import hashlib
import json
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, date, datetime, timedelta
from types import TracebackType
from typing import Any, TypeVar
from uuid import UUID

import orjson
from eventsourcing.domain import Aggregate, AggregateCreated
from eventsourcing.persistence import IntegrityError

from ledger import events
from ledger.app import commands as c
from ledger.app import results as r
from ledger.domain import identity
from ledger.domain.command_record import CommandRecord
from ledger.domain.errors import (
    ConcurrencyConflict,
    DuplicateReference,
    IdempotencyKeyReused,
    InvalidInput,
    RefundExceedsSale,
    Refusal,
    TransferAlreadyReceived,
    UnknownOutlet,
    UnknownSale,
    UnknownStockItem,
    UnknownTransfer,
)
from ledger.domain.outlet import Outlet
from ledger.domain.quantities import BatchIdentity
from ledger.domain.rules import allocate_refund_with_shortfall
from ledger.domain.sale import Sale
from ledger.domain.stock_item import MovementContext, StockItem
from ledger.domain.transfer import Transfer
from ledger.store.application import LedgerApplication, open_application

ResultT = TypeVar("ResultT", bound=r.CommandResult)
AggregateT = TypeVar("AggregateT", bound=Aggregate)

MAX_ATTEMPTS = 40
CLONE_BATCHES_AT_MOST = 64
BACKOFF_CAP_SECONDS = 0.05
QUEUE_AFTER_CONFLICT_SECONDS = 1.0
"""How long a till goes straight to a stream's queue after losing a race on it."""
LATEST_TIMEZONE_OFFSET = timedelta(hours=14)

RESULT_CLASSES: dict[str, type[r.CommandResult]] = {
    "receive": r.ReceiptResult,
    "sell": r.SaleResult,
    "refund": r.RefundResult,
    "count": r.CountResult,
    "write-off": r.WriteOffResult,
    "transfer": r.TransferResult,
    "transfer-receive": r.TransferResult,
    "reorder-level": r.ReorderLevelResult,
    "outlet-policy": r.OutletPolicyResult,
}


class _UnitOfWork:
    """The aggregates one attempt at a command loaded or created, to save or forget together."""

    def __init__(self, app: LedgerApplication, *, fast_forward: bool,
                 queue_first: Callable[[Sequence[UUID]], list[UUID]] | None = None) -> None:
        self.app = app
        self.fast_forward = fast_forward
        # Which of the streams a decision needs it must decide on in their queue (None: it
        # is in their queue already).
        self.queue_first = queue_first
        self.aggregates: dict[UUID, Aggregate] = {}
        self.missing: set[UUID] = set()
        self.saving: set[UUID] = set()
        self.copies: set[UUID] = set()
        self.created: list[AggregateCreated] = []
        self.unique_references: list[tuple[UUID, str]] = []

    def prefetch(self, aggregate_ids: Sequence[UUID]) -> None:
        """Bring several aggregates up to date in one round trip, before deciding.

        Small aggregates are decided on copies, so that a lost race leaves the cached state
        clean and a retry only has to fast-forward it; a stock item with many batches is
        decided in place (copying it would cost more than the decision) and is evicted if
        its change is not recorded.
        """
        wanted = [i for i in aggregate_ids if i not in self.aggregates and i not in self.missing]
        if self.queue_first is not None and (queued := self.queue_first(wanted)):
            raise _QueueFirst(queued)
        loaded = self.app.load_many(wanted, fast_forward=self.fast_forward)
        for aggregate_id, aggregate in loaded.items():
            if not isinstance(aggregate, StockItem) or (
                    len(aggregate.batches) <= CLONE_BATCHES_AT_MOST):
                aggregate = clone(aggregate)
                self.copies.add(aggregate_id)
            self.aggregates[aggregate_id] = aggregate
        self.missing.update(i for i in wanted if i not in loaded)

    def get(self, aggregate_id: UUID, kind: type[AggregateT]) -> AggregateT | None:
        aggregate = self.aggregates.get(aggregate_id)
        if aggregate is None:
            self.prefetch([aggregate_id])
            found = self.aggregates.get(aggregate_id)
            if found is None:
                return None
            aggregate = found
        if not isinstance(aggregate, kind):
            raise TypeError(f"stream {aggregate_id} holds a {type(aggregate).__name__}")
        return aggregate

    def add(self, aggregate: AggregateT, unique_reference: str | None = None) -> AggregateT:
        self.aggregates[aggregate.id] = aggregate
        self.missing.discard(aggregate.id)
        if unique_reference is not None:
            self.unique_references.append((aggregate.id, unique_reference))
        return aggregate

    def add_created(self, event: AggregateCreated, unique_reference: str) -> None:
        """A new stream this decision starts and no later step of it reads (a sale's, say):
        only its first event, without the aggregate it would build."""
        self.created.append(event)
        self.unique_references.append((event.originator_id, unique_reference))

    def outlet(self, outlet: str) -> Outlet:
        found = self.get(identity.outlet_id(outlet), Outlet)
        if found is None:
            raise UnknownOutlet(outlet)
        return found

    def outlet_or_open(self, outlet: str, actor: str) -> Outlet:
        found = self.get(identity.outlet_id(outlet), Outlet)
        return found if found is not None else self.add(Outlet.open(outlet, actor))

    def stock_item(self, outlet: str, sku: str) -> StockItem:
        found = self.get(identity.stock_item_id(outlet, sku), StockItem)
        if found is None:
            raise UnknownStockItem(outlet, sku)
        return found

    def stock_item_or_open(self, outlet: str, sku: str) -> StockItem:
        found = self.get(identity.stock_item_id(outlet, sku), StockItem)
        return found if found is not None else self.add(StockItem.open(outlet, sku))

    def changed(self) -> list[Aggregate]:
        """The aggregates to save. Saving takes their pending events, so remember them: if the
        append then fails, these are the cached objects holding unrecorded changes."""
        changed = [a for a in self.aggregates.values() if a.pending_events]
        self.saving.update(a.id for a in changed)
        return changed

    def read_only(self) -> list[tuple[UUID, int]]:
        """Streams the decision read but does not write, at the versions it saw."""
        return [(a.id, a.version) for a in self.aggregates.values()
                if not a.pending_events and a.id not in self.saving]

    def forget(self, *, everything: bool = False) -> None:
        """Evict the aggregates this attempt changed: their cached state holds unrecorded
        changes. After an unexpected error, evict every loaded one: it may be half-changed."""
        for aggregate_id, aggregate in self.aggregates.items():
            if aggregate_id in self.copies:
                continue  # the cached original was never touched
            if everything or aggregate.pending_events or aggregate_id in self.saving:
                self.app.evict(aggregate_id)

    def recorded(self) -> None:
        """The changes are recorded: the copies that were saved become the cached state."""
        for aggregate_id in self.saving & self.copies:
            self.app.cache(self.aggregates[aggregate_id])

    def recorded_reference(self) -> str | None:
        """A sale or transfer id this attempt would create that is already recorded."""
        for aggregate_id, reference in self.unique_references:
            if self.app.load(aggregate_id) is not None:
                return reference
        return None


class _QueueFirst(Exception):
    """Streams this till lost a race on a moment ago: decide on them in their queue."""

    def __init__(self, stream_ids: list[UUID]) -> None:
        super().__init__(stream_ids)
        self.stream_ids = stream_ids


def clone(aggregate: Aggregate) -> Aggregate:
    """A copy of an aggregate to decide on, leaving the cached one untouched."""
    if isinstance(aggregate, (StockItem, Sale)):
        return aggregate.clone()
    # Outlets, transfers and command records hold only immutable values.
    other = object.__new__(type(aggregate))
    other.__dict__.update(aggregate.__dict__)
    other.__dict__["_pending_events"] = []
    return other


def _level(item: StockItem, on: datetime) -> r.StockLevel:
    return r.StockLevel(outlet=item.outlet, sku=item.sku, on_hand=item.on_hand,
                        available=item.available(on.date()))


def _fingerprint(kind: str, command: c.Command) -> str:
    return fingerprint_of({"kind": kind, **command.fingerprint_fields()})


_UNESCAPED = bytes(b for b in range(0x20, 0x7F) if b != ord("\\"))
"""The bytes `json.dumps` writes as themselves (`ensure_ascii`), bar the escape character."""


def fingerprint_of(fields: dict[str, Any]) -> str:
    """The sha256 of `fields` as canonical JSON: keys sorted, no spaces, ASCII with escapes.

    Fingerprints are recorded, so the bytes are `json.dumps`'s. orjson writes the same bytes
    five times faster wherever nothing needs an escape (its output all printable ASCII, no
    backslash); elsewhere `json.dumps` writes them.
    """
    try:
        canonical = orjson.dumps(fields, option=orjson.OPT_SORT_KEYS)
        if not canonical.translate(None, _UNESCAPED):
            return hashlib.sha256(canonical).hexdigest()
    except orjson.JSONEncodeError:
        pass  # the standard library's encoder writes it, or raises as it always did
    standard = json.dumps(fields, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(standard.encode()).hexdigest()


class Ledger:
    """One ledger over one event store. Thread-safe; commands from one instance run one at a
    time, so open one instance per worker for parallelism within a process."""

    def __init__(self, app: LedgerApplication) -> None:
        self._app = app
        self._lock = threading.RLock()
        self.conflict_retries = 0
        """How many appends were retried after losing a race with another writer."""
        self._queue_first_until: dict[UUID, float] = {}

    @classmethod
    def open(cls, url: str | None = None, *, create_tables: bool = False) -> Ledger:
        """Open the store at `url` ($LEDGER_DATABASE_URL, else the embedded SQLite default)."""
        return cls(open_application(url, create_tables=create_tables))

    @property
    def application(self) -> LedgerApplication:
        return self._app

    def close(self) -> None:
        self._app.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # ------------------------------------------------------------------ commands

    def receive(self, **fields: Any) -> r.ReceiptResult:
        """Record a batch (or more of one) arriving at an outlet; opens outlet and SKU."""
        command = c.parse(c.ReceiveStock, **fields)

        def decide(uow: _UnitOfWork, key: str) -> r.ReceiptResult:
            context = MovementContext(command.business_time(), command.actor,
                                      command.reference or command.batch_id, key)
            uow.prefetch([identity.outlet_id(command.outlet),
                          identity.stock_item_id(command.outlet, command.sku)])
            uow.outlet_or_open(command.outlet, command.actor)
            item = uow.stock_item_or_open(command.outlet, command.sku)
            item.receive(
                BatchIdentity(
                    batch_id=command.batch_id,
                    quantity=command.quantity,
                    expires_on=command.expires_on,
                    unit_cost=None if command.unit_cost is None else str(command.unit_cost),
                ),
                context,
            )
            event = item.pending_events[-1]
            assert isinstance(event, events.BatchReceived)
            return r.ReceiptResult(
                kind="receive", idempotency_key=key, outlet=command.outlet, sku=command.sku,
                batch_id=command.batch_id, quantity=command.quantity,
                shortfall_settled=event.shortfall_settled,
                stock=_level(item, context.occurred_at),
            )

        return self._run("receive", command, decide)

    def sell(self, **fields: Any) -> r.SaleResult:
        """Record a sale of one or more lines, all or nothing, allocated by outlet policy.

        `lines` is a list of `{"sku": ..., "quantity": ...}` or `(sku, quantity)` pairs.
        """
        fields["lines"] = _lines(fields.get("lines"))
        command = c.parse(c.SellStock, **fields)

        def decide(uow: _UnitOfWork, key: str) -> r.SaleResult:
            context = MovementContext(command.business_time(), command.actor,
                                      command.sale_id, key)
            uow.prefetch([identity.outlet_id(command.outlet)] + [
                identity.stock_item_id(command.outlet, line.sku) for line in command.lines])
            outlet = uow.outlet(command.outlet)
            sold_lines: list[r.SoldLine] = []
            for line in command.lines:
                item = uow.stock_item(command.outlet, line.sku)
                allocation = item.sell(command.sale_id, line.quantity, outlet.allocation_policy,
                                       outlet.allow_negative, context)
                sold_lines.append(r.SoldLine(
                    sku=line.sku, quantity=line.quantity, takes=allocation.takes,
                    unallocated=allocation.unallocated,
                    stock=_level(item, context.occurred_at),
                ))
            uow.add_created(
                Sale.record(
                    command.sale_id, command.outlet,
                    [events.SaleLine(sku=line.sku, quantity=line.quantity, takes=line.takes,
                                     unallocated=line.unallocated) for line in sold_lines],
                    context.occurred_at, command.actor, key,
                ),
                unique_reference=f"sale {command.sale_id}",
            )
            return r.SaleResult(kind="sell", idempotency_key=key, sale_id=command.sale_id,
                                outlet=command.outlet, lines=tuple(sold_lines))

        return self._run("sell", command, decide)

    def refund(self, **fields: Any) -> r.RefundResult:
        """Return units of an earlier sale to the batches they came from (or write them off)."""
        fields["lines"] = _lines(fields.get("lines"))
        command = c.parse(c.RefundSale, **fields)

        def decide(uow: _UnitOfWork, key: str) -> r.RefundResult:
            context = MovementContext(command.business_time(), command.actor,
                                      command.refund_id, key)
            sale = uow.get(identity.sale_id(command.sale_id), Sale)
            if sale is None:
                raise UnknownSale(command.sale_id)
            if command.refund_id in sale.refund_ids:
                raise DuplicateReference(
                    f"refund {command.refund_id} of sale {command.sale_id} is already recorded")
            uow.prefetch([identity.stock_item_id(sale.outlet, line.sku)
                          for line in command.lines])
            refunded: list[r.RefundedLine] = []
            for line in command.lines:
                if line.sku not in sale.lines:
                    raise RefundExceedsSale(command.sale_id, line.sku, line.quantity, 0)
                takes, unallocated = allocate_refund_with_shortfall(
                    command.sale_id, line.sku, sale.sold_takes(line.sku),
                    sale.refunded_by_batch(line.sku), sale.unallocated_left(line.sku),
                    line.quantity)
                item = uow.stock_item(sale.outlet, line.sku)
                restocked, written_off = item.refund(command.sale_id, command.refund_id, takes,
                                                     unallocated, command.write_off, context)
                refunded.append(r.RefundedLine(
                    sku=line.sku, quantity=line.quantity, restocked=restocked,
                    written_off=written_off, unallocated=unallocated,
                    stock=_level(item, context.occurred_at),
                ))
            sale.refund(
                command.refund_id,
                [events.RefundLine(**line.model_dump(exclude={"stock"})) for line in refunded],
                context.occurred_at, command.actor, key,
            )
            return r.RefundResult(kind="refund", idempotency_key=key, sale_id=command.sale_id,
                                  refund_id=command.refund_id, outlet=sale.outlet,
                                  lines=tuple(refunded))

        return self._run("refund", command, decide)

    def count(self, **fields: Any) -> r.CountResult:
        """Record a stock take of one SKU: `counts` maps batch id to the counted quantity.

        With `whole_sku=True` every batch the count does not list is counted as zero.
        """
        command = c.parse(c.CountStock, **fields)

        def decide(uow: _UnitOfWork, key: str) -> r.CountResult:
            context = MovementContext(command.business_time(), command.actor,
                                      command.count_id or key, key)
            uow.outlet(command.outlet)
            item = uow.stock_item(command.outlet, command.sku)
            event = item.count(command.counts, command.whole_sku, context)
            return r.CountResult(kind="count", idempotency_key=key, outlet=command.outlet,
                                 sku=command.sku, whole_sku=command.whole_sku,
                                 counts=tuple(event.counts),
                                 shortfall_cleared=event.shortfall_cleared,
                                 stock=_level(item, context.occurred_at))

        return self._run("count", command, decide)

    def write_off(self, **fields: Any) -> r.WriteOffResult:
        """Take stock off the shelf for a reason (damage, theft, samples)."""
        command = c.parse(c.WriteOffStock, **fields)

        def decide(uow: _UnitOfWork, key: str) -> r.WriteOffResult:
            context = MovementContext(command.business_time(), command.actor,
                                      command.reference or command.reason, key)
            outlet = uow.outlet(command.outlet)
            item = uow.stock_item(command.outlet, command.sku)
            takes = item.write_off(command.quantity, command.batch_id, command.reason,
                                   outlet.allocation_policy, context)
            return r.WriteOffResult(kind="write-off", idempotency_key=key,
                                    outlet=command.outlet, sku=command.sku,
                                    reason=command.reason, takes=takes,
                                    stock=_level(item, context.occurred_at))

        return self._run("write-off", command, decide)

    def transfer(self, **fields: Any) -> r.TransferResult:
        """Move stock between outlets, batch identity and expiry kept.

        With `in_transit=True` only the dispatch is recorded; `receive_transfer` completes it.
        """
        command = c.parse(c.TransferStock, **fields)

        def decide(uow: _UnitOfWork, key: str) -> r.TransferResult:
            context = MovementContext(command.business_time(), command.actor,
                                      command.transfer_id, key)
            outlet = uow.outlet(command.from_outlet)
            source = uow.stock_item(command.from_outlet, command.sku)
            batches = source.dispatch(command.transfer_id, command.to_outlet, command.quantity,
                                      outlet.allocation_policy, context)
            if command.in_transit:
                # Refuse now what the destination could never receive, rather than strand it.
                destination_item = uow.get(
                    identity.stock_item_id(command.to_outlet, command.sku), StockItem)
                if destination_item is not None:
                    destination_item.check_can_receive(batches)
            transfer = uow.add(
                Transfer.start(command.transfer_id, command.from_outlet, command.to_outlet,
                               command.sku, batches, context.occurred_at, command.actor, key),
                unique_reference=f"transfer {command.transfer_id}",
            )
            destination = None
            if not command.in_transit:
                destination = self._arrive(uow, transfer, context)
            return r.TransferResult(
                kind="transfer", idempotency_key=key, transfer_id=command.transfer_id,
                from_outlet=command.from_outlet, to_outlet=command.to_outlet, sku=command.sku,
                batches=batches, received=not command.in_transit,
                from_stock=_level(source, context.occurred_at),
                to_stock=None if destination is None else _level(destination,
                                                                 context.occurred_at),
            )

        return self._run("transfer", command, decide)

    def receive_transfer(self, **fields: Any) -> r.TransferResult:
        """Record the arrival of stock dispatched in transit."""
        command = c.parse(c.ReceiveTransfer, **fields)

        def decide(uow: _UnitOfWork, key: str) -> r.TransferResult:
            context = MovementContext(command.business_time(), command.actor,
                                      command.transfer_id, key)
            transfer = uow.get(identity.transfer_id(command.transfer_id), Transfer)
            if transfer is None:
                raise UnknownTransfer(command.transfer_id)
            if transfer.received:
                raise TransferAlreadyReceived(
                    f"transfer {command.transfer_id} was already received")
            destination = self._arrive(uow, transfer, context)
            source = uow.stock_item(transfer.from_outlet, transfer.sku)
            return r.TransferResult(
                kind="transfer-receive", idempotency_key=key,
                transfer_id=command.transfer_id, from_outlet=transfer.from_outlet,
                to_outlet=transfer.to_outlet, sku=transfer.sku, batches=transfer.batches,
                received=True, from_stock=_level(source, context.occurred_at),
                to_stock=_level(destination, context.occurred_at),
            )

        return self._run("transfer-receive", command, decide)

    @staticmethod
    def _arrive(uow: _UnitOfWork, transfer: Transfer, context: MovementContext) -> StockItem:
        uow.outlet_or_open(transfer.to_outlet, context.actor)
        destination = uow.stock_item_or_open(transfer.to_outlet, transfer.sku)
        destination.receive_transfer(transfer.transfer_id, transfer.from_outlet,
                                     transfer.batches, context)
        transfer.complete(context.occurred_at, context.actor)
        return destination

    def set_reorder_level(self, **fields: Any) -> r.ReorderLevelResult:
        """Set (or clear, with None) the level at which a stock item shows as low."""
        command = c.parse(c.SetReorderLevel, **fields)

        def decide(uow: _UnitOfWork, key: str) -> r.ReorderLevelResult:
            uow.outlet_or_open(command.outlet, command.actor)
            item = uow.stock_item_or_open(command.outlet, command.sku)
            if item.reorder_level != command.level:
                item.set_reorder_level(command.level, command.actor)
            return r.ReorderLevelResult(kind="reorder-level", idempotency_key=key,
                                        outlet=command.outlet, sku=command.sku,
                                        level=command.level)

        return self._run("reorder-level", command, decide)

    def set_outlet_policy(self, **fields: Any) -> r.OutletPolicyResult:
        """Choose FEFO or FIFO allocation, and whether the outlet may sell into negative."""
        command = c.parse(c.SetOutletPolicy, **fields)

        def decide(uow: _UnitOfWork, key: str) -> r.OutletPolicyResult:
            outlet = uow.get(identity.outlet_id(command.outlet), Outlet)
            if outlet is None:
                uow.add(Outlet.open(command.outlet, command.actor, command.allocation_policy,
                                    command.allow_negative))
            else:
                outlet.set_policy(command.allocation_policy, command.allow_negative,
                                  command.actor)
            return r.OutletPolicyResult(kind="outlet-policy", idempotency_key=key,
                                        outlet=command.outlet,
                                        allocation_policy=command.allocation_policy,
                                        allow_negative=command.allow_negative)

        return self._run("outlet-policy", command, decide)

    def expire(self, **fields: Any) -> r.ExpiryResult:
        """Write off the remaining stock of every batch whose expiry date has come by `as_of`.

        Each batch is expired at most once, ever, however many sweeps run at once: the expiry
        is decided on the stock item under optimistic concurrency like any other movement.
        """
        command = c.parse(c.ExpireBatches, **fields)
        today = datetime.now(UTC)
        as_of = command.as_of or today.date()
        if as_of > (today + LATEST_TIMEZONE_OFFSET).date():
            raise InvalidInput("as_of", f"{as_of} lies in the future")
        expired: list[r.ExpiredBatch] = []
        positions: list[int] = []
        with self._lock:
            for outlet, sku in self._stock_items(command.outlet, command.sku):
                position, batches = self._expire_one(outlet, sku, as_of, command)
                expired.extend(batches)
                if position is not None:
                    positions.append(position)
        return r.ExpiryResult(kind="expire", as_of=as_of, expired=tuple(expired),
                              position=max(positions, default=None))

    def _expire_one(
        self, outlet: str, sku: str, as_of: date, command: c.ExpireBatches
    ) -> tuple[int | None, list[r.ExpiredBatch]]:
        contended: list[UUID] = []
        for attempt in range(MAX_ATTEMPTS):
            if attempt:
                self._pause_before_retry(attempt, contended)
            with self._app.serialised(contended):
                uow = _UnitOfWork(self._app, fast_forward=True)
                item = uow.stock_item(outlet, sku)
                context = MovementContext(command.business_time(), command.actor,
                                          f"expiry sweep as of {as_of}", f"expire:{as_of}")
                due = item.expire(as_of, context)
                if not due:
                    return None, []
                expired = [
                    r.ExpiredBatch(outlet=outlet, sku=sku, batch_id=e.batch_id,
                                   quantity=e.quantity, expires_on=e.expires_on)
                    for e in item.pending_events if isinstance(e, events.BatchExpired)
                ]
                version_before = item.version - len(item.pending_events)
                try:
                    position = self._app.record(*uow.changed(), serialised=bool(contended))
                    uow.recorded()
                except IntegrityError:
                    uow.forget()
                    contended = [item.id]
                    continue
                except BaseException:
                    uow.forget(everything=True)
                    raise
            self._app.take_snapshots([item], [version_before])  # as in `_run`
            return position, expired
        raise ConcurrencyConflict(f"expiry of {outlet}/{sku}: {MAX_ATTEMPTS} conflicts")

    def _stock_items(self, outlet: str | None, sku: str | None) -> Iterator[tuple[str, str]]:
        if outlet is not None and sku is not None:
            if self._app.load(identity.stock_item_id(outlet, sku)) is None:
                raise UnknownStockItem(outlet, sku)
            yield outlet, sku
            return
        for opened in self._app.stock_items_opened():
            if outlet in (None, opened.outlet) and sku in (None, opened.sku):
                yield opened.outlet, opened.sku

    # ------------------------------------------------------------------ reads

    def stock_level(self, outlet: str, sku: str, on_date: date | None = None) -> r.StockLevel:
        """On hand and available stock from the write model: authoritative, no projection."""
        with self._lock:
            item = self.stock_item(outlet, sku)
            when = datetime.combine(on_date, datetime.min.time(), UTC) if on_date else \
                datetime.now(UTC)
            return _level(item, when)

    def stock_item(self, outlet: str, sku: str) -> StockItem:
        """The current write-model state of a stock item (authoritative, not a projection).

        This is the ledger's cached object, brought up to date: read it, copy what you need,
        and do not change it; later commands update it in place.
        """
        with self._lock:
            item = self._app.load(identity.stock_item_id(outlet, sku))
            if not isinstance(item, StockItem):
                raise UnknownStockItem(outlet, sku)
            return item

    def head_position(self) -> int:
        """The position of the newest recorded event (0 for an empty store)."""
        return self._app.recorder.max_notification_id() or 0

    # ------------------------------------------------------------------ the append loop

    def _run(
        self,
        kind: str,
        command: c.Command,
        decide: Callable[[_UnitOfWork, str], ResultT],
    ) -> ResultT:
        key = command.idempotency_key()
        fingerprint = _fingerprint(kind, command)
        contended: list[UUID] = []
        lost = stale = False
        with self._lock:
            for attempt in range(MAX_ATTEMPTS):
                if lost:
                    self._pause_before_retry(attempt, contended)
                # The first attempt decides on cached state and lets the append validate it;
                # if it needs a stream this till lost a race on a moment ago, it decides in
                # that stream's queue instead, where the stream's cached state is brought up
                # to date as its lock is taken. After a refusal or a conflict, everything the
                # decision reads is brought up to date first.
                uow = _UnitOfWork(self._app, fast_forward=stale,
                                  queue_first=None if contended else self._recently_contended)
                with self._app.serialised(contended):
                    try:
                        result = decide(uow, key)
                    except _QueueFirst as queue:
                        uow.forget()  # a transfer may have taken from its source already
                        contended = queue.stream_ids
                        continue
                    except Refusal:
                        uow.forget()
                        replay = self._replay(key, kind, fingerprint)
                        if replay is not None:
                            return replay  # type: ignore[return-value]
                        if not stale:
                            stale = True
                            continue  # refused on possibly stale state: decide again on fresh
                        raise
                    except BaseException:
                        uow.forget(everything=True)
                        raise
                    record = CommandRecord.accept(
                        key, kind, fingerprint,
                        result.model_dump(mode="json", exclude={"position", "replayed"}),
                    )
                    changed = uow.changed()
                    versions_before = [a.version - len(a.pending_events) for a in changed]
                    try:
                        position = self._app.record(*changed, created=[*uow.created, record],
                                                    expect_versions=uow.read_only(),
                                                    serialised=bool(contended))
                    except IntegrityError:
                        uow.forget()
                        replay = self._replay(key, kind, fingerprint)
                        if replay is not None:
                            return replay  # type: ignore[return-value]
                        reference = uow.recorded_reference()
                        if reference is not None:
                            # Recorded by a concurrent writer since the replay check above;
                            # if it was this very command, its record is visible now too.
                            replay = self._replay(key, kind, fingerprint)
                            if replay is not None:
                                return replay  # type: ignore[return-value]
                            raise DuplicateReference(
                                f"{reference} is already recorded") from None
                        self.conflict_retries += 1
                        # Retry under the locks of the streams that were contended (those
                        # that existed: a new stream's clash is a duplicate, handled above).
                        contended = [a.id for a, before in zip(changed, versions_before,
                                                               strict=True) if before > 0]
                        self._lost_race_on(contended)
                        lost = stale = True
                        continue
                    except BaseException:
                        uow.forget(everything=True)
                        raise
                    uow.recorded()
                # Out of the queue's block, whose connection is back in the pool: a snapshot
                # written in it would make the pool open a second one.
                self._app.take_snapshots(changed, versions_before)
                return result.model_copy(update={"position": position})
        raise ConcurrencyConflict(f"{kind} under key {key!r}: {MAX_ATTEMPTS} conflicts")

    def _replay(self, key: str, kind: str, fingerprint: str) -> r.CommandResult | None:
        record = self._app.load(identity.command_record_id(key))
        if record is None:
            return None
        assert isinstance(record, CommandRecord)
        if record.fingerprint != fingerprint:
            raise IdempotencyKeyReused(key, record.kind)
        result_class = RESULT_CLASSES[record.kind]
        return result_class.model_validate(
            {**record.result, "position": self._app.position_of(record.id, 1),
             "replayed": True}
        )

    def _lost_race_on(self, stream_ids: Sequence[UUID]) -> None:
        if self._app.serialises_writers:
            until = time.monotonic() + QUEUE_AFTER_CONFLICT_SECONDS
            self._queue_first_until.update(dict.fromkeys(stream_ids, until))

    def _recently_contended(self, stream_ids: Sequence[UUID]) -> list[UUID]:
        """Of `stream_ids`, those this till lost a race on in the last
        `QUEUE_AFTER_CONFLICT_SECONDS`.

        Other tills are likely queued on them still, and while one holds a stream's lock an
        optimistic append to it fails anyway: deciding, appending and checking for a replay
        first would only cost three round trips and the CPU the queue's head needs.
        """
        if not self._queue_first_until:
            return []
        now = time.monotonic()
        for stream_id in [i for i, until in self._queue_first_until.items() if until <= now]:
            del self._queue_first_until[stream_id]
        return [i for i in stream_ids if i in self._queue_first_until]

    def _pause_before_retry(self, attempt: int, contended: Sequence[UUID]) -> None:
        """Back off before retrying after a conflict, unless the retry will queue on the
        contended streams' locks instead (and before taking them, never while holding them)."""
        if not (contended and self._app.serialises_writers):
            self._back_off(attempt)

    @staticmethod
    def _back_off(attempt: int) -> None:
        # Full jitter: concurrent tills that collided spread out instead of colliding again.
        time.sleep(random.uniform(0, min(BACKOFF_CAP_SECONDS, 0.0005 * 2**attempt)))


def _lines(lines: Any) -> Any:
    """Accept `(sku, quantity)` pairs as well as dicts for sale and refund lines."""
    if not isinstance(lines, Iterable) or isinstance(lines, (str, bytes, dict)):
        return lines
    return [
        {"sku": line[0], "quantity": line[1]}
        if isinstance(line, Sequence) and not isinstance(line, str) and len(line) == 2
        else line
        for line in lines
    ]

