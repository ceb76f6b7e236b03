"""The aggregates' decisions, one at a time: given these recorded events, this command gives
these new events, or this refusal.

Each test builds an aggregate from events (as a load from the store would), calls one
decision method, and states the exact pending events (their types and the fields that carry
the decision) or the refusal with its values. Nothing here touches a store.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeAlias

import pytest
from eventsourcing.application import project_aggregate
from eventsourcing.domain import Aggregate, DomainEvent
from eventsourcing.utils import get_topic

from ledger import events
from ledger.domain.errors import (
    BatchConflict,
    InsufficientStock,
    LateSaleOutsideWindow,
    RefundExceedsSale,
    UnknownBatch,
)
from ledger.domain.identity import outlet_id, stock_item_id, transfer_id
from ledger.domain.outlet import Outlet, describe_window, parse_window
from ledger.domain.quantities import BatchCount, BatchIdentity, BatchTake
from ledger.domain.rules import allocate_refund_with_shortfall
from ledger.domain.sale import Sale
from ledger.domain.stock_item import MovementContext, StockItem
from ledger.domain.transfer import Transfer

OUTLET = "NBI-1"
SKU = "AMOX-500"
ITEM_ID = stock_item_id(OUTLET, SKU)
TODAY = date(2026, 3, 10)
NOW = datetime(2026, 3, 10, 10, 0, tzinfo=UTC)
SOON = TODAY + timedelta(days=20)
LATER = TODAY + timedelta(days=200)
YESTERDAY = TODAY - timedelta(days=1)

Fact: TypeAlias = tuple[type[events.StockMovement], dict[str, Any]]
"""A recorded stock movement of the stock item under test, without its bookkeeping fields."""


# --------------------------------------------------------------------------- givens


def received(batch_id: str, quantity: int, expires_on: date | None = None,
             unit_cost: str | None = None, shortfall_settled: int = 0) -> Fact:
    batch = BatchIdentity(batch_id=batch_id, quantity=quantity, expires_on=expires_on,
                          unit_cost=unit_cost)
    return events.BatchReceived, {"batch": batch, "shortfall_settled": shortfall_settled}


def sold(sale_id: str, *takes: tuple[str, int], unallocated: int = 0) -> Fact:
    return events.StockSold, {"sale_id": sale_id, "takes": _takes(takes),
                              "unallocated": unallocated}


def swept(batch_id: str, quantity: int, expires_on: date) -> Fact:
    return events.BatchExpired, {"batch_id": batch_id, "quantity": quantity,
                                 "expires_on": expires_on, "as_of": expires_on}


def given_stock_item(*facts: Fact) -> StockItem:
    """The stock item NBI-1/AMOX-500 as loaded from these recorded movements."""
    opened: dict[str, Any] = {
        "originator_id": ITEM_ID, "originator_version": 1, "timestamp": NOW - timedelta(days=60),
        "originator_topic": get_topic(StockItem), "outlet": OUTLET, "sku": SKU}
    history: list[DomainEvent] = [events.StockItemOpened(**opened)]
    for version, (event_class, fields) in enumerate(facts, start=2):
        recorded: dict[str, Any] = {
            "originator_id": ITEM_ID, "originator_version": version,
            "timestamp": NOW - timedelta(days=60) + timedelta(minutes=version),
            "outlet": OUTLET, "sku": SKU, "occurred_at": NOW - timedelta(days=30),
            "actor": "given", "reference": f"given-{version}",
            "idempotency_key": f"given:{version}"}
        history.append(event_class(**recorded, **fields))
    item = project_aggregate(None, history)
    assert isinstance(item, StockItem) and not item.pending_events
    return item


def when(reference: str = "REF-1", on: datetime = NOW) -> MovementContext:
    return MovementContext(occurred_at=on, actor="till-1", reference=reference,
                           idempotency_key=f"key:{reference}")


def pending(aggregate: Aggregate) -> list[Any]:
    return list(aggregate.pending_events)


def only_event(aggregate: Aggregate, kind: type[Any]) -> Any:
    """The one event the decision recorded, checked to be of `kind`."""
    decided = pending(aggregate)
    assert [type(e) for e in decided] == [kind], decided
    return decided[0]


def takes(event_takes: Sequence[BatchTake]) -> list[tuple[str, int]]:
    return [(t.batch_id, t.quantity) for t in event_takes]


def layers(item: StockItem, batch_id: str) -> list[tuple[int, str | None]]:
    """The batch's live cost layers, first in first: (quantity, unit cost)."""
    return [(layer.quantity, layer.unit_cost) for layer in item.batches[batch_id].layers]


def _takes(pairs: Sequence[tuple[str, int]]) -> tuple[BatchTake, ...]:
    return tuple(BatchTake(batch_id=b, quantity=q) for b, q in pairs)


# --------------------------------------------------------------------------- stock item: sales


def test_a_sale_under_fefo_takes_the_batch_that_expires_first() -> None:
    item = given_stock_item(received("LATE", 10, LATER), received("EARLY", 4, SOON),
                            received("UNDATED", 10))
    allocation = item.sell("S-1", 6, "fefo", False, when("S-1"))
    event = only_event(item, events.StockSold)
    assert (event.sale_id, takes(event.takes), event.unallocated) == (
        "S-1", [("EARLY", 4), ("LATE", 2)], 0)
    assert (event.outlet, event.sku, event.reference, event.idempotency_key) == (
        OUTLET, SKU, "S-1", "key:S-1")
    assert allocation.takes == tuple(event.takes)
    assert item.batch_quantities() == {"LATE": 8, "UNDATED": 10}


def test_a_sale_under_fifo_takes_the_batch_received_first() -> None:
    item = given_stock_item(received("LATE", 10, LATER), received("EARLY", 4, SOON))
    item.sell("S-1", 6, "fifo", False, when("S-1"))
    event = only_event(item, events.StockSold)
    assert takes(event.takes) == [("LATE", 6)]


def test_a_sale_skips_a_batch_whose_expiry_date_has_come_though_not_yet_swept() -> None:
    item = given_stock_item(received("GONE", 5, TODAY), received("GOOD", 5, LATER))
    item.sell("S-1", 3, "fefo", False, when("S-1"))
    event = only_event(item, events.StockSold)
    assert takes(event.takes) == [("GOOD", 3)]
    assert item.batch_quantities() == {"GONE": 5, "GOOD": 2}


def test_a_sale_beyond_the_available_stock_is_refused_with_what_was_asked_and_available(
        ) -> None:
    item = given_stock_item(received("GONE", 5, YESTERDAY), received("GOOD", 7, LATER))
    with pytest.raises(InsufficientStock) as refused:
        item.sell("S-9", 8, "fefo", False, when("S-9"))
    refusal = refused.value
    assert (refusal.reference, refusal.outlet, refusal.sku, refusal.asked,
            refusal.available) == ("sale S-9", OUTLET, SKU, 8, 7)
    assert str(refusal) == "sale S-9 line AMOX-500: asked 8, available 7 at outlet NBI-1"
    assert refusal.rule == "insufficient_stock"
    assert pending(item) == [] and item.batch_quantities() == {"GONE": 5, "GOOD": 7}


def test_a_sale_into_negative_where_the_outlet_allows_it_records_the_rest_unallocated(
        ) -> None:
    item = given_stock_item(received("B1", 3, LATER))
    allocation = item.sell("S-1", 5, "fefo", True, when("S-1"))
    event = only_event(item, events.StockSold)
    assert (takes(event.takes), event.unallocated) == ([("B1", 3)], 2)
    assert allocation.unallocated == 2
    assert (item.on_hand, item.shortfall, item.available(TODAY)) == (-2, 2, -2)


def test_a_receipt_after_a_sale_into_negative_settles_the_shortfall_first() -> None:
    item = given_stock_item(received("B1", 3), sold("S-1", ("B1", 3), unallocated=4))
    item.receive(BatchIdentity(batch_id="B2", quantity=10, expires_on=LATER, unit_cost="0.5"),
                 when("DN-7"))
    event = only_event(item, events.BatchReceived)
    assert (event.batch.batch_id, event.batch.quantity, event.shortfall_settled) == (
        "B2", 10, 4)
    assert (item.shortfall, item.on_hand, item.batch_quantities()) == (0, 6, {"B2": 6})


def test_a_receipt_of_a_known_batch_with_another_expiry_is_refused_as_a_conflict() -> None:
    item = given_stock_item(received("B1", 3, SOON))
    with pytest.raises(BatchConflict) as refused:
        item.receive(BatchIdentity(batch_id="B1", quantity=2, expires_on=LATER), when())
    assert str(refused.value) == f"batch B1 is recorded with expiry {SOON}, not {LATER}"
    assert refused.value.rule == "batch_conflict"
    assert pending(item) == []


def test_a_receipt_of_more_of_a_known_batch_with_the_same_expiry_adds_to_it() -> None:
    item = given_stock_item(received("B1", 3, SOON, unit_cost="0.40"))
    item.receive(BatchIdentity(batch_id="B1", quantity=2, expires_on=SOON), when())
    event = only_event(item, events.BatchReceived)
    assert (event.batch.quantity, event.shortfall_settled) == (2, 0)
    assert item.batch_quantities() == {"B1": 5}
    # Each receipt is a cost layer of its own: one without a cost changes nothing of the other.
    assert layers(item, "B1") == [(3, "0.40"), (2, None)]
    assert item.batches["B1"].unit_cost is None  # no one cost for the whole batch


# --------------------------------------------------------------------------- refunds


def test_a_refund_restocks_the_batches_the_units_came_from() -> None:
    item = given_stock_item(received("B1", 5, LATER), sold("S-1", ("B1", 3)))
    restocked, written_off = item.refund("S-1", "R-1", _takes([("B1", 2)]), 0, False,
                                         when("R-1"))
    event = only_event(item, events.StockRefunded)
    assert (event.sale_id, event.refund_id, takes(event.restocked), takes(event.written_off),
            event.unallocated_returned, event.unallocated_restocked) == (
        "S-1", "R-1", [("B1", 2)], [], 0, True)
    assert (takes(restocked), written_off) == ([("B1", 2)], ())
    assert item.batch_quantities() == {"B1": 4}


def test_a_refund_of_units_from_a_batch_whose_expiry_has_come_writes_them_off() -> None:
    item = given_stock_item(received("OLD", 5, YESTERDAY), received("NEW", 5, LATER),
                            sold("S-1", ("OLD", 2), ("NEW", 1)))
    item.refund("S-1", "R-1", _takes([("OLD", 2), ("NEW", 1)]), 0, False, when("R-1"))
    event = only_event(item, events.StockRefunded)
    assert (takes(event.restocked), takes(event.written_off)) == ([("NEW", 1)], [("OLD", 2)])
    assert item.batch_quantities() == {"OLD": 3, "NEW": 5}


def test_a_refund_to_a_batch_already_swept_as_expired_writes_them_off() -> None:
    item = given_stock_item(received("OLD", 5, SOON), sold("S-1", ("OLD", 2)),
                            swept("OLD", 3, SOON))
    # Business time before the expiry date, yet the batch was swept: it stays off the shelf.
    item.refund("S-1", "R-1", _takes([("OLD", 2)]), 0, False, when("R-1"))
    event = only_event(item, events.StockRefunded)
    assert (takes(event.restocked), takes(event.written_off)) == ([], [("OLD", 2)])
    assert item.batch_quantities() == {}


def test_a_refund_asked_to_write_off_writes_off_a_sellable_batch_and_keeps_the_shortfall(
        ) -> None:
    item = given_stock_item(received("B1", 5, LATER), sold("S-1", ("B1", 5), unallocated=2))
    item.refund("S-1", "R-1", _takes([("B1", 1)]), 2, True, when("R-1"))
    event = only_event(item, events.StockRefunded)
    assert (takes(event.restocked), takes(event.written_off), event.unallocated_returned,
            event.unallocated_restocked) == ([], [("B1", 1)], 2, False)
    assert (item.batch_quantities(), item.shortfall) == ({}, 2)


def test_a_restocked_refund_of_units_sold_into_negative_settles_the_shortfall() -> None:
    item = given_stock_item(received("B1", 1), sold("S-1", ("B1", 1), unallocated=3))
    item.refund("S-1", "R-1", (), 2, False, when("R-1"))
    event = only_event(item, events.StockRefunded)
    assert (event.restocked, event.unallocated_returned, event.unallocated_restocked) == (
        (), 2, True)
    assert (item.shortfall, item.on_hand) == (1, -1)


# --------------------------------------------------------------------------- counts, write-offs


def test_a_count_records_the_variance_of_each_counted_batch() -> None:
    item = given_stock_item(received("B1", 10), received("B2", 4), sold("S-1", ("B1", 2)))
    item.count({"B1": 6}, False, when("CNT-1"))
    event = only_event(item, events.StockCounted)
    assert (event.whole_sku, list(event.counts), event.shortfall_cleared) == (
        False, [BatchCount(batch_id="B1", expected=8, counted=6)], 0)
    assert event.counts[0].variance == -2
    assert item.batch_quantities() == {"B1": 6, "B2": 4}


def test_a_whole_sku_count_zeroes_the_batches_it_does_not_list_and_clears_the_shortfall(
        ) -> None:
    item = given_stock_item(received("B1", 10), received("B2", 4), received("B3", 1),
                            sold("S-1", ("B3", 1), unallocated=2))
    item.count({"B1": 11}, True, when("CNT-2"))
    event = only_event(item, events.StockCounted)
    assert [(c.batch_id, c.expected, c.counted, c.variance) for c in event.counts] == [
        ("B1", 10, 11, 1), ("B2", 4, 0, -4)]
    assert (event.whole_sku, event.shortfall_cleared) == (True, 2)
    assert (item.batch_quantities(), item.shortfall, item.on_hand) == ({"B1": 11}, 0, 11)


def test_a_count_of_a_batch_the_stock_item_never_held_is_refused() -> None:
    item = given_stock_item(received("B1", 10))
    with pytest.raises(UnknownBatch) as refused:
        item.count({"B9": 1}, False, when())
    assert (refused.value.batch_id, str(refused.value)) == (
        "B9", "unknown batch B9 of SKU AMOX-500 at outlet NBI-1")
    assert pending(item) == []


def test_a_write_off_of_a_named_batch_takes_from_that_batch_whatever_the_policy() -> None:
    item = given_stock_item(received("EARLY", 5, SOON), received("LATE", 5, LATER))
    written = item.write_off(2, "LATE", "damaged", "fefo", when("WO-1"))
    event = only_event(item, events.StockWrittenOff)
    assert (event.reason, takes(event.takes), event.reference) == (
        "damaged", [("LATE", 2)], "WO-1")
    assert takes(written) == [("LATE", 2)]
    assert item.batch_quantities() == {"EARLY": 5, "LATE": 3}


def test_a_write_off_of_more_than_a_named_batch_holds_is_refused_with_its_quantity() -> None:
    item = given_stock_item(received("EARLY", 5, SOON), received("LATE", 2, LATER))
    with pytest.raises(InsufficientStock) as refused:
        item.write_off(3, "LATE", "damaged", "fefo", when())
    assert (refused.value.reference, refused.value.asked, refused.value.available) == (
        "write-off batch LATE", 3, 2)
    assert pending(item) == []


def test_a_write_off_without_a_batch_is_allocated_by_the_policy() -> None:
    item = given_stock_item(received("LATE", 5, LATER), received("EARLY", 5, SOON))
    item.write_off(6, None, "theft", "fefo", when("WO-2"))
    assert takes(only_event(item, events.StockWrittenOff).takes) == [("EARLY", 5), ("LATE", 1)]


# --------------------------------------------------------------------------- expiry


def test_the_expiry_sweep_writes_off_each_batch_whose_date_has_come_once() -> None:
    item = given_stock_item(received("DUE", 4, TODAY), received("EMPTY", 2, YESTERDAY),
                            sold("S-1", ("EMPTY", 2)), received("FRESH", 9, LATER),
                            received("UNDATED", 3))
    due = item.expire(TODAY, when("sweep"))
    event = only_event(item, events.BatchExpired)
    assert (event.batch_id, event.quantity, event.expires_on, event.as_of) == (
        "DUE", 4, TODAY, TODAY)
    assert takes(due) == [("DUE", 4)]
    assert item.batches["DUE"].expired
    again = given_stock_item(received("DUE", 4, TODAY), swept("DUE", 4, TODAY),
                             received("DUE", 1, TODAY))
    assert again.expire(TODAY, when("sweep")) == [] and pending(again) == []


# --------------------------------------------------------------------------- transfers


def test_a_dispatch_takes_batches_by_the_policy_and_carries_their_expiry_and_cost() -> None:
    item = given_stock_item(received("LATE", 10, LATER, unit_cost="0.30"),
                            received("EARLY", 3, SOON, unit_cost="0.25"))
    batches = item.dispatch("T-1", "MSA-2", 5, "fefo", when("T-1"))
    event = only_event(item, events.TransferDispatched)
    assert (event.transfer_id, event.to_outlet) == ("T-1", "MSA-2")
    assert [(b.batch_id, b.quantity, b.expires_on, b.unit_cost) for b in event.batches] == [
        ("EARLY", 3, SOON, "0.25"), ("LATE", 2, LATER, "0.30")]
    assert batches == tuple(event.batches)
    assert item.batch_quantities() == {"LATE": 8}


def test_a_dispatch_of_more_than_is_available_is_refused() -> None:
    item = given_stock_item(received("B1", 3, LATER), received("GONE", 9, YESTERDAY))
    with pytest.raises(InsufficientStock) as refused:
        item.dispatch("T-1", "MSA-2", 4, "fefo", when("T-1"))
    assert (refused.value.reference, refused.value.asked, refused.value.available) == (
        "transfer T-1", 4, 3)
    assert pending(item) == []


def test_receiving_a_transfer_shelves_its_batches_with_their_identity_kept() -> None:
    item = given_stock_item(received("B1", 1), sold("S-1", ("B1", 1), unallocated=2))
    arriving = (BatchIdentity(batch_id="EARLY", quantity=3, expires_on=SOON, unit_cost="0.25"),
                BatchIdentity(batch_id="LATE", quantity=2, expires_on=LATER))
    item.receive_transfer("T-1", "MSA-2", arriving, when("T-1"))
    event = only_event(item, events.TransferReceived)
    assert (event.transfer_id, event.from_outlet, tuple(event.batches),
            event.shortfall_settled) == ("T-1", "MSA-2", arriving, 2)
    assert item.batch_quantities() == {"EARLY": 1, "LATE": 2}  # two settled the shortfall
    assert (item.batches["EARLY"].expires_on, item.batches["EARLY"].unit_cost) == (
        SOON, "0.25")


def test_a_transfer_of_a_batch_held_here_with_another_expiry_is_refused() -> None:
    item = given_stock_item(received("B1", 1, SOON))
    arriving = (BatchIdentity(batch_id="B1", quantity=3, expires_on=LATER),)
    with pytest.raises(BatchConflict):
        item.check_can_receive(arriving)
    with pytest.raises(BatchConflict) as refused:
        item.receive_transfer("T-1", "MSA-2", arriving, when("T-1"))
    assert str(refused.value) == f"batch B1 is recorded with expiry {SOON}, not {LATER}"
    assert pending(item) == []


def test_a_transfer_starts_in_transit_and_is_received_when_completed() -> None:
    batches = (BatchIdentity(batch_id="B1", quantity=3, expires_on=SOON),)
    transfer = Transfer.start("T-1", OUTLET, "MSA-2", SKU, batches, NOW, "clerk", "transfer:T-1")
    started = only_event(transfer, events.TransferStarted)
    assert (started.originator_id, started.transfer_id, started.from_outlet, started.to_outlet,
            started.sku, tuple(started.batches)) == (
        transfer_id("T-1"), "T-1", OUTLET, "MSA-2", SKU, batches)
    loaded = project_aggregate(None, [started])
    assert isinstance(loaded, Transfer) and loaded.received is False
    loaded.complete(NOW + timedelta(days=1), "msa-clerk")
    completed = only_event(loaded, events.TransferCompleted)
    assert (completed.occurred_at, completed.actor, loaded.received) == (
        NOW + timedelta(days=1), "msa-clerk", True)


# --------------------------------------------------------------------------- reorder level


def test_setting_a_reorder_level_records_it() -> None:
    item = given_stock_item(received("B1", 1))
    item.set_reorder_level(20, "manager")
    event = only_event(item, events.ReorderLevelSet)
    assert (event.outlet, event.sku, event.level, event.actor, item.reorder_level) == (
        OUTLET, SKU, 20, "manager", 20)


# --------------------------------------------------------------------------- sale


def given_sale(*refunds: Sequence[events.RefundLine]) -> Sale:
    """Sale S-1 of AMOX-500 x6 (B2:3, B1:2, and one sold into negative), then `refunds`."""
    recorded = Sale.record("S-1", OUTLET, [events.SaleLine(
        sku=SKU, quantity=6, takes=_takes([("B2", 3), ("B1", 2)]), unallocated=1)],
        NOW - timedelta(days=2), "till-1", "sale:S-1")
    history: list[DomainEvent] = [recorded]
    for n, lines in enumerate(refunds, start=1):
        refunded: dict[str, Any] = {
            "originator_id": recorded.originator_id, "originator_version": n + 1,
            "timestamp": NOW - timedelta(days=1), "refund_id": f"R-{n}", "lines": tuple(lines),
            "occurred_at": NOW - timedelta(days=1), "actor": "till-1",
            "idempotency_key": f"refund:S-1:R-{n}"}
        history.append(events.SaleRefunded(**refunded))
    sale = project_aggregate(None, history)
    assert isinstance(sale, Sale)
    return sale


def refund_line(restocked: Sequence[tuple[str, int]], unallocated: int = 0,
                written_off: Sequence[tuple[str, int]] = ()) -> events.RefundLine:
    quantity = sum(q for _, q in (*restocked, *written_off)) + unallocated
    return events.RefundLine(sku=SKU, quantity=quantity, restocked=_takes(restocked),
                             written_off=_takes(written_off), unallocated=unallocated)


def refund_allocation(sale: Sale, quantity: int) -> tuple[tuple[BatchTake, ...], int]:
    """The refund rule over what the sale recorded, as the refund handler applies it."""
    return allocate_refund_with_shortfall(
        sale.sale_id, SKU, sale.sold_takes(SKU), sale.refunded_by_batch(SKU),
        sale.unallocated_left(SKU), quantity)


def test_a_refund_of_a_sale_goes_back_to_its_batches_in_the_order_it_took_them() -> None:
    sale = given_sale()
    allocated, unallocated = refund_allocation(sale, 4)
    assert (takes(allocated), unallocated) == ([("B2", 3), ("B1", 1)], 0)


def test_a_refund_after_an_earlier_one_refills_only_what_is_left_then_the_shortfall() -> None:
    sale = given_sale([refund_line([("B2", 3)])])
    assert (sale.refund_ids, sale.refunded_by_batch(SKU), sale.unallocated_left(SKU)) == (
        ["R-1"], {"B2": 3}, 1)
    allocated, unallocated = refund_allocation(sale, 3)
    assert (takes(allocated), unallocated) == ([("B1", 2)], 1)


def test_a_refund_of_more_than_is_left_of_the_sale_is_refused_with_what_is_refundable(
        ) -> None:
    sale = given_sale([refund_line([("B2", 3)], written_off=[("B1", 1)])])
    with pytest.raises(RefundExceedsSale) as refused:
        refund_allocation(sale, 3)
    assert (refused.value.sale_id, refused.value.sku, refused.value.asked,
            refused.value.refundable) == ("S-1", SKU, 3, 2)
    assert str(refused.value) == "refund of sale S-1 line AMOX-500: asked 3, refundable 2"


def test_recording_a_refund_on_the_sale_remembers_it_per_batch() -> None:
    sale = given_sale()
    line = refund_line([("B2", 1)], unallocated=1, written_off=[("B1", 2)])
    sale.refund("R-9", [line], NOW, "till-1", "refund:S-1:R-9")
    event = only_event(sale, events.SaleRefunded)
    assert (event.refund_id, list(event.lines), event.idempotency_key) == (
        "R-9", [line], "refund:S-1:R-9")
    assert (sale.refund_ids, sale.refunded_by_batch(SKU), sale.unallocated_left(SKU)) == (
        ["R-9"], {"B2": 1, "B1": 2}, 0)


# --------------------------------------------------------------------------- outlet


def test_an_outlet_opens_with_fefo_and_no_negative_stock_by_default() -> None:
    outlet = Outlet.open(OUTLET, "manager")
    opened = only_event(outlet, events.OutletOpened)
    assert (opened.originator_id, opened.outlet, opened.allocation_policy,
            opened.allow_negative, opened.actor) == (outlet_id(OUTLET), OUTLET, "fefo", False,
                                                     "manager")


def test_changing_an_outlets_policy_records_the_new_policy() -> None:
    outlet = project_aggregate(None, Outlet.open(OUTLET, "manager").collect_events())
    assert isinstance(outlet, Outlet)
    outlet.set_policy("fifo", True, "manager")
    event = only_event(outlet, events.OutletPolicySet)
    assert (event.allocation_policy, event.allow_negative, event.actor) == (
        "fifo", True, "manager")
    assert (outlet.allocation_policy, outlet.allow_negative) == ("fifo", True)


def test_setting_an_outlets_policy_to_what_it_is_records_nothing() -> None:
    outlet = project_aggregate(None, Outlet.open(OUTLET, "manager", "fifo", True)
                               .collect_events())
    assert isinstance(outlet, Outlet)
    outlet.set_policy("fifo", True, "someone")
    assert pending(outlet) == []


def test_changing_one_setting_of_an_outlet_keeps_the_other() -> None:
    outlet = project_aggregate(None, Outlet.open(OUTLET, "manager", "fefo", True)
                               .collect_events())
    assert isinstance(outlet, Outlet)
    outlet.set_policy("fifo", None, "manager")
    event = only_event(outlet, events.OutletPolicySet)
    # The recorded event carries both settings as they stand, as it always has.
    assert (event.allocation_policy, event.allow_negative) == ("fifo", True)
    outlet.collect_events()
    outlet.set_policy(None, False, "manager")
    event = only_event(outlet, events.OutletPolicySet)
    assert (event.allocation_policy, event.allow_negative) == ("fifo", False)
    outlet.collect_events()
    outlet.set_policy(None, None, "manager")
    assert pending(outlet) == []


def test_a_late_sales_window_is_recorded_only_when_it_changes() -> None:
    outlet = project_aggregate(None, Outlet.open(OUTLET, "manager").collect_events())
    assert isinstance(outlet, Outlet)
    assert outlet.late_sales_window is None  # an outlet opened before windows takes any age
    outlet.set_late_sales_window(72 * 3600, "manager")
    event = only_event(outlet, events.LateSalesWindowSet)
    assert (event.seconds, event.actor, outlet.late_sales_window) == (
        72 * 3600, "manager", 72 * 3600)
    outlet.collect_events()
    outlet.set_late_sales_window(72 * 3600, "manager")
    assert pending(outlet) == []
    outlet.set_late_sales_window(None, "manager")
    assert only_event(outlet, events.LateSalesWindowSet).seconds is None


def test_a_sale_dated_beyond_the_window_is_refused_naming_it() -> None:
    outlet = project_aggregate(None, Outlet.open(OUTLET, "manager").collect_events())
    assert isinstance(outlet, Outlet)
    outlet.check_sale_time("S-1", NOW - timedelta(days=4000), NOW)  # no window: any age
    outlet.set_late_sales_window(72 * 3600, "manager")
    outlet.check_sale_time("S-2", NOW - timedelta(hours=72), NOW)  # the window's edge is in
    with pytest.raises(LateSaleOutsideWindow) as refused:
        outlet.check_sale_time("S-3", NOW - timedelta(hours=72, seconds=1), NOW)
    assert refused.value.rule == "late_sale_outside_window"
    assert str(refused.value).startswith(
        f"sale S-3 at outlet {OUTLET}: dated 2026-03-07T09:59:59+00:00, 72h before the "
        "ledger's clock, beyond the outlet's late-sales window of 3d")


@pytest.mark.parametrize(("text", "seconds"), [
    ("72h", 259_200), ("3d", 259_200), ("90m", 5_400), ("60s", 60), (" 1D ", 86_400),
    ("none", None), ("NONE", None), ("366d", 366 * 86_400)])
def test_a_late_sales_window_is_read_from_whole_units(text: str, seconds: int | None) -> None:
    assert parse_window(text) == seconds
    if seconds is not None:
        assert parse_window(describe_window(seconds)) == seconds


@pytest.mark.parametrize("text", ["", "72", "h", "1.5h", "-3d", "2y", "59s", "367d",
                                  "1h30m", "9999999999d"])
def test_a_late_sales_window_that_is_not_one_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_window(text)
