"""The back office's decisions as pure functions: holds, corrections of receipts, found stock
in counts, and late sales with the shortfalls they leave (issue 20)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger.app.commands import CountStock, parse
from ledger.domain.corrections import (
    BatchFacts,
    CorrectionRequest,
    Receipt,
    find_receipt,
    plan_correction,
)
from ledger.domain.counts import split_found
from ledger.domain.errors import (
    BatchConflict,
    CorrectionRefused,
    InvalidInput,
    LotAlreadyHeld,
    LotNotHeld,
    UnknownBatch,
    UnknownReceipt,
)
from ledger.domain.holds import Hold, check_can_hold, check_can_release, held_batches, hold_applies
from ledger.domain.late_sales import (
    LATE_AFTER,
    ShortSale,
    is_late_sale,
    restocks_shortfall,
    unsettled,
)

T0 = datetime(2026, 11, 1, 12, tzinfo=UTC)


def at(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


# --------------------------------------------------------------------------- holds


def test_a_hold_everywhere_applies_at_every_outlet_from_its_time_until_its_release() -> None:
    hold = Hold("LOT-A", None, at(0), "recall", "qa", released_at=at(10))
    assert hold_applies(hold, "ANY-OUTLET", at(0)) and hold_applies(hold, "O2", at(9.9))
    assert not hold_applies(hold, "O1", at(-1))
    assert not hold_applies(hold, "O1", at(10))
    assert not hold_applies(hold, "O1", None), "released: not held now"


def test_a_hold_at_one_outlet_applies_there_only() -> None:
    hold = Hold("LOT-A", "O1", at(0), "damp", "qa")
    assert hold_applies(hold, "O1", None) and hold_applies(hold, "O1", at(5))
    assert not hold_applies(hold, "O2", None)


holds_strategy = st.lists(st.builds(
    Hold, st.sampled_from(["A", "B", "C"]), st.sampled_from([None, "O1", "O2"]),
    st.integers(0, 20).map(at), st.just("why"), st.just("qa"),
    st.one_of(st.none(), st.integers(0, 30).map(at))), max_size=6)


@given(holds=holds_strategy, outlet=st.sampled_from(["O1", "O2", "O3"]),
       moment=st.one_of(st.none(), st.integers(-5, 35).map(at)))
def test_held_batches_are_exactly_those_of_a_hold_that_applies(
        holds: list[Hold], outlet: str, moment: datetime | None) -> None:
    held = held_batches(holds, outlet, moment)
    for hold in holds:
        if hold_applies(hold, outlet, moment):
            assert hold.batch_id in held
    assert held <= {h.batch_id for h in holds if hold_applies(h, outlet, moment)}


def test_a_lot_is_held_once_per_scope_and_released_in_its_own_scope() -> None:
    holds = [Hold("A", "O1", at(0), "damp", "qa")]
    with pytest.raises(LotAlreadyHeld):
        check_can_hold(holds, "AMOX", "A", "O1")
    check_can_hold(holds, "AMOX", "A", None)  # everywhere is another scope
    check_can_hold(holds, "AMOX", "B", "O1")
    assert check_can_release(holds, "AMOX", "A", "O1") is holds[0]
    with pytest.raises(LotNotHeld, match="held at outlet O1"):
        check_can_release(holds, "AMOX", "A", None)
    released = [Hold("A", "O1", at(0), "damp", "qa", released_at=at(1))]
    check_can_hold(released, "AMOX", "A", "O1")
    with pytest.raises(LotNotHeld):
        check_can_release(released, "AMOX", "A", "O1")


# --------------------------------------------------------------------------- corrections


RECEIPT = Receipt(version=3, reference="DN-1", batch_id="LOT-A", quantity=100,
                  expires_on=date(2027, 3, 1), unit_cost="1.00")


def facts(quantity: int, expired: bool = False) -> BatchFacts:
    return BatchFacts(quantity, date(2027, 3, 1), expired)


@given(on_hand=st.integers(0, 200), corrected=st.integers(1, 300))
def test_a_correction_never_takes_away_more_than_the_batch_still_holds(
        on_hand: int, corrected: int) -> None:
    request = CorrectionRequest(quantity=corrected)
    if corrected == RECEIPT.quantity:
        with pytest.raises(CorrectionRefused, match="changes nothing"):
            plan_correction("O1", "AMOX", RECEIPT, request, facts(on_hand), None)
    elif RECEIPT.quantity - corrected > on_hand:
        with pytest.raises(CorrectionRefused, match="already sold"):
            plan_correction("O1", "AMOX", RECEIPT, request, facts(on_hand), None)
    else:
        after = plan_correction("O1", "AMOX", RECEIPT, request, facts(on_hand), None)
        assert after.quantity == corrected
        assert on_hand + after.quantity - RECEIPT.quantity >= 0


def test_a_correction_changes_only_the_fields_it_names() -> None:
    after = plan_correction("O1", "AMOX", RECEIPT,
                            CorrectionRequest(expires_on=date(2026, 12, 24)), facts(100), None)
    assert after == Receipt(3, "DN-1", "LOT-A", 100, date(2026, 12, 24), "1.00")
    costed = plan_correction("O1", "AMOX", RECEIPT, CorrectionRequest(unit_cost="1.20"),
                             facts(0), None)
    assert (costed.unit_cost, costed.quantity) == ("1.20", 100)


def test_a_batch_written_off_as_expired_keeps_its_expiry() -> None:
    with pytest.raises(CorrectionRefused, match="written off as expired"):
        plan_correction("O1", "AMOX", RECEIPT, CorrectionRequest(expires_on=date(2028, 1, 1)),
                        facts(0, expired=True), None)


def test_a_batch_sent_to_other_outlets_keeps_its_expiry_and_id_but_not_its_quantity() -> None:
    sent = BatchFacts(60, date(2027, 3, 1), False, ("O2", "O3"))
    for request in (CorrectionRequest(expires_on=date(2026, 12, 24)),
                    CorrectionRequest(batch_id="LOT-B")):
        with pytest.raises(CorrectionRefused, match="transferred to outlet\\(s\\) O2, O3"):
            plan_correction("O1", "AMOX", RECEIPT, request, sent, None)
    assert plan_correction("O1", "AMOX", RECEIPT, CorrectionRequest(quantity=90), sent,
                           None).quantity == 90
    assert plan_correction("O1", "AMOX", RECEIPT, CorrectionRequest(unit_cost="0.90"), sent,
                           None).unit_cost == "0.90"


def test_a_receipt_moves_to_another_batch_id_only_with_all_its_units() -> None:
    request = CorrectionRequest(batch_id="LOT-B")
    assert plan_correction("O1", "AMOX", RECEIPT, request, facts(100), None).batch_id == "LOT-B"
    with pytest.raises(CorrectionRefused, match="already sold stay"):
        plan_correction("O1", "AMOX", RECEIPT, request, facts(99), None)
    with pytest.raises(CorrectionRefused, match="recorded here with expiry"):
        plan_correction("O1", "AMOX", RECEIPT, request, facts(100),
                        BatchFacts(5, date(2030, 1, 1), False))


def test_a_receipt_is_found_by_its_reference_or_its_version() -> None:
    twin = Receipt(7, "DN-1", "LOT-C", 5, None, None)
    other = Receipt(9, "LOT-D", "LOT-D", 5, None, None)
    assert find_receipt([RECEIPT, other], "O1", "AMOX", "DN-1") is RECEIPT
    with pytest.raises(UnknownReceipt, match="ambiguous: name one of DN-1@3, DN-1@7"):
        find_receipt([RECEIPT, twin], "O1", "AMOX", "DN-1")
    assert find_receipt([RECEIPT, twin], "O1", "AMOX", "DN-1@7") is twin
    with pytest.raises(UnknownReceipt, match="its receipts: DN-1, LOT-D"):
        find_receipt([RECEIPT, other], "O1", "AMOX", "DN-404")


# --------------------------------------------------------------------------- counts


def test_a_count_names_known_batches_and_declared_found_ones_only() -> None:
    known, found = split_found("O1", "AMOX", {"A", "B"}, {"A": 8, "N": 3}, {"N"})
    assert (known, found) == ({"A": 8}, {"N": 3})
    with pytest.raises(UnknownBatch):
        split_found("O1", "AMOX", {"A"}, {"A": 8, "TYPO": 3}, set())
    with pytest.raises(BatchConflict, match="is known"):
        split_found("O1", "AMOX", {"A"}, {"A": 8}, {"A"})


@given(known=st.sets(st.sampled_from("ABCDE")), counted=st.dictionaries(
    st.sampled_from("ABCDEFG"), st.integers(0, 9), min_size=1),
    declared=st.sets(st.sampled_from("FG")))
def test_a_count_splits_into_known_and_found_batches_or_is_refused(
        known: set[str], counted: dict[str, int], declared: set[str]) -> None:
    unknown = {b for b in counted if b not in known and b not in declared}
    if unknown:
        with pytest.raises(UnknownBatch):
            split_found("O1", "AMOX", known, counted, declared)
        return
    counts, found = split_found("O1", "AMOX", known, counted, declared)
    assert counts.keys() <= known and found.keys() <= declared
    assert {**counts, **found} == counted and not counts.keys() & found.keys()


def test_a_found_batch_must_be_counted_above_zero() -> None:
    with pytest.raises(InvalidInput, match="above zero"):
        parse(CountStock, outlet="O1", sku="AMOX", counts={"N": 0}, found={"N": {}})
    with pytest.raises(InvalidInput, match="above zero"):
        parse(CountStock, outlet="O1", sku="AMOX", counts={"A": 1}, found={"N": {}})


# --------------------------------------------------------------------------- late sales


def test_a_sale_is_late_only_at_an_outlet_with_a_window_and_dated_well_back() -> None:
    now = at(100)
    assert is_late_sale(now - LATE_AFTER - timedelta(seconds=1), now, 3600)
    assert not is_late_sale(now - LATE_AFTER, now, 3600)
    assert not is_late_sale(at(0), now, None)


@given(write_off=st.booleans(), shortfall=st.integers(-5, 20), returned=st.integers(0, 20))
def test_units_sold_short_go_back_against_the_shortfall_only_while_it_covers_them(
        write_off: bool, shortfall: int, returned: int) -> None:
    restocked = restocks_shortfall(write_off, shortfall, returned)
    assert restocked == (not write_off and returned <= max(shortfall, 0))
    if restocked:
        assert shortfall - returned >= 0 or returned == 0, "units on hand in no batch"


@given(shortfall=st.integers(0, 50), parts=st.lists(st.integers(1, 10), max_size=8))
def test_the_open_shortfall_is_the_newest_short_sales(shortfall: int, parts: list[int]) -> None:
    sales = [ShortSale(f"S-{i}", at(-i), at(0), part) for i, part in enumerate(parts)]
    open_sales = unsettled(shortfall, sales)
    assert sum(part for _, part in open_sales) == min(shortfall, sum(parts))
    assert [sale for sale, _ in open_sales] == sales[:len(open_sales)]
    assert all(0 < part <= sale.shortfall for sale, part in open_sales)
    assert all(part == sale.shortfall for sale, part in open_sales[:-1])


# --------------------------------------------------------------------------- the stock item


def test_a_stock_item_skips_held_batches_and_a_correction_takes_its_own_layer_first() -> None:
    from ledger.domain.quantities import BatchIdentity
    from ledger.domain.stock_item import MovementContext, StockItem

    item = StockItem.open("O1", "AMOX")
    context = MovementContext(at(0), "qa", "DN-1", "k1")
    item.receive(BatchIdentity(batch_id="A", quantity=5, expires_on=date(2090, 1, 1),
                               unit_cost="1.00"), context)
    item.receive(BatchIdentity(batch_id="A", quantity=7, expires_on=date(2090, 1, 1),
                               unit_cost="2.00"), MovementContext(at(1), "qa", "DN-2", "k2"))
    item.receive(BatchIdentity(batch_id="B", quantity=3, expires_on=date(2095, 1, 1)), context)
    held = frozenset({"A"})
    assert item.available(at(2).date(), held) == 3 and item.held_quantity(held) == 12
    allocation = item.allocate(4, "fefo", at(2).date(), at(2), held)
    assert [(t.batch_id, t.quantity) for t in allocation.takes] == [("B", 3)]
    assert allocation.unallocated == 1
    receipt = Receipt(version=3, reference="DN-2", batch_id="A", quantity=7,
                      expires_on=date(2090, 1, 1), unit_cost="2.00")
    item.correct_receipt(receipt, CorrectionRequest(quantity=2), "typed 7",
                         MovementContext(at(3), "qa", "DN-2", "k3"))
    layers = [(layer.quantity, layer.unit_cost) for layer in item.batches["A"].layers]
    assert layers == [(5, "1.00"), (2, "2.00")]
