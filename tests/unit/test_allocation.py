"""FEFO/FIFO allocation: which batches a sale, transfer or write-off takes from."""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger.domain.allocation import (
    Allocation,
    BatchStock,
    allocate,
    allocate_fefo,
    allocate_fifo,
    allocate_in_order,
    available_quantity,
    fefo_key,
    fifo_key,
    is_sellable,
)
from ledger.domain.quantities import AllocationPolicy, BatchIdentity
from ledger.domain.stock_item import StockItem
from tests.strategies import TODAY, batch_stocks, business_dates, quantities

RECEIVED_AT = datetime(2020, 1, 1, tzinfo=UTC)
"""When the batches of `_stock_item_holding` arrived: before every business date drawn."""

policies = st.sampled_from(["fefo", "fifo"])


def _sellable(batch: BatchStock, on_date: date) -> bool:
    return batch.quantity > 0 and (batch.expires_on is None or on_date < batch.expires_on)


def _policy_order(batches: list[BatchStock], policy: AllocationPolicy) -> list[BatchStock]:
    if policy == "fefo":
        return sorted(batches, key=lambda b: (b.expires_on or date.max, b.received_seq))
    return sorted(batches, key=lambda b: b.received_seq)


def _by_id(batches: list[BatchStock]) -> dict[str, BatchStock]:
    return {batch.batch_id: batch for batch in batches}


def _batch(
    batch_id: str, quantity: int, expires_on: date | None = None, received_seq: int = 0
) -> BatchStock:
    return BatchStock(batch_id, quantity, expires_on, received_seq)


def _takes(allocation: Allocation) -> list[tuple[str, int]]:
    return [(take.batch_id, take.quantity) for take in allocation.takes]


# --------------------------------------------------------------------------- properties


@given(batches=batch_stocks(), asked=quantities, on_date=business_dates, policy=policies)
def test_allocated_and_unallocated_add_up_to_what_was_asked(
    batches: list[BatchStock], asked: int, on_date: date, policy: AllocationPolicy
) -> None:
    allocation = allocate(batches, asked, on_date, policy)
    assert allocation.allocated + allocation.unallocated == asked
    assert allocation.unallocated >= 0


@given(batches=batch_stocks(), asked=quantities, on_date=business_dates, policy=policies)
def test_allocates_everything_available_up_to_what_was_asked(
    batches: list[BatchStock], asked: int, on_date: date, policy: AllocationPolicy
) -> None:
    allocation = allocate(batches, asked, on_date, policy)
    available = available_quantity(batches, on_date)
    assert allocation.allocated == min(asked, available)
    assert allocation.unallocated == max(0, asked - available)


@given(batches=batch_stocks(), asked=quantities, on_date=business_dates, policy=policies)
def test_never_takes_more_than_a_batch_holds(
    batches: list[BatchStock], asked: int, on_date: date, policy: AllocationPolicy
) -> None:
    allocation = allocate(batches, asked, on_date, policy)
    by_id = _by_id(batches)
    taken_ids = [take.batch_id for take in allocation.takes]
    assert len(taken_ids) == len(set(taken_ids)), "a batch appears on two takes"
    for take in allocation.takes:
        assert 0 < take.quantity <= by_id[take.batch_id].quantity


@given(batches=batch_stocks(), asked=quantities, on_date=business_dates, policy=policies)
def test_never_takes_from_an_expired_or_empty_batch(
    batches: list[BatchStock], asked: int, on_date: date, policy: AllocationPolicy
) -> None:
    allocation = allocate(batches, asked, on_date, policy)
    by_id = _by_id(batches)
    for take in allocation.takes:
        batch = by_id[take.batch_id]
        assert batch.quantity > 0
        assert batch.expires_on is None or batch.expires_on > on_date, (
            f"took {take.quantity} from {batch.batch_id} expiring {batch.expires_on} "
            f"on {on_date}"
        )


@given(batches=batch_stocks(), asked=quantities, on_date=business_dates, policy=policies)
def test_takes_whole_batches_before_the_last_partial_one(
    batches: list[BatchStock], asked: int, on_date: date, policy: AllocationPolicy
) -> None:
    allocation = allocate(batches, asked, on_date, policy)
    by_id = _by_id(batches)
    for take in allocation.takes[:-1]:
        assert take.quantity == by_id[take.batch_id].quantity
    if allocation.unallocated:
        # Nothing was left behind: every take emptied its batch.
        for take in allocation.takes:
            assert take.quantity == by_id[take.batch_id].quantity


@given(batches=batch_stocks(), asked=quantities, on_date=business_dates, policy=policies)
def test_takes_batches_in_policy_order_without_skipping_a_sellable_one(
    batches: list[BatchStock], asked: int, on_date: date, policy: AllocationPolicy
) -> None:
    allocation = allocate(batches, asked, on_date, policy)
    sellable_in_order = [
        b.batch_id for b in _policy_order(batches, policy) if _sellable(b, on_date)
    ]
    taken = [take.batch_id for take in allocation.takes]
    # The takes are exactly the first sellable batches in policy order.
    assert taken == sellable_in_order[: len(taken)]


@given(batches=batch_stocks(), asked=quantities, on_date=business_dates)
def test_fefo_takes_earliest_expiry_first_then_received_order(
    batches: list[BatchStock], asked: int, on_date: date
) -> None:
    allocation = allocate_fefo(batches, asked, on_date)
    by_id = _by_id(batches)
    taken = [by_id[take.batch_id] for take in allocation.takes]
    for earlier, later in itertools.pairwise(taken):
        earlier_expiry = earlier.expires_on or date.max
        later_expiry = later.expires_on or date.max
        assert earlier_expiry <= later_expiry
        if earlier_expiry == later_expiry:
            assert earlier.received_seq < later.received_seq
    if allocation.takes:
        # No untouched sellable batch expires strictly before the last batch taken from.
        last = taken[-1]
        taken_ids = {b.batch_id for b in taken}
        for batch in batches:
            if batch.batch_id in taken_ids or not _sellable(batch, on_date):
                continue
            assert fefo_key(batch) > fefo_key(last)


@given(batches=batch_stocks(), asked=quantities, on_date=business_dates)
def test_fifo_takes_in_received_order_whatever_the_expiry(
    batches: list[BatchStock], asked: int, on_date: date
) -> None:
    allocation = allocate_fifo(batches, asked, on_date)
    by_id = _by_id(batches)
    seqs = [by_id[take.batch_id].received_seq for take in allocation.takes]
    assert seqs == sorted(seqs)


@given(batches=batch_stocks(), asked=quantities, on_date=business_dates)
def test_allocate_in_order_over_fefo_sorted_batches_equals_allocate_fefo(
    batches: list[BatchStock], asked: int, on_date: date
) -> None:
    presorted = sorted(batches, key=fefo_key)
    assert allocate_in_order(presorted, asked, on_date) == allocate_fefo(batches, asked, on_date)


@given(batches=batch_stocks(), asked=quantities, on_date=business_dates)
def test_allocate_in_order_over_fifo_sorted_batches_equals_allocate_fifo(
    batches: list[BatchStock], asked: int, on_date: date
) -> None:
    presorted = sorted(batches, key=fifo_key)
    assert allocate_in_order(presorted, asked, on_date) == allocate_fifo(batches, asked, on_date)


@given(batches=batch_stocks(), asked=quantities, on_date=business_dates)
def test_fefo_does_not_depend_on_the_order_batches_are_listed_in(
    batches: list[BatchStock], asked: int, on_date: date
) -> None:
    assert allocate_fefo(batches, asked, on_date) == allocate_fefo(
        list(reversed(batches)), asked, on_date
    )


@given(batches=batch_stocks(), asked=quantities, on_date=business_dates, policy=policies)
def test_policy_dispatch_matches_the_named_allocator(
    batches: list[BatchStock], asked: int, on_date: date, policy: AllocationPolicy
) -> None:
    named = allocate_fefo if policy == "fefo" else allocate_fifo
    assert allocate(batches, asked, on_date, policy) == named(batches, asked, on_date)


@given(batches=batch_stocks(), on_date=business_dates)
def test_available_quantity_counts_only_positive_unexpired_batches(
    batches: list[BatchStock], on_date: date
) -> None:
    expected = sum(b.quantity for b in batches if _sellable(b, on_date))
    assert available_quantity(batches, on_date) == expected


@given(expires_on=business_dates, offset=st.integers(-30, 30))
def test_a_batch_is_sellable_only_strictly_before_its_expiry_date(
    expires_on: date, offset: int
) -> None:
    on_date = expires_on + timedelta(days=offset)
    assert is_sellable(expires_on, on_date) is (offset < 0)


@given(on_date=business_dates)
def test_a_batch_without_expiry_is_always_sellable(on_date: date) -> None:
    assert is_sellable(None, on_date)


@pytest.mark.parametrize("asked", [0, -1, -50])
def test_refuses_to_allocate_a_quantity_that_is_not_positive(asked: int) -> None:
    with pytest.raises(ValueError, match="positive"):
        allocate_fefo([_batch("LOT-001", 10)], asked, TODAY)


# --------------------------------------------------------------------------- examples


def test_prefers_batches_that_expire_sooner() -> None:
    batches = [
        _batch("AMOX-LATE", 10, TODAY + timedelta(days=90), received_seq=0),
        _batch("AMOX-SOON", 10, TODAY + timedelta(days=7), received_seq=1),
    ]
    allocation = allocate_fefo(batches, 4, TODAY)
    assert _takes(allocation) == [("AMOX-SOON", 4)]
    assert allocation.unallocated == 0


def test_does_not_sell_a_batch_on_its_expiry_date() -> None:
    batches = [
        _batch("AMOX-TODAY", 10, TODAY, received_seq=0),
        _batch("AMOX-NEXT", 10, TODAY + timedelta(days=30), received_seq=1),
    ]
    assert _takes(allocate_fefo(batches, 3, TODAY)) == [("AMOX-NEXT", 3)]


def test_sells_a_batch_the_day_before_it_expires() -> None:
    batches = [_batch("AMOX-TOMORROW", 10, TODAY + timedelta(days=1))]
    assert _takes(allocate_fefo(batches, 3, TODAY)) == [("AMOX-TOMORROW", 3)]


def test_never_sells_stock_that_expired_before_the_sweep_ran() -> None:
    batches = [_batch("AMOX-OLD", 50, TODAY - timedelta(days=10))]
    allocation = allocate_fefo(batches, 5, TODAY)
    assert allocation.takes == ()
    assert allocation.unallocated == 5


def test_takes_batches_without_expiry_last() -> None:
    batches = [
        _batch("CLOCK-NO-EXPIRY", 10, None, received_seq=0),
        _batch("CLOCK-DATED", 10, TODAY + timedelta(days=3650), received_seq=1),
    ]
    assert _takes(allocate_fefo(batches, 12, TODAY)) == [
        ("CLOCK-DATED", 10),
        ("CLOCK-NO-EXPIRY", 2),
    ]


def test_breaks_expiry_ties_by_received_order() -> None:
    same_day = TODAY + timedelta(days=20)
    batches = [
        _batch("AMOX-SECOND", 5, same_day, received_seq=2),
        _batch("AMOX-FIRST", 5, same_day, received_seq=1),
    ]
    assert _takes(allocate_fefo(batches, 7, TODAY)) == [("AMOX-FIRST", 5), ("AMOX-SECOND", 2)]


def test_orders_batches_without_expiry_by_received_order() -> None:
    batches = [
        _batch("CLOCK-B", 5, None, received_seq=9),
        _batch("CLOCK-A", 5, None, received_seq=3),
    ]
    assert _takes(allocate_fefo(batches, 6, TODAY)) == [("CLOCK-A", 5), ("CLOCK-B", 1)]


def test_fifo_takes_the_oldest_receipt_even_if_another_expires_sooner() -> None:
    batches = [
        _batch("AMOX-OLD-RECEIPT", 5, TODAY + timedelta(days=60), received_seq=0),
        _batch("AMOX-NEW-RECEIPT", 5, TODAY + timedelta(days=2), received_seq=1),
    ]
    assert _takes(allocate_fifo(batches, 3, TODAY)) == [("AMOX-OLD-RECEIPT", 3)]


def test_fifo_also_skips_expired_batches() -> None:
    batches = [
        _batch("AMOX-EXPIRED", 5, TODAY, received_seq=0),
        _batch("AMOX-GOOD", 5, TODAY + timedelta(days=2), received_seq=1),
    ]
    assert _takes(allocate_fifo(batches, 3, TODAY)) == [("AMOX-GOOD", 3)]


def test_takes_whole_batches_when_a_sale_spans_several() -> None:
    batches = [
        _batch("AMOX-1", 4, TODAY + timedelta(days=1), received_seq=0),
        _batch("AMOX-2", 4, TODAY + timedelta(days=2), received_seq=1),
        _batch("AMOX-3", 4, TODAY + timedelta(days=3), received_seq=2),
    ]
    assert _takes(allocate_fefo(batches, 9, TODAY)) == [
        ("AMOX-1", 4),
        ("AMOX-2", 4),
        ("AMOX-3", 1),
    ]


def test_reports_what_no_batch_could_cover() -> None:
    batches = [_batch("CLOCK-1", 3), _batch("CLOCK-2", 2, received_seq=1)]
    allocation = allocate_fifo(batches, 10, TODAY)
    assert _takes(allocation) == [("CLOCK-1", 3), ("CLOCK-2", 2)]
    assert allocation.allocated == 5
    assert allocation.unallocated == 5


def test_skips_empty_and_negative_batches() -> None:
    batches = [
        _batch("CLOCK-EMPTY", 0, received_seq=0),
        _batch("CLOCK-NEGATIVE", -3, received_seq=1),
        _batch("CLOCK-FULL", 4, received_seq=2),
    ]
    allocation = allocate_fifo(batches, 2, TODAY)
    assert _takes(allocation) == [("CLOCK-FULL", 2)]


def test_stops_at_the_first_batch_that_covers_the_rest() -> None:
    batches = [_batch("CLOCK-1", 10), _batch("CLOCK-2", 10, received_seq=1)]
    assert _takes(allocate_fifo(batches, 10, TODAY)) == [("CLOCK-1", 10)]


def test_available_stock_leaves_out_a_batch_on_its_expiry_date() -> None:
    batches = [
        _batch("AMOX-TODAY", 7, TODAY),
        _batch("AMOX-LATER", 5, TODAY + timedelta(days=1), received_seq=1),
        _batch("AMOX-NEGATIVE", -2, None, received_seq=2),
    ]
    assert available_quantity(batches, TODAY) == 5
    assert available_quantity(batches, TODAY - timedelta(days=1)) == 12


def _stock_item_holding(batches: list[BatchStock]) -> StockItem:
    """A stock item whose batches are `batches` (received in their received order)."""
    item = StockItem.__new__(StockItem)
    StockItem.__init__(item, "NAIROBI-1", "RETRO-CLOCK")
    for batch in sorted(batches, key=lambda b: b.received_seq):
        item.next_received_seq = batch.received_seq
        item.add_to_batch(BatchIdentity(batch_id=batch.batch_id, quantity=1,
                                        expires_on=batch.expires_on), max(batch.quantity, 0),
                          RECEIVED_AT, "receipt")
    return item


@given(batches=batch_stocks(), asked=quantities, on_date=business_dates, policy=policies)
def test_a_stock_item_allocates_exactly_as_the_pure_allocator(
    batches: list[BatchStock], asked: int, on_date: date, policy: AllocationPolicy
) -> None:
    """Production keeps its live batches sorted as they change instead of sorting per sale;
    its allocation must be the tested one, over the same batches."""
    item = _stock_item_holding(batches)
    held = [BatchStock(b.batch_id, max(b.quantity, 0), b.expires_on, b.received_seq)
            for b in batches]
    assert item.allocate(asked, policy, on_date) == allocate(held, asked, on_date, policy)


@given(batches=batch_stocks(), on_date=business_dates)
def test_a_stock_item_counts_available_stock_as_the_pure_rule(
    batches: list[BatchStock], on_date: date
) -> None:
    item = _stock_item_holding(batches)
    held = [BatchStock(b.batch_id, max(b.quantity, 0), b.expires_on, b.received_seq)
            for b in batches]
    assert item.available(on_date) == available_quantity(held, on_date)
