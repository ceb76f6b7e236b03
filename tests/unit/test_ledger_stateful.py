"""The ledger against a tiny reference model, through random sequences of commands.

Two outlets, two SKUs, a handful of batches with fixed expiry dates (some already past),
receipts, sales, refunds, write-offs and transfers back-dated up to eight days, in any order;
holds and releases of lots (everywhere or at one outlet), corrections of receipts' quantities,
whole-SKU counts with found stock, and late sales that record their shortfall at outlets with
a late-sales window. The model keeps one cost layer per arrival and lets a movement dated in
the past take only the layers already on the shelf then, from batches not held then. After
every step the write model must agree with the reference model batch by batch and layer by
layer (refunds restocking at the cost their units left with), and each stock item must
conserve its movements and its value (received - left + restocked = on hand, as `audit
verify` checks it); no sale takes expired or held stock; a replay by business time at any
moment must equal the model's movements up to that moment, with no batch below zero; and the
read models must equal a replay of the events. The machine runs on SQLite and, with fewer
examples, on PostgreSQL.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from ledger.app.audit import replay
from ledger.app.results import CommandResult
from ledger.app.service import Ledger
from ledger.app.valuation import conservation_findings, valuation_report
from ledger.domain.costing import layers_value
from ledger.domain.errors import (
    BatchConflict,
    CorrectionRefused,
    IdempotencyKeyReused,
    InsufficientStock,
    LateSaleOutsideWindow,
    LotAlreadyHeld,
    LotNotHeld,
    RefundExceedsSale,
    Refusal,
    TransferAlreadyReceived,
    UnknownBatch,
    UnknownOutlet,
    UnknownSale,
    UnknownStockItem,
)
from ledger.domain.quantities import AllocationPolicy
from projections.queries import Reads
from projections.runner import ReadModels
from tests.databases import fresh_database

TODAY = datetime.now(UTC).date()

OUTLETS = ("NAIROBI-1", "MOMBASA-2")
CATALOGUE: dict[str, dict[str, date | None]] = {
    "AMOX-500": {
        "AMX-OLD": TODAY - timedelta(days=4),
        "AMX-TODAY": TODAY,
        "AMX-LATER": TODAY + timedelta(days=30),
        "AMX-UNDATED": None,
    },
    "RETRO-CLOCK": {
        "RC-FIRST": None,
        "RC-SECOND": None,
        "RC-RECALLED": TODAY - timedelta(days=2),
    },
}
"""Each batch id keeps one expiry date wherever it goes, as a real lot does."""
SKUS = tuple(CATALOGUE)
UNIT_COSTS = ("2.50", "1.25", "3.10", None)
"""A receipt's unit cost, by its quantity: layers of several costs, and some of none."""

outlets = st.sampled_from(OUTLETS)
skus = st.sampled_from(SKUS)
policies: st.SearchStrategy[AllocationPolicy] = st.sampled_from(["fefo", "fifo"])
days_ago = st.integers(min_value=0, max_value=8)
small = st.integers(min_value=1, max_value=12)


def _occurred_at(days: int) -> datetime:
    return datetime.now(UTC) - timedelta(days=days, seconds=1)


def _sellable(expires_on: date | None, on_date: date) -> bool:
    return expires_on is None or on_date < expires_on


# --------------------------------------------------------------------------- reference model


@dataclass
class ModelLayer:
    received_at: datetime
    seq: int
    quantity: int
    unit_cost: str | None
    source: str = ""


@dataclass
class ModelBatch:
    expires_on: date | None
    seq: int
    layers: list[ModelLayer] = field(default_factory=list)
    expired: bool = False

    @property
    def quantity(self) -> int:
        return sum(layer.quantity for layer in self.layers)

    def on_shelf(self, at: datetime) -> int:
        """Units of the layers that had arrived by `at`: what a movement dated `at` may take."""
        return sum(layer.quantity for layer in self.layers if layer.received_at <= at)

    def take(self, quantity: int) -> list[tuple[str | None, int]]:
        """First in, first out; what left, as (unit cost, quantity), runs of a cost merged."""
        self.layers.sort(key=lambda layer: (layer.received_at, layer.seq))
        left: list[tuple[str | None, int]] = []
        remaining = quantity
        for layer in self.layers:
            part = min(layer.quantity, remaining)
            if part == 0:
                continue
            layer.quantity -= part
            remaining -= part
            if left and left[-1][0] == layer.unit_cost:
                left[-1] = (layer.unit_cost, left[-1][1] + part)
            else:
                left.append((layer.unit_cost, part))
        assert remaining == 0, "the model took more than the batch held"
        self.layers = [layer for layer in self.layers if layer.quantity > 0]
        return left

    def take_from_source(self, quantity: int, source: str) -> None:
        """A correction's take: from the layers `source` made first, then first in, first
        out."""
        remaining = quantity
        for layer in sorted(self.layers, key=lambda layer: (layer.received_at, layer.seq)):
            if layer.source == source:
                part = min(layer.quantity, remaining)
                layer.quantity -= part
                remaining -= part
        self.layers = [layer for layer in self.layers if layer.quantity > 0]
        if remaining:
            self.take(remaining)


@dataclass
class ModelHold:
    outlet: str | None
    held_at: datetime
    released_at: datetime | None = None

    def applies(self, outlet: str, at: datetime | None) -> bool:
        if self.outlet is not None and self.outlet != outlet:
            return False
        if at is None:
            return self.released_at is None
        return self.held_at <= at and (self.released_at is None or at < self.released_at)


@dataclass
class ModelReceipt:
    outlet: str
    sku: str
    batch_id: str
    reference: str
    quantity: int
    settled: int
    unit_cost: str | None


@dataclass
class ModelItem:
    batches: dict[str, ModelBatch] = field(default_factory=dict)
    next_seq: int = 0
    next_layer_seq: int = 0
    received: int = 0
    sold: int = 0
    restocked: int = 0
    expired: int = 0
    count_variance: int = 0
    written_off: int = 0
    transferred_in: int = 0
    transferred_out: int = 0
    corrected: int = 0
    found: int = 0
    cleared: int = 0
    shortfall: int = 0

    def on_hand(self) -> int:
        return sum(batch.quantity for batch in self.batches.values()) - self.shortfall

    def conserved(self) -> int:
        return (
            self.received - self.sold + self.restocked - self.expired + self.count_variance
            - self.written_off + self.transferred_in - self.transferred_out + self.corrected
            + self.found + self.cleared
        )

    def available(self, on_date: date, held: frozenset[str] = frozenset()) -> int:
        return sum(
            b.quantity for batch_id, b in self.batches.items()
            if b.quantity > 0 and _sellable(b.expires_on, on_date) and batch_id not in held
        ) - self.shortfall

    def held_quantity(self, on_date: date, held: frozenset[str]) -> int:
        return sum(b.quantity for batch_id, b in self.batches.items()
                   if b.quantity > 0 and _sellable(b.expires_on, on_date) and batch_id in held)

    def available_at(self, at: datetime, held: frozenset[str] = frozenset()) -> int:
        """What a sale dated `at` could take: layers on the shelf then, batches sellable and
        not held then, less stock sold into negative."""
        return sum(b.on_shelf(at) for batch_id, b in self.batches.items()
                   if _sellable(b.expires_on, at.date()) and batch_id not in held
                   ) - self.shortfall

    def settle(self, quantity: int) -> int:
        """What of an arrival of `quantity` settles the shortfall first (as the ledger does:
        `min`, so a shortfall below zero, left by refunds of short sales restocked after a
        receipt settled them, comes back onto the arriving batch)."""
        settled = min(self.shortfall, quantity)
        self.shortfall -= settled
        return settled

    def add(self, batch_id: str, quantity: int, expires_on: date | None, at: datetime,
            unit_cost: str | None) -> None:
        batch = self.batches.get(batch_id)
        if batch is None:
            batch = self.batches[batch_id] = ModelBatch(expires_on, self.next_seq)
            self.next_seq += 1
        if quantity > 0:
            batch.layers.append(ModelLayer(at, self.next_layer_seq, quantity, unit_cost))
            self.next_layer_seq += 1

    def allocate(
        self, quantity: int, policy: AllocationPolicy, at: datetime,
        held: frozenset[str] = frozenset(),
    ) -> list[tuple[str, int]] | None:
        """The takes the rules demand, or None when the stock on the shelf at `at` does not
        cover it."""
        takes, unallocated = self.allocate_partly(quantity, policy, at, held)
        return None if unallocated else takes

    def allocate_partly(
        self, quantity: int, policy: AllocationPolicy, at: datetime,
        held: frozenset[str] = frozenset(),
    ) -> tuple[list[tuple[str, int]], int]:
        """The takes the rules demand, and what no batch on the shelf at `at` covers."""
        on_date = at.date()
        live = [
            (batch_id, b) for batch_id, b in self.batches.items()
            if b.on_shelf(at) > 0 and _sellable(b.expires_on, on_date) and batch_id not in held
        ]
        if policy == "fefo":
            live.sort(key=lambda pair: (pair[1].expires_on or date.max, pair[1].seq))
        else:
            live.sort(key=lambda pair: pair[1].seq)
        takes: list[tuple[str, int]] = []
        remaining = quantity
        for batch_id, batch in live:
            taken = min(batch.on_shelf(at), remaining)
            takes.append((batch_id, taken))
            remaining -= taken
            if remaining == 0:
                break
        return takes, remaining


@dataclass
class ModelSale:
    outlet: str
    sold: dict[str, list[tuple[str, int]]]
    costs: dict[str, dict[str, list[tuple[str | None, int]]]]
    """SKU, batch: the (unit cost, quantity) runs the sale took, in the order they left."""
    refunded: dict[str, dict[str, int]] = field(default_factory=dict)
    unallocated: dict[str, int] = field(default_factory=dict)
    """Per SKU, units sold short of stock (a late sale's) not yet refunded."""

    def refundable(self, sku: str) -> int:
        return sum(q for _, q in self.sold.get(sku, [])) - sum(
            self.refunded.get(sku, {}).values()
        ) + self.unallocated.get(sku, 0)


@dataclass
class ModelTransfer:
    from_outlet: str
    to_outlet: str
    sku: str
    batches: list[tuple[str, int, date | None, str | None]]
    """(batch id, quantity, expiry, unit cost): an entry per batch and cost layer sent."""
    received: bool = False


def _after(pieces: list[tuple[str | None, int]], skip: int,
           quantity: int) -> list[tuple[str | None, int]]:
    """The next `quantity` units of `pieces` after the first `skip`."""
    out: list[tuple[str | None, int]] = []
    for unit_cost, part in pieces:
        skipped = min(skip, part)
        skip -= skipped
        taken = min(part - skipped, quantity)
        quantity -= taken
        if taken:
            out.append((unit_cost, taken))
    assert quantity == 0, "the model refunded more than the sale took"
    return out


def _value(layers: list[ModelLayer]) -> tuple[Decimal, int]:
    """The model's layers at their own costs, and the units without one."""
    value = sum((Decimal(layer.unit_cost) * layer.quantity for layer in layers
                 if layer.unit_cost is not None), Decimal(0))
    return value, sum(layer.quantity for layer in layers if layer.unit_cost is None)


def _pairs(takes: Any) -> list[tuple[str, int]]:
    return [(take.batch_id, take.quantity) for take in takes]


def _merge(lines: list[tuple[str, int]]) -> dict[str, int]:
    merged: dict[str, int] = {}
    for sku, quantity in lines:
        merged[sku] = merged.get(sku, 0) + quantity
    return merged


# --------------------------------------------------------------------------- the machine


class LedgerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.directory = tempfile.mkdtemp(prefix="stockledger-stateful-")
        self.ledger = Ledger.open(self.open_store(), create_tables=True)
        ReadModels(self.ledger.application).create()
        self.holds: dict[tuple[str, str], list[ModelHold]] = {}
        """(SKU, batch id): every hold of the lot, released or not."""
        self.receipts: list[ModelReceipt] = []
        self.policies: dict[str, AllocationPolicy] = {}
        self.windows: dict[str, int | None] = {}
        """Each outlet's late-sales window in days (None or missing: any age)."""
        self.items: dict[tuple[str, str], ModelItem] = {}
        self.sales: dict[str, ModelSale] = {}
        self.transfers: dict[str, ModelTransfer] = {}
        self.accepted: list[tuple[Callable[..., CommandResult], dict[str, Any], CommandResult]] = []
        self.serial = 0
        self.moved: list[tuple[str, str, str, datetime, int]] = []
        """Every batch movement the model made: (outlet, sku, batch, business time, signed
        quantity), for the replay by business time."""

    def open_store(self) -> str:
        return f"sqlite:///{self.directory}/x.sqlite3"

    def teardown(self) -> None:
        try:
            if self.items:
                self.check_value_conserved()
        finally:
            self.ledger.close()
        shutil.rmtree(self.directory, ignore_errors=True)

    def _held(self, outlet: str, sku: str, at: datetime | None = None) -> frozenset[str]:
        """The batches of `sku` a movement at `outlet` dated `at` (None: now) may not take."""
        return frozenset(batch_id for (s, batch_id), holds in self.holds.items()
                         if s == sku and any(h.applies(outlet, at) for h in holds))

    # ------------------------------------------------------------------ helpers

    def _next(self, prefix: str) -> str:
        self.serial += 1
        return f"{prefix}-{self.serial}"

    def _snapshot(self) -> dict[tuple[str, str], tuple[int, dict[str, tuple[int, bool]]]]:
        snapshot = {}
        for outlet in OUTLETS:
            for sku in SKUS:
                try:
                    item = self.ledger.stock_item(outlet, sku)
                except UnknownStockItem:
                    continue
                snapshot[(outlet, sku)] = (
                    item.on_hand,
                    {b: (s.quantity, s.expired) for b, s in item.batches.items()},
                )
        return snapshot

    def _refused(
        self, expected: type[Refusal], call: Callable[..., Any], **fields: Any
    ) -> Refusal:
        """The call is refused with exactly `expected`, and nothing is recorded."""
        before = self._snapshot()
        head = self.ledger.head_position()
        with pytest.raises(Refusal) as raised:
            call(**fields)
        event(f"{call.__name__} refused: {type(raised.value).__name__}")
        assert type(raised.value) is expected, f"expected {expected.__name__}: {raised.value!r}"
        assert self.ledger.head_position() == head, "a refused command recorded events"
        assert self._snapshot() == before, "a refused command changed stock"
        return raised.value

    def _accept(
        self, call: Callable[..., CommandResult], fields: dict[str, Any]
    ) -> Any:
        head = self.ledger.head_position()
        result = call(**fields)
        event(f"{call.__name__} accepted")
        assert not result.replayed
        assert result.position is not None and result.position > head
        self.accepted.append((call, fields, result))
        return result

    def _item(self, outlet: str, sku: str) -> ModelItem:
        return self.items.setdefault((outlet, sku), ModelItem())

    def _move(self, outlet: str, sku: str, batch_id: str, at: datetime, quantity: int) -> None:
        self.moved.append((outlet, sku, batch_id, at, quantity))

    def _open_outlet(self, outlet: str) -> None:
        self.policies.setdefault(outlet, "fefo")

    def _check_level(self, level: Any, outlet: str, sku: str, on_date: date) -> None:
        item = self.items[(outlet, sku)]
        held = self._held(outlet, sku)
        assert (level.outlet, level.sku) == (outlet, sku)
        assert level.on_hand == item.on_hand()
        assert level.available == item.available(on_date, held)
        assert level.held == item.held_quantity(on_date, held)

    # ------------------------------------------------------------------ rules

    @initialize(
        quantities=st.lists(st.integers(1, 20), min_size=9, max_size=9),
        days=st.lists(days_ago, min_size=9, max_size=9),
    )
    def stock_the_shelves(self, quantities: list[int], days: list[int]) -> None:
        """Every batch at NAIROBI-1, only AMOX-500 at MOMBASA-2: most commands can succeed,
        and the unknown outlet/SKU paths stay reachable."""
        receipts = [("NAIROBI-1", sku, batch_id) for sku in SKUS for batch_id in CATALOGUE[sku]]
        receipts += [("MOMBASA-2", "AMOX-500", "AMX-LATER"), ("MOMBASA-2", "AMOX-500", "AMX-OLD")]
        for (outlet, sku, batch_id), quantity, ago in zip(receipts, quantities, days,
                                                          strict=True):
            self._receive(outlet, sku, batch_id, quantity, ago)


    @rule(outlet=outlets, sku=skus, data=st.data(), quantity=st.integers(1, 20), days=days_ago)
    def receive(self, outlet: str, sku: str, data: st.DataObject, quantity: int,
                days: int) -> None:
        batch_id = data.draw(st.sampled_from(sorted(CATALOGUE[sku])), label="batch_id")
        self._receive(outlet, sku, batch_id, quantity, days)

    def _receive(self, outlet: str, sku: str, batch_id: str, quantity: int, days: int) -> None:
        reference = self._next("DN")
        fields = {
            "outlet": outlet, "sku": sku, "batch_id": batch_id, "quantity": quantity,
            "expires_on": CATALOGUE[sku][batch_id], "occurred_at": _occurred_at(days),
            "key": self._next("receipt"), "unit_cost": UNIT_COSTS[quantity % len(UNIT_COSTS)],
            "reference": reference,
        }
        result = self._accept(self.ledger.receive, fields)
        self._open_outlet(outlet)
        item = self._item(outlet, sku)
        settled = item.settle(quantity)
        item.add(batch_id, quantity - settled, CATALOGUE[sku][batch_id], fields["occurred_at"],
                 fields["unit_cost"])
        if quantity > settled:  # the layer it just made
            item.batches[batch_id].layers[-1].source = f"receipt {reference}"
        if settled:
            event("receipt settled a shortfall")
        item.received += quantity
        self.receipts.append(ModelReceipt(outlet, sku, batch_id, reference, quantity, settled,
                                          fields["unit_cost"]))
        if quantity > settled:
            self._move(outlet, sku, batch_id, fields["occurred_at"], quantity - settled)
        assert result.shortfall_settled == settled
        self._check_level(result.stock, outlet, sku, fields["occurred_at"].date())

    @precondition(lambda self: self.items)
    @rule(data=st.data())
    def receive_a_known_batch_with_another_expiry(self, data: st.DataObject) -> None:
        outlet, sku = data.draw(st.sampled_from(sorted(self.items)), label="item")
        batch_id = data.draw(st.sampled_from(sorted(self.items[(outlet, sku)].batches)),
                             label="batch_id")
        expires_on = CATALOGUE[sku][batch_id]
        other = TODAY + timedelta(days=400) if expires_on is None else None
        self._refused(BatchConflict, self.ledger.receive, outlet=outlet, sku=sku,
                      batch_id=batch_id, quantity=1, expires_on=other,
                      key=self._next("conflict"))

    @rule(outlet=outlets,
          lines=st.lists(st.tuples(skus, st.integers(1, 6)), min_size=1, max_size=3),
          days=days_ago)
    def sell(self, outlet: str, lines: list[tuple[str, int]], days: int) -> None:
        occurred_at = _occurred_at(days)
        on_date = occurred_at.date()
        sale_id = self._next("S")
        fields = {"outlet": outlet, "sale_id": sale_id, "lines": lines,
                  "occurred_at": occurred_at}
        if outlet not in self.policies:
            self._refused(UnknownOutlet, self.ledger.sell, **fields)
            return
        window = self.windows.get(outlet)
        if window is not None and days >= window:
            error = self._refused(LateSaleOutsideWindow, self.ledger.sell, **fields)
            assert isinstance(error, LateSaleOutsideWindow) and error.window == f"{window}d"
            return
        # A late sale (dated a day or more back, at an outlet with a window) is recorded
        # with its shortfall; any other sale short of stock is refused.
        late = self.windows.get(outlet) is not None and days >= 1
        expected: dict[str, list[tuple[str, int]]] = {}
        short: dict[str, int] = {}
        for sku, quantity in _merge(lines).items():
            item = self.items.get((outlet, sku))
            if item is None:
                self._refused(UnknownStockItem, self.ledger.sell, **fields)
                return
            held = self._held(outlet, sku, occurred_at)
            takes, unallocated = item.allocate_partly(quantity, self.policies[outlet],
                                                      occurred_at, held)
            if unallocated and not late:
                error = self._refused(InsufficientStock, self.ledger.sell, **fields)
                assert isinstance(error, InsufficientStock)
                assert (error.sku, error.asked) == (sku, quantity)
                assert error.available == max(0, item.available_at(occurred_at, held))
                if item.available_at(occurred_at, held) < item.available(on_date, held):
                    event("sale refused: less on the shelf at its business time than now")
                    assert error.at == occurred_at
                if held:
                    event("sale refused: a lot it might have taken is held")
                return
            expected[sku] = takes
            short[sku] = unallocated
        result = self._accept(self.ledger.sell, fields)
        assert {line.sku: _pairs(line.takes) for line in result.lines} == expected
        costs: dict[str, dict[str, list[tuple[str | None, int]]]] = {}
        sale = ModelSale(outlet, expected, costs)
        for line in result.lines:
            item = self.items[(outlet, line.sku)]
            held = self._held(outlet, line.sku, occurred_at)
            assert line.unallocated == short[line.sku]
            if held & set(item.batches):
                event("sale recorded with a lot of the SKU held")
            if line.unallocated:
                event("late sale recorded with its shortfall")
                item.shortfall += line.unallocated
                item.sold += line.unallocated
                sale.unallocated[line.sku] = line.unallocated
            for batch_id, quantity in _pairs(line.takes):
                batch = item.batches[batch_id]
                assert _sellable(batch.expires_on, on_date), f"sold expired {batch_id}"
                assert batch_id not in held, f"sold held {batch_id}"
                assert 0 < quantity <= batch.on_shelf(occurred_at), f"sold {batch_id} too soon"
                left = batch.take(quantity)
                costs.setdefault(line.sku, {})[batch_id] = left
                assert [(p.unit_cost, p.quantity) for p in line.costs or ()
                        if p.batch_id == batch_id] == left, f"sale cost of {batch_id}"
                item.sold += quantity
                self._move(outlet, line.sku, batch_id, occurred_at, -quantity)
            self._check_level(line.stock, outlet, line.sku, on_date)
        self.sales[sale_id] = sale

    @precondition(lambda self: any(h.released_at is None for holds in self.holds.values()
                                   for h in holds))
    @rule(data=st.data(), quantity=st.integers(1, 12))
    def sell_a_sku_with_a_lot_held(self, data: st.DataObject, quantity: int) -> None:
        """A sale now of a SKU with a lot held, where the hold applies."""
        held = sorted(((lot, h.outlet) for lot, holds in self.holds.items() for h in holds
                       if h.released_at is None), key=lambda hold: (hold[0], hold[1] or ""))
        (sku, _), scope = data.draw(st.sampled_from(held), label="hold")
        self.sell(scope or "NAIROBI-1", [(sku, quantity)], 0)

    @precondition(lambda self: self.policies)
    @rule(data=st.data(), sku=skus, quantity=st.integers(1, 30),
          days=st.integers(min_value=1, max_value=8))
    def an_offline_till_submits_a_late_sale(self, data: st.DataObject, sku: str,
                                            quantity: int, days: int) -> None:
        """A till back online sends a sale made `days` ago, often more than the shelf held
        then: within the outlet's late-sales window it is recorded with its shortfall."""
        outlet = data.draw(st.sampled_from(sorted(self.policies)), label="outlet")
        if self.windows.get(outlet) is None:
            self._accept(self.ledger.set_outlet_policy,
                         {"outlet": outlet, "late_sales_window": "9d", "key": self._next("L")})
            self.windows[outlet] = 9
        self.sell(outlet, [(sku, quantity)], days)

    @precondition(lambda self: self.sales)
    @rule(data=st.data(), write_off=st.booleans(), days=days_ago)
    def refund(self, data: st.DataObject, write_off: bool, days: int) -> None:
        sale_id = data.draw(st.sampled_from(sorted(self.sales)), label="sale_id")
        sale = self.sales[sale_id]
        # Mostly SKUs the sale sold, mostly within what is refundable (at most one unit over);
        # now and then a SKU it did not sell (refundable 0).
        line_skus = data.draw(st.lists(st.one_of(st.sampled_from(sorted(sale.sold)), skus),
                                       min_size=1, max_size=2), label="skus")
        lines = [
            (sku, data.draw(st.integers(1, sale.refundable(sku) + 1), label=f"{sku} quantity"))
            for sku in line_skus
        ]
        occurred_at = _occurred_at(days)
        on_date = occurred_at.date()
        fields = {"sale_id": sale_id, "refund_id": self._next("R"), "lines": lines,
                  "write_off": write_off, "occurred_at": occurred_at}
        expected: dict[str, list[tuple[str, int]]] = {}
        from_shortfall: dict[str, int] = {}
        for sku, quantity in _merge(lines).items():
            refundable = sale.refundable(sku)
            if quantity > refundable:
                error = self._refused(RefundExceedsSale, self.ledger.refund, **fields)
                assert isinstance(error, RefundExceedsSale)
                assert (error.sku, error.asked, error.refundable) == (sku, quantity, refundable)
                return
            back: list[tuple[str, int]] = []
            remaining = quantity
            already = sale.refunded.get(sku, {})
            for batch_id, sold in _merge(sale.sold.get(sku, [])).items():
                left = min(sold - already.get(batch_id, 0), remaining)
                if left > 0:
                    back.append((batch_id, left))
                    remaining -= left
            expected[sku] = back
            from_shortfall[sku] = remaining
        result = self._accept(self.ledger.refund, fields)
        assert result.outlet == sale.outlet
        for line in result.lines:
            item = self.items[(sale.outlet, line.sku)]
            assert line.unallocated == from_shortfall[line.sku]
            if line.unallocated:
                event("refund of a late sale's shortfall")
                sale.unallocated[line.sku] -= line.unallocated
                if not write_off and line.unallocated <= item.shortfall:
                    item.shortfall -= line.unallocated
                    item.restocked += line.unallocated
                elif not write_off:
                    event("refund of a settled shortfall's units: written off")
            restocked, written = _pairs(line.restocked), _pairs(line.written_off)
            assert sorted(restocked + written) == sorted(expected[line.sku])
            for batch_id, quantity in expected[line.sku]:
                batch = item.batches[batch_id]
                goes_back = (not write_off and not batch.expired
                             and _sellable(batch.expires_on, on_date))
                if not write_off and not goes_back:
                    event("refund written off: batch expired by "
                          + ("sweep" if batch.expired else "date only"))
                assert ((batch_id, quantity) in restocked) is goes_back
                if goes_back:
                    # At the cost the units left with: the sale's pieces of the batch in the
                    # order they left, after those already refunded.
                    for unit_cost, part in _after(sale.costs[line.sku][batch_id],
                                                  sale.refunded.get(line.sku, {}).get(
                                                      batch_id, 0), quantity):
                        item.add(batch_id, part, batch.expires_on, occurred_at, unit_cost)
                    item.restocked += quantity
                    self._move(sale.outlet, line.sku, batch_id, occurred_at, quantity)
                refunded = sale.refunded.setdefault(line.sku, {})
                refunded[batch_id] = refunded.get(batch_id, 0) + quantity
            self._check_level(line.stock, sale.outlet, line.sku, on_date)
        assert {line.sku for line in result.lines} == set(expected)

    @rule(sale_id=st.sampled_from(["S-NEVER", "S-0"]))
    def refund_an_unknown_sale(self, sale_id: str) -> None:
        self._refused(UnknownSale, self.ledger.refund, sale_id=sale_id, refund_id="R-X",
                      lines=[("AMOX-500", 1)])

    @rule(as_of_days=st.integers(0, 6), scope=st.one_of(st.none(), st.tuples(outlets, skus)))
    def expire(self, as_of_days: int, scope: tuple[str, str] | None) -> None:
        as_of = TODAY - timedelta(days=as_of_days)
        if scope is not None and scope not in self.items:
            self._refused(UnknownStockItem, self.ledger.expire, as_of=as_of, outlet=scope[0],
                          sku=scope[1])
            return
        expected: set[tuple[str, str, str, int]] = set()
        for (outlet, sku), item in self.items.items():
            if scope is not None and scope != (outlet, sku):
                continue
            for batch_id, batch in item.batches.items():
                if (batch.expires_on is not None and batch.expires_on <= as_of
                        and batch.quantity > 0 and not batch.expired):
                    expected.add((outlet, sku, batch_id, batch.quantity))
        swept_at = _occurred_at(0)
        if scope is None:
            result = self.ledger.expire(as_of=as_of, occurred_at=swept_at)
        else:
            result = self.ledger.expire(as_of=as_of, outlet=scope[0], sku=scope[1],
                                        occurred_at=swept_at)
        got = [(e.outlet, e.sku, e.batch_id, e.quantity) for e in result.expired]
        event("expire swept a batch" if got else "expire swept nothing")
        assert len(got) == len(set(got))
        assert set(got) == expected
        for outlet, sku, batch_id, quantity in expected:
            item = self.items[(outlet, sku)]
            item.batches[batch_id].take(quantity)
            item.batches[batch_id].expired = True
            item.expired += quantity
            self._move(outlet, sku, batch_id, swept_at, -quantity)

    @rule(outlet=outlets, sku=skus, data=st.data(), whole_sku=st.booleans())
    def count(self, outlet: str, sku: str, data: st.DataObject, whole_sku: bool) -> None:
        counts = data.draw(
            st.dictionaries(st.sampled_from(sorted(CATALOGUE[sku])), st.integers(0, 15),
                            min_size=1, max_size=3),
            label="counts",
        )
        fields = {"outlet": outlet, "sku": sku, "counts": counts, "whole_sku": whole_sku,
                  "count_id": self._next("C"), "occurred_at": _occurred_at(0)}
        if outlet not in self.policies:
            self._refused(UnknownOutlet, self.ledger.count, **fields)
            return
        item = self.items.get((outlet, sku))
        if item is None:
            self._refused(UnknownStockItem, self.ledger.count, **fields)
            return
        found = {b for b, n in counts.items() if b not in item.batches and n > 0} if data.draw(
            st.booleans(), label="declare found") else set()
        if found:
            fields["found"] = {b: {"expires_on": CATALOGUE[sku][b], "unit_cost": "1.00"}
                               for b in found}
        if any(batch_id not in item.batches and batch_id not in found for batch_id in counts):
            self._refused(UnknownBatch, self.ledger.count, **fields)
            return
        for batch_id in [b for b in counts if b in found]:  # in the count's order
            event("count found stock")
            item.add(batch_id, counts[batch_id], CATALOGUE[sku][batch_id],
                     fields["occurred_at"], "1.00")
            item.found += counts[batch_id]
            self._move(outlet, sku, batch_id, fields["occurred_at"], counts[batch_id])
        expected = {b: (item.batches[b].quantity, n) for b, n in counts.items()}
        if whole_sku:
            expected.update({b: (batch.quantity, 0) for b, batch in item.batches.items()
                             if b not in counts and batch.quantity != 0})
        result = self._accept(self.ledger.count, fields)
        got = {c.batch_id: (c.expected, c.counted) for c in result.counts}
        assert got == expected
        for c in result.counts:
            assert c.variance == c.counted - c.expected
            batch = item.batches[c.batch_id]
            if c.variance < 0:
                batch.take(-c.variance)
            else:  # units found are a layer of their own, with no cost
                item.add(c.batch_id, c.variance, batch.expires_on, fields["occurred_at"], None)
            item.count_variance += c.variance
            if c.variance:
                self._move(outlet, sku, c.batch_id, fields["occurred_at"], c.variance)
        assert [(b.batch_id, b.quantity) for b in result.found] == [
            (b, n) for b, n in counts.items() if b in found]
        assert result.shortfall_cleared == (item.shortfall if whole_sku else 0)
        if whole_sku:
            if item.shortfall:
                event("whole-SKU count cleared a shortfall")
            item.cleared += item.shortfall
            item.shortfall = 0
        self._check_level(result.stock, outlet, sku, TODAY)

    @rule(outlet=outlets, sku=skus, quantity=small, data=st.data(), days=days_ago)
    def write_off(self, outlet: str, sku: str, quantity: int, data: st.DataObject,
                  days: int) -> None:
        batch_id = data.draw(st.one_of(st.none(), st.sampled_from(sorted(CATALOGUE[sku]))),
                             label="batch_id")
        occurred_at = _occurred_at(days)
        fields = {"outlet": outlet, "sku": sku, "quantity": quantity, "batch_id": batch_id,
                  "reason": "damaged in store", "occurred_at": occurred_at,
                  "key": self._next("W")}
        if outlet not in self.policies:
            self._refused(UnknownOutlet, self.ledger.write_off, **fields)
            return
        item = self.items.get((outlet, sku))
        if item is None:
            self._refused(UnknownStockItem, self.ledger.write_off, **fields)
            return
        if batch_id is None:
            takes = item.allocate(quantity, self.policies[outlet], occurred_at,
                                  self._held(outlet, sku, occurred_at))
        elif batch_id not in item.batches:
            self._refused(UnknownBatch, self.ledger.write_off, **fields)
            return
        else:
            held = item.batches[batch_id].on_shelf(occurred_at)
            takes = [(batch_id, quantity)] if held >= quantity else None
        if takes is None:
            self._refused(InsufficientStock, self.ledger.write_off, **fields)
            return
        result = self._accept(self.ledger.write_off, fields)
        assert _pairs(result.takes) == takes
        for taken_id, taken in takes:
            item.batches[taken_id].take(taken)
            item.written_off += taken
            self._move(outlet, sku, taken_id, occurred_at, -taken)
        self._check_level(result.stock, outlet, sku, occurred_at.date())

    @rule(from_outlet=outlets, sku=skus, quantity=small, in_transit=st.booleans(),
          days=days_ago)
    def transfer(self, from_outlet: str, sku: str, quantity: int, in_transit: bool,
                 days: int) -> None:
        to_outlet = OUTLETS[1 - OUTLETS.index(from_outlet)]
        occurred_at = _occurred_at(days)
        transfer_id = self._next("T")
        fields = {"from_outlet": from_outlet, "to_outlet": to_outlet, "sku": sku,
                  "quantity": quantity, "transfer_id": transfer_id, "in_transit": in_transit,
                  "occurred_at": occurred_at}
        if from_outlet not in self.policies:
            self._refused(UnknownOutlet, self.ledger.transfer, **fields)
            return
        source = self.items.get((from_outlet, sku))
        if source is None:
            self._refused(UnknownStockItem, self.ledger.transfer, **fields)
            return
        takes = source.allocate(quantity, self.policies[from_outlet], occurred_at,
                                self._held(from_outlet, sku, occurred_at))
        if takes is None:
            self._refused(InsufficientStock, self.ledger.transfer, **fields)
            return
        result = self._accept(self.ledger.transfer, fields)
        sent = [(b.batch_id, b.quantity, b.expires_on, b.unit_cost) for b in result.batches]
        expected_sent = []
        for batch_id, taken in takes:
            for unit_cost, part in source.batches[batch_id].take(taken):
                expected_sent.append((batch_id, part, CATALOGUE[sku][batch_id], unit_cost))
            source.transferred_out += taken
            self._move(from_outlet, sku, batch_id, occurred_at, -taken)
        assert sent == expected_sent  # the cost layers that left, to arrive as they left
        transfer = ModelTransfer(from_outlet, to_outlet, sku, sent)
        self.transfers[transfer_id] = transfer
        assert result.received is not in_transit
        if not in_transit:
            self._arrive(transfer, occurred_at)
            assert result.to_stock is not None
            self._check_level(result.to_stock, to_outlet, sku, occurred_at.date())
        else:
            assert result.to_stock is None
        self._check_level(result.from_stock, from_outlet, sku, occurred_at.date())

    def _arrive(self, transfer: ModelTransfer, at: datetime) -> None:
        self._open_outlet(transfer.to_outlet)
        destination = self._item(transfer.to_outlet, transfer.sku)
        remaining = destination.settle(sum(q for _, q, _, _ in transfer.batches))
        for batch_id, quantity, expires_on, unit_cost in transfer.batches:
            settled = min(remaining, quantity)  # `ledger.domain.quantities.shelved`
            remaining -= settled
            destination.add(batch_id, quantity - settled, expires_on, at, unit_cost)
            destination.transferred_in += quantity
            if quantity - settled:
                self._move(transfer.to_outlet, transfer.sku, batch_id, at, quantity - settled)
        transfer.received = True

    @precondition(lambda self: any(not t.received for t in self.transfers.values()))
    @rule(data=st.data())
    def receive_transfer(self, data: st.DataObject) -> None:
        pending = sorted(t for t, transfer in self.transfers.items() if not transfer.received)
        transfer_id = data.draw(st.sampled_from(pending), label="transfer_id")
        transfer = self.transfers[transfer_id]
        arrived_at = _occurred_at(0)
        result = self._accept(self.ledger.receive_transfer,
                              {"transfer_id": transfer_id, "occurred_at": arrived_at})
        assert result.received
        assert [(b.batch_id, b.quantity) for b in result.batches] == [
            (b, q) for b, q, _, _ in transfer.batches
        ]
        self._arrive(transfer, arrived_at)

    @precondition(lambda self: any(t.received for t in self.transfers.values()))
    @rule(data=st.data())
    def receive_a_transfer_twice_under_a_new_key(self, data: st.DataObject) -> None:
        received = sorted(t for t, transfer in self.transfers.items() if transfer.received)
        transfer_id = data.draw(st.sampled_from(received), label="transfer_id")
        self._refused(TransferAlreadyReceived, self.ledger.receive_transfer,
                      transfer_id=transfer_id, key=self._next("again"))

    @rule(outlet=outlets, policy=policies, both=st.booleans())
    def set_policy(self, outlet: str, policy: AllocationPolicy, both: bool) -> None:
        """The policy alone, or with the negative-stock rule: what is not given is kept."""
        fields: dict[str, Any] = {"outlet": outlet, "allocation_policy": policy,
                                  "key": self._next("P")}
        if both:
            fields["allow_negative"] = False
        result = self._accept(self.ledger.set_outlet_policy, fields)
        self.policies[outlet] = policy
        assert (result.allocation_policy, result.allow_negative) == (policy, False)
        assert result.late_sales_window == (
            None if self.windows.get(outlet) is None else f"{self.windows[outlet]}d")

    @rule(outlet=outlets, days=st.one_of(st.none(), st.integers(1, 9)))
    def set_late_sales_window(self, outlet: str, days: int | None) -> None:
        window = "none" if days is None else f"{days * 24}h"
        result = self._accept(self.ledger.set_outlet_policy,
                              {"outlet": outlet, "late_sales_window": window,
                               "key": self._next("L")})
        self._open_outlet(outlet)
        self.windows[outlet] = days
        settings = self.ledger.outlet_settings(outlet)
        assert settings.allocation_policy == result.allocation_policy == self.policies[outlet]
        assert settings.late_sales_window == result.late_sales_window == (
            None if days is None else f"{days}d")

    @precondition(lambda self: self.accepted)
    @rule(data=st.data())
    def repeat_an_accepted_command(self, data: st.DataObject) -> None:
        call, fields, original = data.draw(st.sampled_from(self.accepted), label="repeat")
        before = self._snapshot()
        head = self.ledger.head_position()
        again = call(**fields)
        event(f"{call.__name__} repeated")
        assert again.replayed
        assert again.model_dump(exclude={"replayed"}) == original.model_dump(
            exclude={"replayed"})
        assert self.ledger.head_position() == head, "a repeat recorded events"
        assert self._snapshot() == before, "a repeat changed stock"

    @precondition(lambda self: self.sales)
    @rule(data=st.data())
    def reuse_a_sale_key_for_another_sale(self, data: st.DataObject) -> None:
        sale_id = data.draw(st.sampled_from(sorted(self.sales)), label="sale_id")
        sale = self.sales[sale_id]
        sku = next(iter(sale.sold))
        quantity = sum(q for _, q in sale.sold[sku]) + 1
        self._refused(IdempotencyKeyReused, self.ledger.sell, outlet=sale.outlet,
                      sale_id=sale_id, lines=[(sku, quantity)])

    @precondition(lambda self: self.moved)
    @rule(outlet=outlets, data=st.data())
    def replay_by_business_time(self, outlet: str, data: st.DataObject) -> None:
        """As of any moment, a replay by business time is the sum of the movements dated by
        then, whatever order they were recorded in; and no batch is ever below zero."""
        times = sorted({moment for o, _, _, moment, _ in self.moved if o == outlet})
        if not times:
            return
        moment = data.draw(st.sampled_from(times), label="as_of")
        as_of = moment - timedelta(microseconds=1) if data.draw(st.booleans(),
                                                                 label="just before") else moment
        expected: dict[tuple[str, str], int] = {}
        for o, sku, batch_id, at, quantity in self.moved:
            if o == outlet and at <= as_of:
                expected[(sku, batch_id)] = expected.get((sku, batch_id), 0) + quantity
        report = replay(self.ledger.application, outlet, as_of=as_of, basis="business")
        got = {(stock["sku"], batch["batch_id"]): batch["quantity"]
               for stock in report["stock"] for batch in stock["batches"]}
        assert got == {key: quantity for key, quantity in expected.items() if quantity}
        assert all(quantity >= 0 for quantity in expected.values()), "a batch below zero"
        assert report["negative_batches"] == []
        event("replay by business time checked")

    @rule(sku=skus, data=st.data(), scope=st.one_of(st.none(), outlets))
    def hold(self, sku: str, data: st.DataObject, scope: str | None) -> None:
        batch_id = data.draw(st.sampled_from(sorted(CATALOGUE[sku])), label="batch_id")
        held_at = _occurred_at(0)
        fields = {"sku": sku, "batch_id": batch_id, "outlet": scope, "reason": "recall",
                  "occurred_at": held_at, "key": self._next("H")}
        if scope is not None and scope not in self.policies:
            self._refused(UnknownOutlet, self.ledger.hold, **fields)
            return
        holds = self.holds.setdefault((sku, batch_id), [])
        if any(h.outlet == scope and h.released_at is None for h in holds):
            self._refused(LotAlreadyHeld, self.ledger.hold, **fields)
            return
        result = self._accept(self.ledger.hold, fields)
        assert (result.held, result.outlet, result.held_since) == (True, scope, held_at)
        holds.append(ModelHold(scope, held_at))

    @rule(data=st.data(), scope=st.one_of(st.none(), outlets))
    def release(self, data: st.DataObject, scope: str | None) -> None:
        """Mostly a lot that is held (in its own scope or not), now and then one never held."""
        held = sorted(self.holds) or [("AMOX-500", "AMX-LATER")]
        sku, batch_id = data.draw(st.sampled_from(held), label="lot")
        released_at = _occurred_at(0)
        fields = {"sku": sku, "batch_id": batch_id, "outlet": scope, "reason": "cleared",
                  "occurred_at": released_at, "key": self._next("U")}
        active = [h for h in self.holds.get((sku, batch_id), [])
                  if h.outlet == scope and h.released_at is None]
        if not active:
            self._refused(LotNotHeld, self.ledger.release, **fields)
            return
        result = self._accept(self.ledger.release, fields)
        assert (result.held, result.held_since) == (False, active[0].held_at)
        active[0].released_at = released_at
        event("lot released")

    @precondition(lambda self: self.receipts)
    @rule(data=st.data(), quantity=st.one_of(st.none(), st.integers(1, 25)),
          unit_cost=st.one_of(st.none(), st.sampled_from(["0.75", "2.50", "4.00"])))
    def correct_receipt(self, data: st.DataObject, quantity: int | None,
                        unit_cost: str | None) -> None:
        """A receipt's quantity or cost typed wrong: never below what its batch has given
        up; a cost relabels the receipt's units still on the shelf."""
        receipt = data.draw(st.sampled_from(self.receipts), label="receipt")
        if quantity is None and unit_cost is None:
            quantity = receipt.quantity  # changes nothing: refused
        corrected_at = _occurred_at(0)
        fields: dict[str, Any] = {
            "outlet": receipt.outlet, "sku": receipt.sku, "receipt": receipt.reference,
            "reason": "typed wrong", "occurred_at": corrected_at, "key": self._next("K")}
        if quantity is not None:
            fields["quantity"] = quantity
        if unit_cost is not None:
            fields["unit_cost"] = unit_cost
        after_quantity = receipt.quantity if quantity is None else quantity
        after_cost = receipt.unit_cost if unit_cost is None else unit_cost
        item = self.items[(receipt.outlet, receipt.sku)]
        batch = item.batches[receipt.batch_id]
        taken_away = receipt.quantity - after_quantity
        if ((after_quantity, after_cost) == (receipt.quantity, receipt.unit_cost)
                or taken_away > batch.quantity or after_quantity < receipt.settled):
            self._refused(CorrectionRefused, self.ledger.correct_receipt, **fields)
            return
        result = self._accept(self.ledger.correct_receipt, fields)
        assert result.quantity == (receipt.quantity, after_quantity)
        assert result.unit_cost == (receipt.unit_cost, after_cost)
        source = f"receipt {receipt.reference}"
        if after_cost != receipt.unit_cost:
            event("correction relabelled a cost")
            for layer in batch.layers:
                if layer.source == source:
                    layer.unit_cost = after_cost
        if taken_away > 0:
            event("correction took units away")
            batch.take_from_source(taken_away, source)
        elif taken_away < 0:
            item.add(receipt.batch_id, -taken_away, batch.expires_on, corrected_at, after_cost)
            batch.layers[-1].source = source
        item.corrected -= taken_away
        if taken_away:
            self._move(receipt.outlet, receipt.sku, receipt.batch_id, corrected_at,
                       -taken_away)
        receipt.quantity, receipt.unit_cost = after_quantity, after_cost
        self._check_level(result.stock, receipt.outlet, receipt.sku, corrected_at.date())

    @precondition(lambda self: self.items)
    @rule(outlet=outlets)
    def read_models_equal_a_replay(self, outlet: str) -> None:
        """The projections, caught up, show what a replay of the events gives: on hand,
        available and held per SKU, and each batch's quantity and hold."""
        ReadModels(self.ledger.application).catch_up()
        reads = Reads(self.ledger.application)
        replayed = {row["sku"]: row for row in replay(self.ledger.application, outlet)["stock"]}
        for row in reads.stock(outlet):
            want = replayed[row["sku"]]
            assert (row["on_hand"], row["available"], row["held"]) == (
                want["on_hand"], want["available"], want.get("held", 0)), row["sku"]
            batches = {b["batch_id"]: (b["quantity"], b["on_hold"])
                       for b in reads.batches(outlet, row["sku"])}
            assert batches == {b["batch_id"]: (b["quantity"], b.get("held", False))
                               for b in want["batches"]}, row["sku"]
        assert {row["sku"] for row in reads.stock(outlet)} == set(replayed)
        shortfalls = {row["sku"]: row for row in reads.discrepancies(outlet)}
        assert {sku: row["shortfall"] for sku, row in shortfalls.items()} == {
            sku: model.shortfall for (o, sku), model in self.items.items()
            if o == outlet and model.shortfall > 0}
        for row in shortfalls.values():
            assert sum(sale["short"] for sale in row["sales"]) == row["shortfall"]
        event("read models checked against a replay")

    # ------------------------------------------------------------------ invariants

    @invariant()
    def write_model_matches_reference_model(self) -> None:
        for outlet in OUTLETS:
            for sku in SKUS:
                model = self.items.get((outlet, sku))
                if model is None:
                    with pytest.raises(UnknownStockItem):
                        self.ledger.stock_item(outlet, sku)
                    continue
                item = self.ledger.stock_item(outlet, sku)
                batches = {b: (s.quantity, s.expired) for b, s in item.batches.items()}
                assert batches == {b: (m.quantity, m.expired) for b, m in model.batches.items()}
                assert all(s.quantity >= 0 for s in item.batches.values()), "negative batch"
                assert item.shortfall == model.shortfall
                for batch_id, model_batch in model.batches.items():
                    held = [(layer.received_at, layer.quantity, layer.unit_cost)
                            for layer in item.batches[batch_id].layers]
                    want = [(layer.received_at, layer.quantity, layer.unit_cost)
                            for layer in sorted(model_batch.layers,
                                                key=lambda layer: (layer.received_at,
                                                                   layer.seq))]
                    assert held == want, f"{outlet}/{sku}/{batch_id} cost layers"

    @invariant()
    def every_stock_item_conserves_its_movements(self) -> None:
        for (outlet, sku), model in self.items.items():
            item = self.ledger.stock_item(outlet, sku)
            assert item.on_hand == model.on_hand() == model.conserved(), (
                f"{outlet}/{sku}: on hand {item.on_hand}, movements add up to "
                f"{model.conserved()}"
            )
            held = self._held(outlet, sku)
            for on_date in (TODAY, TODAY - timedelta(days=5)):
                assert item.available(on_date, held) == model.available(on_date, held)
            assert self.ledger.stock_level(outlet, sku).available == model.available(
                TODAY, held)

    @invariant()
    def what_is_on_hand_is_worth_what_the_model_says(self) -> None:
        for (outlet, sku), model in self.items.items():
            item = self.ledger.stock_item(outlet, sku)
            held = layers_value(layer for batch in item.batches.values()
                                for layer in batch.layers)
            layers = [layer for batch in model.batches.values() for layer in batch.layers]
            assert (held.value, held.unvalued) == _value(layers), f"{outlet}/{sku} value"

    def check_value_conserved(self) -> None:
        """Value received - value of what left + value restocked = value on hand, for every
        stock item at every position of the history (the production fold, as `audit verify`
        runs it: one replay checks every position), and the valuation report's value on hand
        is the model's."""
        assert conservation_findings(self.ledger.application) == []
        report = valuation_report(self.ledger.application)
        valued = {(row["outlet"], row["sku"]): (Decimal(row["value"]), row["unvalued"])
                  for row in report["items"]}
        for (outlet, sku), model in self.items.items():
            layers = [layer for batch in model.batches.values() for layer in batch.layers]
            assert valued[(outlet, sku)] == _value(layers), f"{outlet}/{sku} value on hand"

    @invariant()
    def refunds_never_exceed_sales(self) -> None:
        for sale in self.sales.values():
            for sku, per_batch in sale.refunded.items():
                sold = _merge(sale.sold[sku])
                for batch_id, quantity in per_batch.items():
                    assert quantity <= sold[batch_id]


LedgerMachine.TestCase.settings = settings(
    max_examples=50,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_ledger_state_machine = LedgerMachine.TestCase


class PostgresLedgerMachine(LedgerMachine):
    """The same machine on PostgreSQL, a throwaway database per example."""

    def open_store(self) -> str:
        self.database = fresh_database()
        url: str = self.database.__enter__()
        return url

    def teardown(self) -> None:
        super().teardown()
        self.database.__exit__(None, None, None)


PostgresLedgerMachine.TestCase.settings = settings(
    max_examples=6,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_ledger_state_machine_on_postgres = pytest.mark.postgres(PostgresLedgerMachine.TestCase)


# --------------------------------------------------------------------------- examples


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    opened = Ledger.open(f"sqlite:///{tmp_path}/x.sqlite3", create_tables=True)
    yield opened
    opened.close()


def test_a_refund_of_a_sale_sold_into_negative_may_return_everything_sold(
    ledger: Ledger,
) -> None:
    """DOMAIN.md: a refund is limited by "what was sold minus what was already refunded".

    A sale of 5 at an outlet that allows negative stock, with only 2 on the shelf, sold 5; its
    customer may bring all 5 back.
    """
    ledger.set_outlet_policy(outlet="NAIROBI-1", allow_negative=True)
    ledger.receive(outlet="NAIROBI-1", sku="RETRO-CLOCK", batch_id="RC-FIRST", quantity=2)
    sale = ledger.sell(outlet="NAIROBI-1", sale_id="S-NEG", lines=[("RETRO-CLOCK", 5)])
    assert sale.lines[0].unallocated == 3
    assert ledger.stock_item("NAIROBI-1", "RETRO-CLOCK").on_hand == -3
    ledger.refund(sale_id="S-NEG", refund_id="R-1", lines=[("RETRO-CLOCK", 5)])
    assert ledger.stock_item("NAIROBI-1", "RETRO-CLOCK").on_hand == 2


def test_an_in_transit_transfer_the_destination_cannot_receive_is_refused_at_dispatch(
    ledger: Ledger,
) -> None:
    """A direct transfer of a batch whose id the destination holds with another expiry is
    refused (BatchConflict) and records nothing. The same transfer in transit must be refused
    too: otherwise the dispatch is recorded, `receive_transfer` can never succeed, and the stock
    is stranded in transit for ever."""
    ledger.receive(outlet="NAIROBI-1", sku="AMOX-500", batch_id="AMX-1", quantity=5,
                   expires_on=date(2031, 1, 1))
    ledger.receive(outlet="MOMBASA-2", sku="AMOX-500", batch_id="AMX-1", quantity=5,
                   expires_on=date(2032, 1, 1))
    with pytest.raises(BatchConflict):
        ledger.transfer(from_outlet="NAIROBI-1", to_outlet="MOMBASA-2", sku="AMOX-500",
                        quantity=2, transfer_id="T-DIRECT")
    head = ledger.head_position()
    with pytest.raises(BatchConflict):
        ledger.transfer(from_outlet="NAIROBI-1", to_outlet="MOMBASA-2", sku="AMOX-500",
                        quantity=2, transfer_id="T-TRANSIT", in_transit=True)
    assert ledger.head_position() == head
    assert ledger.stock_item("NAIROBI-1", "AMOX-500").on_hand == 5
