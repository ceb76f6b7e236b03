"""The Python API for POS integrations and operators: open a ledger, send commands, get results.

    from ledger import Ledger
    with Ledger.open("postgresql://postgres@127.0.0.1/shop") as ledger:
        ledger.receive(outlet="NAIROBI-1", sku="AMOX-500", batch_id="B1", quantity=100)
        result = ledger.sell(outlet="NAIROBI-1", sale_id="S-1", lines=[("AMOX-500", 2)])

Each method validates its arguments into a command (`InvalidInput` names the field), then the
command loop runs the command's handler (`ledger.app.handlers`): load the aggregates, let them
decide with the pure rules, append every change with the record of the idempotency key in one
transaction, and retry on fresh state after losing a race.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from types import TracebackType
from typing import Any, Literal

from ledger.app import commands as c
from ledger.app import handlers
from ledger.app import results as r
from ledger.app.lanes import Lanes
from ledger.app.loop import CommandLoop
from ledger.domain import identity
from ledger.domain.allocation import is_sellable
from ledger.domain.errors import InvalidInput, UnknownOutlet, UnknownStockItem
from ledger.domain.hold_register import HoldRegister
from ledger.domain.holds import Hold, held_batches
from ledger.domain.layers import valuation
from ledger.domain.outlet import Outlet
from ledger.domain.sale import Sale
from ledger.domain.stock_item import BatchState, StockItem
from ledger.domain.store_settings import StoreSettings
from ledger.domain.transfer import Transfer
from ledger.store.application import LedgerApplication, open_application

LATEST_TIMEZONE_OFFSET = timedelta(hours=14)

LineInput = tuple[str, int] | Mapping[str, Any] | c.LineRequest
"""A sale or refund line: `(sku, quantity)`, `{"sku": ..., "quantity": ...}` or a request."""
DateInput = date | str
"""A date, or its ISO 8601 text (`2027-03-01`)."""
TimeInput = datetime | str
"""A moment, or its ISO 8601 text; without a time zone it is UTC."""

_HANDLERS: dict[type[c.Command], handlers.Handler[Any, Any]] = {
    c.ReceiveStock: handlers.RECEIVE, c.SellStock: handlers.SELL, c.RefundSale: handlers.REFUND,
    c.CountStock: handlers.COUNT, c.WriteOffStock: handlers.WRITE_OFF,
    c.TransferStock: handlers.TRANSFER, c.ReceiveTransfer: handlers.RECEIVE_TRANSFER,
    c.SetReorderLevel: handlers.SET_REORDER_LEVEL,
    c.SetOutletPolicy: handlers.SET_OUTLET_POLICY,
    c.HoldLot: handlers.HOLD, c.ReleaseLot: handlers.RELEASE,
    c.CorrectReceipt: handlers.CORRECT_RECEIPT,
    c.SetStoreCurrency: handlers.SET_STORE_CURRENCY,
}


def _common(actor: str, occurred_at: TimeInput | None, key: str | None) -> dict[str, Any]:
    # A business time that was not given is left unset: it is then no part of the command's
    # fingerprint, as recorded since the first version.
    fields: dict[str, Any] = {"actor": actor, "key": key}
    if occurred_at is not None:
        fields["occurred_at"] = occurred_at
    return fields


class Ledger:
    """One ledger over one event store. Thread-safe; commands from one instance run one at a
    time, so open one instance per worker for parallelism within a process."""

    def __init__(self, app: LedgerApplication) -> None:
        self._app = app
        self._loop = CommandLoop(app)
        self._lanes = Lanes(self._loop.run_group, lambda: self._loop.lock)

    @classmethod
    def open(cls, url: str | None = None, *, create_tables: bool = False) -> Ledger:
        """Open the store at `url` ($LEDGER_DATABASE_URL, else the embedded SQLite default)."""
        return cls(open_application(url, create_tables=create_tables))

    @property
    def application(self) -> LedgerApplication:
        return self._app

    @property
    def conflict_retries(self) -> int:
        """How many appends were retried after losing a race with another writer."""
        return self._loop.conflict_retries

    def close(self) -> None:
        self._app.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # ------------------------------------------------------------------ commands

    def execute(self, command: c.Command) -> r.CommandResult:
        """Run a command object (`ledger.app.commands`) and return its result; it is
        validated again first, as it may have been built without validation."""
        command = c.revalidated(command)
        if isinstance(command, c.ExpireBatches):
            return self._expire(command)
        result: r.CommandResult = self._loop.run(command, _HANDLERS[type(command)])
        return result

    def submit(self, command: c.Command) -> r.CommandResult:
        """Run a command object as `execute` does, for a service whose threads share this
        ledger: commands submitted at the same moment for the same streams (a stock item's
        sales) are decided together, in the order they came, and appended in one transaction
        (`ledger.app.lanes`). Each gets its own result, with its own position, or its own
        error, exactly as `execute` would have answered it had they come one by one."""
        command = c.revalidated(command)
        if isinstance(command, c.ExpireBatches):
            return self._expire(command)
        return self._lanes.run(command, _HANDLERS[type(command)])

    def receive(self, *, outlet: str, sku: str, batch_id: str, quantity: int,
                expires_on: DateInput | None = None, unit_cost: Decimal | str | None = None,
                reference: str | None = None, actor: str = "unknown",
                occurred_at: TimeInput | None = None,
                key: str | None = None) -> r.ReceiptResult:
        """Record a batch (or more of one) arriving at an outlet; opens outlet and SKU.

        `reference` is the delivery note: it tells a second delivery of a batch from a retry."""
        command = c.parse(c.ReceiveStock, outlet=outlet, sku=sku, batch_id=batch_id,
                          quantity=quantity, expires_on=expires_on, unit_cost=unit_cost,
                          reference=reference, **_common(actor, occurred_at, key))
        return self._loop.run(command, handlers.RECEIVE)

    def sell(self, *, outlet: str, sale_id: str, lines: Iterable[LineInput],
             actor: str = "unknown", occurred_at: TimeInput | None = None,
             key: str | None = None) -> r.SaleResult:
        """Record a sale of one or more lines, all or nothing, allocated by outlet policy."""
        command = c.parse(c.SellStock, outlet=outlet, sale_id=sale_id, lines=_lines(lines),
                          **_common(actor, occurred_at, key))
        return self._loop.run(command, handlers.SELL)

    def refund(self, *, sale_id: str, refund_id: str, lines: Iterable[LineInput],
               write_off: bool = False, actor: str = "unknown",
               occurred_at: TimeInput | None = None, key: str | None = None) -> r.RefundResult:
        """Return units of an earlier sale to the batches they came from (or write them off)."""
        command = c.parse(c.RefundSale, sale_id=sale_id, refund_id=refund_id,
                          lines=_lines(lines), write_off=write_off,
                          **_common(actor, occurred_at, key))
        return self._loop.run(command, handlers.REFUND)

    def count(self, *, outlet: str, sku: str, counts: Mapping[str, int],
              whole_sku: bool = False, count_id: str | None = None,
              found: Mapping[str, Mapping[str, Any]] | None = None, actor: str = "unknown",
              occurred_at: TimeInput | None = None, key: str | None = None) -> r.CountResult:
        """Record a stock take of one SKU: `counts` maps batch id to the counted quantity.

        With `whole_sku=True` every batch the count does not list is counted as zero.
        `found` declares counted batches the ledger does not know here as found stock, each
        with its `expires_on` and `unit_cost` if known (`{"B9": {"expires_on": ...}}`);
        any other unknown batch is refused (`UnknownBatch`).
        """
        fields: dict[str, Any] = {"found": found} if found else {}
        command = c.parse(c.CountStock, outlet=outlet, sku=sku, counts=counts,
                          whole_sku=whole_sku, count_id=count_id, **fields,
                          **_common(actor, occurred_at, key))
        return self._loop.run(command, handlers.COUNT)

    def hold(self, *, sku: str, batch_id: str, reason: str, outlet: str | None = None,
             actor: str = "unknown", occurred_at: TimeInput | None = None,
             key: str | None = None) -> r.HoldResult:
        """Make a lot unsellable at `outlet`, or at every outlet (None), from now (or
        `occurred_at`) until released: held stock stays on hand, is not available, and no
        sale, transfer or write-off without a named batch takes it. A hold everywhere also
        covers outlets opened later and stock that arrives later."""
        command = c.parse(c.HoldLot, sku=sku, batch_id=batch_id, outlet=outlet, reason=reason,
                          **_common(actor, occurred_at, key))
        return self._loop.run(command, handlers.HOLD)

    def release(self, *, sku: str, batch_id: str, reason: str, outlet: str | None = None,
                actor: str = "unknown", occurred_at: TimeInput | None = None,
                key: str | None = None) -> r.HoldResult:
        """End the hold of a lot in the scope it was held in (`LotNotHeld` if none is)."""
        command = c.parse(c.ReleaseLot, sku=sku, batch_id=batch_id, outlet=outlet,
                          reason=reason, **_common(actor, occurred_at, key))
        return self._loop.run(command, handlers.RELEASE)

    def correct_receipt(self, *, outlet: str, sku: str, receipt: str, reason: str,
                        quantity: int | None = None, expires_on: DateInput | None = None,
                        unit_cost: Decimal | str | None = None, batch_id: str | None = None,
                        actor: str = "unknown", occurred_at: TimeInput | None = None,
                        key: str | None = None) -> r.CorrectionResult:
        """Correct a receipt typed wrong, named by its reference (delivery note, else batch
        id; `REF@VERSION` if several share it): each field given is what it should have
        said. The receipt stays in the history; `CorrectionRefused` if the correction would
        take away units already sold or moved."""
        fields = {name: value for name, value in (
            ("quantity", quantity), ("expires_on", expires_on), ("unit_cost", unit_cost),
            ("batch_id", batch_id)) if value is not None}
        command = c.parse(c.CorrectReceipt, outlet=outlet, sku=sku, receipt=receipt,
                          reason=reason, **fields, **_common(actor, occurred_at, key))
        return self._loop.run(command, handlers.CORRECT_RECEIPT)

    def holds(self, sku: str) -> tuple[Hold, ...]:
        """Every hold ever placed on a lot of `sku`, released or not, in recorded order."""
        with self._loop.lock:
            register = self._app.load(identity.hold_register_id(sku))
            return register.holds if isinstance(register, HoldRegister) else ()

    def held_batches(self, outlet: str, sku: str) -> frozenset[str]:
        """The batches of `sku` held at `outlet` now (there or everywhere)."""
        return held_batches(self.holds(sku), outlet)

    def write_off(self, *, outlet: str, sku: str, quantity: int, reason: str,
                  batch_id: str | None = None, reference: str | None = None,
                  actor: str = "unknown", occurred_at: TimeInput | None = None,
                  key: str | None = None) -> r.WriteOffResult:
        """Take stock off the shelf for a reason (damage, theft, samples)."""
        command = c.parse(c.WriteOffStock, outlet=outlet, sku=sku, quantity=quantity,
                          reason=reason, batch_id=batch_id, reference=reference,
                          **_common(actor, occurred_at, key))
        return self._loop.run(command, handlers.WRITE_OFF)

    def transfer(self, *, from_outlet: str, to_outlet: str, sku: str, quantity: int,
                 transfer_id: str, in_transit: bool = False, actor: str = "unknown",
                 occurred_at: TimeInput | None = None,
                 key: str | None = None) -> r.TransferResult:
        """Move stock between outlets, batch identity and expiry kept.

        With `in_transit=True` only the dispatch is recorded; `receive_transfer` completes it.
        """
        command = c.parse(c.TransferStock, from_outlet=from_outlet, to_outlet=to_outlet,
                          sku=sku, quantity=quantity, transfer_id=transfer_id,
                          in_transit=in_transit, **_common(actor, occurred_at, key))
        return self._loop.run(command, handlers.TRANSFER)

    def receive_transfer(self, *, transfer_id: str, actor: str = "unknown",
                         occurred_at: TimeInput | None = None,
                         key: str | None = None) -> r.TransferResult:
        """Record the arrival of stock dispatched in transit."""
        command = c.parse(c.ReceiveTransfer, transfer_id=transfer_id,
                          **_common(actor, occurred_at, key))
        return self._loop.run(command, handlers.RECEIVE_TRANSFER)

    def set_reorder_level(self, *, outlet: str, sku: str, level: int | None,
                          actor: str = "unknown", occurred_at: TimeInput | None = None,
                          key: str | None = None) -> r.ReorderLevelResult:
        """Set (or clear, with None) the level at which a stock item shows as low."""
        command = c.parse(c.SetReorderLevel, outlet=outlet, sku=sku, level=level,
                          **_common(actor, occurred_at, key))
        return self._loop.run(command, handlers.SET_REORDER_LEVEL)

    def set_outlet_policy(self, *, outlet: str,
                          allocation_policy: Literal["fefo", "fifo"] | None = None,
                          allow_negative: bool | None = None,
                          late_sales_window: str | timedelta | None = None,
                          actor: str = "unknown", occurred_at: TimeInput | None = None,
                          key: str | None = None) -> r.OutletPolicyResult:
        """Open an outlet, or change how it allocates (FEFO or FIFO), whether it may sell into
        negative, and how far back a sale may be dated (`late_sales_window`: `"72h"`, a
        `timedelta`, or `"none"` for any age). A setting left None keeps its value: an
        existing outlet's as it is, a new outlet's the default (FEFO, no negative stock, any
        age)."""
        fields: dict[str, Any] = {"outlet": outlet}
        for name, value in (("allocation_policy", allocation_policy),
                            ("allow_negative", allow_negative),
                            ("late_sales_window", late_sales_window)):
            if value is not None:
                fields[name] = value
        command = c.parse(c.SetOutletPolicy, **fields, **_common(actor, occurred_at, key))
        return self._loop.run(command, handlers.SET_OUTLET_POLICY)

    def set_store_currency(self, *, currency: str, cost_places: int, actor: str = "unknown",
                           key: str | None = None) -> r.StoreSettingsResult:
        """Name the store's one currency (`EUR`) and how many decimal places its unit costs
        may have. Recorded once: the same again changes nothing, another is refused
        (`CurrencyAlreadySet`). A receipt whose cost has more places is refused."""
        command = c.parse(c.SetStoreCurrency, currency=currency, cost_places=cost_places,
                          **_common(actor, None, key))
        return self._loop.run(command, handlers.SET_STORE_CURRENCY)

    def store_settings(self) -> r.StoreSettingsResult:
        """The store's currency and cost places, from the write model."""
        with self._loop.lock:
            found = self._app.load(identity.store_settings_id())
            return handlers.store_settings_of(found if isinstance(found, StoreSettings)
                                              else None)

    def outlet_settings(self, outlet: str) -> r.OutletSettings:
        """An outlet's current settings, from the write model; `UnknownOutlet` if it has none."""
        with self._loop.lock:
            found = self._app.load(identity.outlet_id(outlet))
            if not isinstance(found, Outlet):
                raise UnknownOutlet(outlet)
            return handlers.settings_of(found)

    def expire(self, *, outlet: str | None = None, sku: str | None = None,
               as_of: DateInput | None = None, actor: str = "unknown",
               occurred_at: TimeInput | None = None) -> r.ExpiryResult:
        """Write off the remaining stock of every batch whose expiry date has come by `as_of`.

        Each batch is expired at most once, ever, however many sweeps run at once: the expiry
        is decided on the stock item under optimistic concurrency like any other movement.
        """
        return self._expire(c.parse(c.ExpireBatches, outlet=outlet, sku=sku, as_of=as_of,
                                    **_common(actor, occurred_at, None)))

    def _expire(self, command: c.ExpireBatches) -> r.ExpiryResult:
        today = datetime.now(UTC)
        as_of = command.as_of or today.date()
        if as_of > (today + LATEST_TIMEZONE_OFFSET).date():
            raise InvalidInput("as_of", f"{as_of} lies in the future")
        expired: list[r.ExpiredBatch] = []
        positions: list[int] = []
        with self._loop.lock:
            for outlet, sku in self._stock_items(command.outlet, command.sku):
                one = self._loop.run(
                    command.model_copy(update={"outlet": outlet, "sku": sku, "as_of": as_of}),
                    handlers.EXPIRE_STOCK_ITEM)
                expired.extend(one.expired)
                if one.position is not None:
                    positions.append(one.position)
        return r.ExpiryResult(kind="expire", as_of=as_of, expired=tuple(expired),
                              position=max(positions, default=None))

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
        with self._loop.lock:
            item = self.stock_item(outlet, sku)
            when = datetime.combine(on_date, datetime.min.time(), UTC) if on_date else \
                datetime.now(UTC)
            return handlers.level(item, when, self.held_batches(outlet, sku))

    def stock_item(self, outlet: str, sku: str) -> StockItem:
        """The current write-model state of a stock item (authoritative, not a projection).

        This is the ledger's cached object, brought up to date: read it, copy what you need,
        and do not change it; later commands update it in place.
        """
        with self._loop.lock:
            item = self._app.load(identity.stock_item_id(outlet, sku))
            if not isinstance(item, StockItem):
                raise UnknownStockItem(outlet, sku)
            return item

    def batches(self, outlet: str, sku: str, on_date: date | None = None) -> r.StockItemBatches:
        """A stock item's batches holding stock, first expiry first, each with its cost layers
        and their value (from the write model, which keeps the layers). `expired` is reckoned
        on `on_date`, today (UTC) if not given."""
        day = on_date or datetime.now(UTC).date()
        with self._loop.lock:
            item = self.stock_item(outlet, sku)
            on_hold = self.held_batches(outlet, sku)
            held = sorted((b for b in item.batches.values() if b.quantity != 0),
                          key=lambda b: (b.expires_on is None, b.expires_on or date.max,
                                         b.received_seq, b.batch_id))
            return r.StockItemBatches(outlet=outlet, sku=sku, on_date=day, batches=tuple(
                _batch_held(batch, day, batch.batch_id in on_hold) for batch in held))

    def outlet_of_sale(self, sale_id: str) -> str | None:
        """The outlet where a sale was recorded (None if there is no such sale): where a
        refund of it happens, for deciding who may refund it."""
        with self._loop.lock:
            sale = self._app.load(identity.sale_id(sale_id))
            return sale.outlet if isinstance(sale, Sale) else None

    def outlets_of_transfer(self, transfer_id: str) -> tuple[str, str] | None:
        """The (from, to) outlets of a recorded transfer, or None if there is none."""
        with self._loop.lock:
            transfer = self._app.load(identity.transfer_id(transfer_id))
            if not isinstance(transfer, Transfer):
                return None
            return transfer.from_outlet, transfer.to_outlet

    def head_position(self) -> int:
        """The position of the newest recorded event (0 for an empty store)."""
        return self._app.recorder.max_notification_id() or 0


def _batch_held(batch: BatchState, on_date: date, on_hold: bool = False) -> r.BatchHeld:
    worth = valuation(batch.layers)
    valued = any(layer.unit_cost is not None for layer in batch.layers)
    return r.BatchHeld(
        batch_id=batch.batch_id, quantity=batch.quantity, expires_on=batch.expires_on,
        received_at=batch.received_at, unit_cost=batch.unit_cost,
        value=str(worth.value) if valued else None, unvalued=worth.unvalued,
        expired=batch.expired or not is_sellable(batch.expires_on, on_date),
        written_off_as_expired=batch.expired, on_hold=on_hold,
        layers=tuple(r.CostLayer(received_at=layer.received_at, quantity=layer.quantity,
                                 received=layer.received, unit_cost=layer.unit_cost,
                                 source=layer.source) for layer in batch.layers))


def _lines(lines: Iterable[LineInput]) -> Any:
    """Accept `(sku, quantity)` pairs as well as dicts for sale and refund lines; anything
    else goes to validation as it is, to be refused there with the field named."""
    if not isinstance(lines, Iterable) or isinstance(lines, (str, bytes, Mapping)):
        return lines
    return [
        {"sku": line[0], "quantity": line[1]}
        if isinstance(line, Sequence) and not isinstance(line, str) and len(line) == 2
        else line
        for line in lines
    ]
