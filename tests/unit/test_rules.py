"""Refund limits, expiry sweeps, stock-take variances and shortfall settlement."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger.domain.errors import RefundExceedsSale
from ledger.domain.quantities import BatchCount, BatchTake
from ledger.domain.rules import (
    BatchExpiry,
    allocate_refund,
    batches_due_to_expire,
    count_batches,
    refundable_by_batch,
    settle_shortfall,
)
from tests.strategies import (
    TODAY,
    batch_expiries,
    business_dates,
    counted_levels,
    quantities,
    sold_and_refunded,
    stock_levels,
)


def _sold_by_batch(takes: list[BatchTake]) -> dict[str, int]:
    sold: dict[str, int] = {}
    for take in takes:
        sold[take.batch_id] = sold.get(take.batch_id, 0) + take.quantity
    return sold


def _take(batch_id: str, quantity: int) -> BatchTake:
    return BatchTake(batch_id=batch_id, quantity=quantity)


# --------------------------------------------------------------------------- refunds


@given(sale=sold_and_refunded(), asked=quantities)
def test_a_refund_never_returns_more_to_a_batch_than_it_sold_less_refunds(
    sale: tuple[list[BatchTake], dict[str, int]], asked: int
) -> None:
    takes, refunded = sale
    sold = _sold_by_batch(takes)
    refundable = sum(sold.values()) - sum(refunded.values())
    if asked > refundable:
        with pytest.raises(RefundExceedsSale) as raised:
            allocate_refund("S-1", "AMOX-500", takes, refunded, asked)
        assert raised.value.asked == asked
        assert raised.value.refundable == refundable
        return
    back = allocate_refund("S-1", "AMOX-500", takes, refunded, asked)
    assert sum(take.quantity for take in back) == asked
    returned: dict[str, int] = {}
    for take in back:
        assert take.quantity > 0
        returned[take.batch_id] = returned.get(take.batch_id, 0) + take.quantity
    for batch_id, quantity in returned.items():
        assert quantity <= sold[batch_id] - refunded.get(batch_id, 0)


@given(sale=sold_and_refunded(), asked=quantities)
def test_a_refund_refills_batches_in_the_order_the_sale_took_from_them(
    sale: tuple[list[BatchTake], dict[str, int]], asked: int
) -> None:
    takes, refunded = sale
    sold = _sold_by_batch(takes)
    refundable = sum(sold.values()) - sum(refunded.values())
    if asked > refundable:
        return
    back = allocate_refund("S-1", "AMOX-500", takes, refunded, asked)
    sale_order = list(dict.fromkeys(take.batch_id for take in takes))
    back_ids = [take.batch_id for take in back]
    assert back_ids == [b for b in sale_order if b in back_ids]
    # Every batch but the last one refilled is refilled to the full refundable amount.
    for take in back[:-1]:
        assert take.quantity == sold[take.batch_id] - refunded.get(take.batch_id, 0)


@given(sale=sold_and_refunded(), asked=quantities, second=quantities)
def test_successive_refunds_never_add_up_to_more_than_was_sold(
    sale: tuple[list[BatchTake], dict[str, int]], asked: int, second: int
) -> None:
    takes, refunded = sale
    sold = _sold_by_batch(takes)
    total_refunded = dict(refunded)
    for quantity in (asked, second):
        try:
            back = allocate_refund("S-1", "AMOX-500", takes, total_refunded, quantity)
        except RefundExceedsSale:
            continue
        for take in back:
            total_refunded[take.batch_id] = total_refunded.get(take.batch_id, 0) + take.quantity
    for batch_id, quantity in total_refunded.items():
        assert quantity <= sold[batch_id]


def test_refund_exceeding_the_sale_names_what_was_asked_and_what_is_refundable() -> None:
    takes = [_take("AMX-A", 3), _take("AMX-B", 2)]
    with pytest.raises(RefundExceedsSale) as raised:
        allocate_refund("S-42", "AMOX-500", takes, {"AMX-A": 1}, 5)
    error = raised.value
    assert (error.sale_id, error.sku, error.asked, error.refundable) == ("S-42", "AMOX-500", 5, 4)
    assert "asked 5" in str(error)
    assert "refundable 4" in str(error)
    assert error.rule == "refund_exceeds_sale"


def test_a_fully_refunded_sale_refuses_even_one_more_unit() -> None:
    takes = [_take("AMX-A", 3)]
    with pytest.raises(RefundExceedsSale) as raised:
        allocate_refund("S-1", "AMOX-500", takes, {"AMX-A": 3}, 1)
    assert raised.value.refundable == 0


def test_refunds_go_back_to_the_first_batch_the_sale_took_from() -> None:
    takes = [_take("AMX-A", 3), _take("AMX-B", 5)]
    assert allocate_refund("S-1", "AMOX-500", takes, {}, 4) == (
        _take("AMX-A", 3),
        _take("AMX-B", 1),
    )


def test_refunds_skip_batches_already_refunded_in_full() -> None:
    takes = [_take("AMX-A", 3), _take("AMX-B", 5)]
    assert allocate_refund("S-1", "AMOX-500", takes, {"AMX-A": 3}, 2) == (_take("AMX-B", 2),)


def test_refundable_by_batch_adds_up_takes_of_the_same_batch() -> None:
    takes = [_take("AMX-A", 2), _take("AMX-B", 1), _take("AMX-A", 3)]
    assert refundable_by_batch(takes, {"AMX-A": 1}) == [_take("AMX-A", 4), _take("AMX-B", 1)]


def test_refundable_by_batch_rejects_a_history_that_refunded_more_than_it_sold() -> None:
    with pytest.raises(ValueError, match="AMX-A"):
        refundable_by_batch([_take("AMX-A", 2)], {"AMX-A": 3})


# --------------------------------------------------------------------------- expiry


@given(batches=batch_expiries(), as_of=business_dates)
def test_a_batch_is_due_to_expire_iff_its_date_has_come_and_it_holds_stock(
    batches: list[BatchExpiry], as_of: date
) -> None:
    due = batches_due_to_expire(batches, as_of)
    expected = [
        _take(b.batch_id, b.quantity)
        for b in batches
        if b.expires_on is not None
        and b.expires_on <= as_of
        and b.quantity > 0
        and not b.already_expired
    ]
    assert due == expected


@given(batches=batch_expiries(), as_of=business_dates)
def test_an_already_expired_batch_is_never_due_again(
    batches: list[BatchExpiry], as_of: date
) -> None:
    already = {b.batch_id for b in batches if b.already_expired}
    assert not already & {take.batch_id for take in batches_due_to_expire(batches, as_of)}


@given(batches=batch_expiries(), first=business_dates, later=st.integers(0, 30))
def test_sweeping_twice_expires_each_batch_at_most_once(
    batches: list[BatchExpiry], first: date, later: int
) -> None:
    due_first = batches_due_to_expire(batches, first)
    first_ids = {take.batch_id for take in due_first}
    after = [
        BatchExpiry(b.batch_id, b.expires_on, 0, True) if b.batch_id in first_ids else b
        for b in batches
    ]
    due_second = batches_due_to_expire(after, first + timedelta(days=later))
    assert not first_ids & {take.batch_id for take in due_second}


def test_a_batch_is_due_to_expire_on_its_expiry_date() -> None:
    batches = [
        BatchExpiry("AMX-TODAY", TODAY, 5, False),
        BatchExpiry("AMX-TOMORROW", TODAY + timedelta(days=1), 5, False),
        BatchExpiry("CLOCK-FOREVER", None, 5, False),
    ]
    assert batches_due_to_expire(batches, TODAY) == [_take("AMX-TODAY", 5)]


def test_an_empty_or_negative_batch_is_not_due_to_expire() -> None:
    batches = [
        BatchExpiry("AMX-EMPTY", TODAY - timedelta(days=3), 0, False),
        BatchExpiry("AMX-NEGATIVE", TODAY - timedelta(days=3), -2, False),
    ]
    assert batches_due_to_expire(batches, TODAY) == []


def test_stock_returned_to_an_expired_batch_is_not_expired_a_second_time() -> None:
    batches = [BatchExpiry("AMX-OLD", TODAY - timedelta(days=3), 4, already_expired=True)]
    assert batches_due_to_expire(batches, TODAY) == []


# --------------------------------------------------------------------------- counts


@given(expected=stock_levels, counted=counted_levels, whole_sku=st.booleans())
def test_a_count_records_counted_minus_expected_for_every_batch_it_lists(
    expected: dict[str, int], counted: dict[str, int], whole_sku: bool
) -> None:
    counts = count_batches(expected, counted, whole_sku=whole_sku)
    by_id = {count.batch_id: count for count in counts}
    assert len(by_id) == len(counts), "a batch was counted twice"
    for batch_id, quantity in counted.items():
        count = by_id[batch_id]
        assert count.counted == quantity
        assert count.expected == expected.get(batch_id, 0)
        assert count.variance == quantity - expected.get(batch_id, 0)


@given(expected=stock_levels, counted=counted_levels)
def test_a_whole_sku_count_counts_every_unlisted_batch_as_zero(
    expected: dict[str, int], counted: dict[str, int]
) -> None:
    counts = count_batches(expected, counted, whole_sku=True)
    after = dict(expected)
    for count in counts:
        after[count.batch_id] = count.counted
    for batch_id, quantity in after.items():
        assert quantity == counted.get(batch_id, 0)
    # The variances add up to the change of the whole SKU.
    assert sum(count.variance for count in counts) == sum(counted.values()) - sum(
        expected.values()
    )


@given(expected=stock_levels, counted=counted_levels)
def test_a_partial_count_leaves_unlisted_batches_alone(
    expected: dict[str, int], counted: dict[str, int]
) -> None:
    counts = count_batches(expected, counted, whole_sku=False)
    assert {count.batch_id for count in counts} == set(counted)


def test_a_whole_sku_count_zeroes_a_batch_it_does_not_list() -> None:
    counts = count_batches({"AMX-A": 5, "AMX-B": 3}, {"AMX-A": 4}, whole_sku=True)
    assert counts == (
        BatchCount(batch_id="AMX-A", expected=5, counted=4),
        BatchCount(batch_id="AMX-B", expected=3, counted=0),
    )
    assert [count.variance for count in counts] == [-1, -3]


def test_a_whole_sku_count_corrects_a_negative_batch_it_does_not_list() -> None:
    counts = count_batches({"AMX-A": -2}, {"AMX-B": 1}, whole_sku=True)
    assert BatchCount(batch_id="AMX-A", expected=-2, counted=0) in counts


def test_a_partial_count_of_a_batch_records_only_that_batch() -> None:
    counts = count_batches({"AMX-A": 5, "AMX-B": 3}, {"AMX-B": 7}, whole_sku=False)
    assert counts == (BatchCount(batch_id="AMX-B", expected=3, counted=7),)
    assert counts[0].variance == 4


def test_counting_a_batch_the_ledger_thought_empty_records_a_gain() -> None:
    counts = count_batches({}, {"AMX-FOUND": 6}, whole_sku=False)
    assert counts == (BatchCount(batch_id="AMX-FOUND", expected=0, counted=6),)


# --------------------------------------------------------------------------- shortfall


@given(shortfall=st.integers(0, 100), received=st.integers(1, 100))
def test_a_receipt_settles_at_most_the_shortfall_and_at_most_itself(
    shortfall: int, received: int
) -> None:
    settled = settle_shortfall(shortfall, received)
    assert 0 <= settled <= received
    assert settled <= shortfall
    assert settled in (shortfall, received)


@pytest.mark.parametrize(
    ("shortfall", "received", "settled"),
    [(0, 10, 0), (4, 10, 4), (10, 4, 4), (7, 7, 7)],
)
def test_settle_shortfall_examples(shortfall: int, received: int, settled: int) -> None:
    assert settle_shortfall(shortfall, received) == settled
