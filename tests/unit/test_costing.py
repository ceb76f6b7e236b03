"""The costing rules of `ledger.domain.costing` and the fold of `ledger.domain.valuation`:
specific identification across batches, first in first out within one, refunds at the cost
their units left with, sales into negative stock valued when settled, unvalued units apart,
and value conserved. Pure functions and the stock item itself; no database.

The worked examples at the end are the peers' own published figures.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger import events
from ledger.domain.costing import (
    CostPiece,
    PendingSale,
    PieceValue,
    ValueFlows,
    cancel_pending,
    conservation_problem,
    cost_places,
    cost_places_problem,
    first_units,
    refund_pieces,
    settle_pending,
    take_costs,
    value_of,
)
from ledger.domain.errors import InvalidInput
from ledger.domain.layers import Layer
from ledger.domain.quantities import BatchIdentity, BatchTake
from ledger.domain.stock_item import MovementContext, StockItem
from ledger.domain.store_settings import StoreSettings, check_unit_cost
from ledger.domain.valuation import CostedMovement, ItemCosting

MONDAY = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def at(hours: float) -> datetime:
    return MONDAY + timedelta(hours=hours)


def layers(*runs: tuple[int, str | None]) -> list[Layer]:
    return [Layer(seq=i, received_at=at(i), quantity=q, received=q, unit_cost=c,
                  source=f"receipt {i}") for i, (q, c) in enumerate(runs)]


def pieces(batch: str, *runs: tuple[int, str | None]) -> list[CostPiece]:
    return [CostPiece(batch_id=batch, quantity=q, unit_cost=c) for q, c in runs]


# --------------------------------------------------------------------------- places


def test_a_cost_has_the_places_it_is_written_with() -> None:
    assert [cost_places(c) for c in ("2", "2.5", "2.50", "0.125", Decimal("1E-3"))] == \
        [0, 1, 2, 3, 3]
    assert cost_places_problem("2.50", 2) is None
    assert cost_places_problem("2.505", 2) == (
        "2.505 has 3 decimal places; this store's costs have at most 2")


def test_a_receipt_with_more_places_than_the_store_allows_is_refused_naming_the_field() -> None:
    store = StoreSettings.set_currency("eur", 2, "admin")
    assert (store.currency, store.cost_places) == ("EUR", 2)
    check_unit_cost(store, Decimal("1.25"))
    with pytest.raises(InvalidInput) as refused:
        check_unit_cost(store, Decimal("1.255"))
    assert refused.value.field == "unit_cost"
    assert "(EUR)" in refused.value.message
    check_unit_cost(None, Decimal("1.123456"))  # no currency named: six places
    with pytest.raises(InvalidInput, match="currency"):
        StoreSettings.set_currency("euro", 2, "admin")


# --------------------------------------------------------------------------- takes


def test_a_take_costs_the_layers_it_leaves_first_in_first_out() -> None:
    shelf = layers((8, "10"), (4, "16"))
    assert take_costs("B1", shelf, 10) == pieces("B1", (8, "10"), (2, "16"))
    assert [layer.quantity for layer in shelf] == [8, 4], "the layers are not changed"


def test_units_without_a_cost_are_unvalued_never_zero() -> None:
    assert value_of(pieces("B1", (2, "1.50"), (3, None))) == PieceValue(Decimal("3.00"), 3)


@given(st.lists(st.tuples(st.integers(1, 50), st.sampled_from(["0.01", "1.25", "7", None])),
                min_size=1, max_size=6), st.data())
def test_taking_in_parts_costs_what_taking_at_once_costs(runs: list[tuple[int, str | None]],
                                                         data: st.DataObject) -> None:
    shelf = layers(*runs)
    total = sum(q for q, _ in runs)
    first = data.draw(st.integers(0, total))
    second = data.draw(st.integers(0, total - first))
    once = value_of(take_costs("B", shelf, first + second))
    item = StockItem.open("O", "S")
    for layer in shelf:
        item.add_to_batch(BatchIdentity(batch_id="B", quantity=layer.quantity,
                                        unit_cost=layer.unit_cost),
                          layer.quantity, layer.received_at, layer.source)
    parts = PieceValue()
    for quantity in (first, second):
        parts = parts + value_of(item.costs_of([BatchTake(batch_id="B", quantity=quantity)]))
        item.take_from_batch("B", quantity)
    assert parts == once


# --------------------------------------------------------------------------- refunds


def test_a_refund_returns_the_sale_pieces_in_the_order_they_left() -> None:
    sold = pieces("B1", (8, "10"), (2, "16"))
    assert refund_pieces("B1", sold, 0, 9) == pieces("B1", (8, "10"), (1, "16"))
    assert refund_pieces("B1", sold, 7, 3) == pieces("B1", (1, "10"), (2, "16"))
    assert refund_pieces("B1", None, 0, 2) == pieces("B1", (2, None))
    with pytest.raises(ValueError, match="more than the sale took"):
        refund_pieces("B1", sold, 9, 2)


@given(st.lists(st.tuples(st.integers(1, 20), st.sampled_from(["1", "2.5", None])),
                min_size=1, max_size=5), st.data())
def test_refunds_in_any_parts_return_exactly_what_the_sale_took(
        runs: list[tuple[int, str | None]], data: st.DataObject) -> None:
    sold = pieces("B", *runs)
    total = sum(q for q, _ in runs)
    returned: list[CostPiece] = []
    done = 0
    while done < total:
        part = data.draw(st.integers(1, total - done))
        returned += refund_pieces("B", sold, done, part)
        done += part
    assert value_of(returned) == value_of(sold)


# --------------------------------------------------------------------------- shortfall


def test_a_sale_into_negative_is_valued_by_the_receipt_that_settles_it_oldest_first() -> None:
    pending = [PendingSale("S-1", 3), PendingSale("S-2", 4)]
    left, late = settle_pending(pending, pieces("B1", (5, "2.00")))
    assert left == [PendingSale("S-2", 2)]
    assert [(v.sale_id, value_of(v.pieces).value) for v in late] == [
        ("S-1", Decimal("6.00")), ("S-2", Decimal("4.00"))]
    assert cancel_pending(left, "S-2", 3) == ([], 1)


@given(st.lists(st.integers(1, 9), min_size=1, max_size=5), st.data())
def test_settling_values_every_settled_unit_once(shortfalls: list[int],
                                                 data: st.DataObject) -> None:
    pending = [PendingSale(f"S-{i}", q) for i, q in enumerate(shortfalls)]
    settled = data.draw(st.integers(0, sum(shortfalls)))
    arriving = pieces("B", (settled, "1.50")) if settled else []
    left, late = settle_pending(pending, arriving)
    assert sum(p.quantity for v in late for p in v.pieces) == settled
    assert sum(p.quantity for p in left) == sum(shortfalls) - settled
    head, tail = first_units(pieces("B", (3, "1"), (4, "2")), 5)
    assert (head, tail) == (pieces("B", (3, "1"), (2, "2")), pieces("B", (2, "2")))


def test_conservation_names_what_does_not_add_up() -> None:
    flows = ValueFlows(received=PieceValue(Decimal(10)), left=PieceValue(Decimal(4)))
    assert conservation_problem(flows, PieceValue(Decimal(6))) is None
    assert "but the layers on hand hold 5" in str(conservation_problem(flows,
                                                                       PieceValue(Decimal(5))))


# --------------------------------------------------------------------------- the fold


class History:
    """A stock item's events, decided by the stock item and folded by `ItemCosting` in
    stream order, as the reports fold them."""

    def __init__(self) -> None:
        self.item = StockItem.open("O", "AMOX")
        self.fold = ItemCosting()
        self.rows: list[CostedMovement] = []
        self.position = 0
        self.hours = 0.0
        self._fold_pending()

    def _fold_pending(self) -> None:
        for event in self.item.collect_events():
            self.position += 1
            self.rows += self.fold.apply(self.position, event)
            assert self.fold.conservation_problem() is None
            assert self.fold.layers_on_hand == self.fold.on_hand(), "kept batch by batch"

    def context(self, reference: str) -> MovementContext:
        self.hours += 1
        return MovementContext(at(self.hours), "till", reference, f"key:{reference}")

    def receive(self, batch: str, quantity: int, unit_cost: str | None,
                reference: str) -> None:
        self.item.receive(BatchIdentity(batch_id=batch, quantity=quantity,
                                        expires_on=date(2030, 1, 1), unit_cost=unit_cost),
                          self.context(reference))
        self._fold_pending()

    def sell(self, sale: str, quantity: int, negative: bool = False) -> tuple[CostPiece, ...]:
        allocation = self.item.sell(sale, quantity, "fifo", negative, self.context(sale))
        self._fold_pending()
        return allocation.costs

    def refund(self, sale: str, refund: str, batch: str, quantity: int, already: int,
               sold: tuple[CostPiece, ...]) -> None:
        costs = {batch: refund_pieces(batch, sold, already, quantity)}
        self.item.refund(sale, refund, [BatchTake(batch_id=batch, quantity=quantity)], 0,
                         False, self.context(refund), costs)
        self._fold_pending()

    def value(self) -> PieceValue:
        return self.fold.on_hand()

    def cost_of(self, kind: str) -> Decimal:
        return sum((row.value.value for row in self.rows if row.kind == kind), Decimal(0))


def test_the_fold_costs_a_sale_as_the_sale_was_costed_when_decided() -> None:
    history = History()
    history.receive("B1", 8, "10", "DN-1")
    history.receive("B1", 4, "16", "DN-2")
    decided = history.sell("S-1", 10)
    [sold] = [row for row in history.rows if row.kind == "sold"]
    assert sold.pieces == decided == tuple(pieces("B1", (8, "10"), (2, "16")))


def test_a_refund_restocks_at_the_cost_the_units_left_with() -> None:
    history = History()
    history.receive("B1", 8, "10", "DN-1")
    history.receive("B1", 4, "16", "DN-2")
    sold = history.sell("S-1", 10)
    history.refund("S-1", "R-1", "B1", 9, 0, sold)
    assert history.value() == PieceValue(Decimal(32 + 80 + 16))
    history.refund("S-1", "R-2", "B1", 1, 9, sold)
    assert history.value() == PieceValue(Decimal(144)), "everything back, at its own cost"


def test_a_sale_into_negative_stock_is_valued_late_by_the_receipt_that_settles_it() -> None:
    history = History()
    history.receive("B1", 2, "3.00", "DN-1")
    history.sell("S-1", 5, negative=True)
    sold = [row for row in history.rows if row.kind == "sold"]
    assert (sold[0].value.value, sold[0].pending) == (Decimal("6.00"), 3)
    history.receive("B2", 10, "4.00", "DN-2")
    [late] = [row for row in history.rows if row.kind == "valued late"]
    assert (late.sale_id, late.quantity, late.value.value) == ("S-1", 3, Decimal("12.00"))
    assert history.fold.late_valued == {"S-1": 3}
    assert history.value() == PieceValue(Decimal("28.00"))


def test_stock_received_without_a_cost_stays_unvalued_through_a_sale() -> None:
    history = History()
    history.receive("B1", 5, None, "DN-1")
    history.receive("B2", 5, "1.00", "DN-2")
    assert value_of(history.sell("S-1", 7)) == PieceValue(Decimal("2.00"), 5)
    assert history.value() == PieceValue(Decimal("3.00"), 0)


def test_an_event_that_moves_no_stock_changes_no_value() -> None:
    history = History()
    history.receive("B1", 5, "2", "DN-1")
    history.item.set_reorder_level(3, "admin")
    history._fold_pending()
    assert history.value() == PieceValue(Decimal(10))


# --------------------------------------------------------------------------- the peers


def test_erpnext_fifo_example_sale_of_15_from_10_at_100_and_10_at_120() -> None:
    """ERPNext's manual, "FIFO/LIFO and Moving Average calculation difference", section "As
    per FIFO" (https://docs.frappe.io/erpnext/v13/user/manual/en/stock/articles/
    calculation-of-valuation-rate-in-fifo-and-moving-average): purchases of 10 at 100 and 10
    at 120, a sale of 15: (10 * 100) + (5 * 120) = 1600, leaving 5 at 120 = 600; total 2200.

    Received twice into one batch, the two receipts are two layers, so the same FIFO holds
    within a batch."""
    history = History()
    history.receive("LOT-1", 10, "100", "PR-1")
    history.receive("LOT-1", 10, "120", "PR-2")
    assert value_of(history.sell("SI-1", 15)).value == Decimal(1600)
    assert history.value().value == Decimal(600)
    assert history.cost_of("sold") + history.value().value == Decimal(2200)


def test_erpnext_fifo_example_across_two_batches_by_specific_identification() -> None:
    """The same ERPNext example (link above) with each purchase its own batch: FIFO
    allocation names LOT-A then LOT-B, and the sale costs exactly the units of each."""
    history = History()
    history.receive("LOT-A", 10, "100", "PR-1")
    history.receive("LOT-B", 10, "120", "PR-2")
    costs = history.sell("SI-1", 15)
    assert costs == tuple(pieces("LOT-A", (10, "100")) + pieces("LOT-B", (5, "120")))
    assert value_of(costs).value == Decimal(1600)
    assert history.value().value == Decimal(600)


def test_odoo_fifo_costing_method_example() -> None:
    """Odoo's documentation, "Automatic inventory valuation", section "Costing method", tab
    "First In First Out (FIFO)"
    (https://www.odoo.com/documentation/17.0/applications/inventory_and_mrp/inventory/
    product_management/inventory_valuation/inventory_valuation_config.html; source
    content/applications/inventory_and_mrp/inventory/product_management/inventory_valuation/
    inventory_valuation_config.rst in github.com/odoo/documentation): receive 8 at $10 (value
    $80), receive 4 at $16 ($144), deliver 10: -8 * $10 - 2 * $16 = -$112, leaving $32 (unit
    cost $16); receive 2 at $6: $44 (unit cost $11)."""
    history = History()
    history.receive("TABLE", 8, "10", "PO-1")
    assert history.value().value == Decimal(80)
    history.receive("TABLE", 4, "16", "PO-2")
    assert history.value().value == Decimal(144)
    assert value_of(history.sell("DO-1", 10)).value == Decimal(112)
    assert history.value().value == Decimal(32)
    history.receive("TABLE", 2, "6", "PO-3")
    assert history.value().value == Decimal(44)
    assert history.value().value / history.item.on_hand == Decimal(11)


def test_odoo_fifo_example_with_the_delivery_returned() -> None:
    """The Odoo example above, then the 10 delivered come back: a return restocks at the
    cost the units left with (8 at $10 and 2 at $16), so the value is $44 + $112 = $156,
    the receipts' own $80 + $64 + $12, as Odoo's returns take the original move's cost."""
    history = History()
    history.receive("TABLE", 8, "10", "PO-1")
    history.receive("TABLE", 4, "16", "PO-2")
    sold = history.sell("DO-1", 10)
    history.receive("TABLE", 2, "6", "PO-3")
    history.refund("DO-1", "RET-1", "TABLE", 10, 0, sold)
    assert history.value().value == Decimal(156)
    assert history.fold.flows.restocked.value == Decimal(112)


def test_events_of_version_1_read_back_without_costs() -> None:
    """A refund recorded before refunds recorded costs restocked without one; it reads so."""
    state = {"restocked": [BatchTake(batch_id="B1", quantity=2)]}
    events.StockRefunded.upcast_v1_v2(state)
    assert state["restocked_costs"] == [CostPiece(batch_id="B1", quantity=2, unit_cost=None)]
    lines = {"lines": [{"sku": "A", "quantity": 1, "takes": []}]}
    events.SaleRecorded.upcast_v1_v2(lines)
    assert lines["lines"][0]["costs"] is None
