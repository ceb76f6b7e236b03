"""One contract, two stores: every behaviour here must hold on SQLite and on PostgreSQL."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from ledger.app.service import Ledger
from ledger.domain.errors import (
    IdempotencyKeyReused,
    InsufficientStock,
    RefundExceedsSale,
    UnknownBatch,
    UnknownOutlet,
    UnknownSale,
    UnknownStockItem,
)
from ledger.domain.quantities import BatchTake

OUTLET = "NAIROBI-1"
OTHER = "MOMBASA-2"
SKU = "AMOX-500"
SKU2 = "PARA-250"


def today() -> date:
    return datetime.now(UTC).date()


def days_ago(n: int) -> datetime:
    return datetime.now(UTC) - timedelta(days=n)


def takes(*pairs: tuple[str, int]) -> tuple[BatchTake, ...]:
    return tuple(BatchTake(batch_id=b, quantity=q) for b, q in pairs)


def batches(ledger: Ledger, outlet: str, sku: str) -> dict[str, int]:
    return ledger.stock_item(outlet, sku).batch_quantities()


def far_expiry(days: int = 365) -> date:
    return today() + timedelta(days=days)


# --------------------------------------------------------------------------- movements


def test_receive_opens_outlet_and_item(ledger: Ledger) -> None:
    assert ledger.head_position() == 0
    result = ledger.receive(outlet=OUTLET, sku=SKU, batch_id="B1", quantity=100,
                            expires_on=far_expiry(), unit_cost="1.25")
    assert result.replayed is False
    assert result.position == ledger.head_position() > 0
    assert (result.stock.on_hand, result.stock.available) == (100, 100)
    item = ledger.stock_item(OUTLET, SKU)
    assert item.batch_quantities() == {"B1": 100}
    assert item.batches["B1"].expires_on == far_expiry()
    assert item.batches["B1"].unit_cost == "1.25"


def test_more_of_an_existing_batch_under_a_new_delivery_note(ledger: Ledger) -> None:
    """DOMAIN.md: "received: a new batch (or more of an existing one) arrives". A second
    delivery of batch B1 on another delivery note is a new movement, not a retry of the first.
    (Fails today: the default key `receipt:outlet:sku:batch` ignores reference and quantity, so
    the second delivery is refused with IdempotencyKeyReused unless the caller invents a key.)"""
    ledger.receive(outlet=OUTLET, sku=SKU, batch_id="B1", quantity=10, reference="DN-1")
    second = ledger.receive(outlet=OUTLET, sku=SKU, batch_id="B1", quantity=5,
                            reference="DN-2")
    assert second.replayed is False
    assert second.stock.on_hand == 15
    assert batches(ledger, OUTLET, SKU) == {"B1": 15}
    # The very same delivery note again is a retry: nothing new.
    again = ledger.receive(outlet=OUTLET, sku=SKU, batch_id="B1", quantity=5, reference="DN-2")
    assert again.replayed is True
    assert batches(ledger, OUTLET, SKU) == {"B1": 15}


def test_sell_multi_line_takes_from_each_item(ledger: Ledger) -> None:
    ledger.receive(outlet=OUTLET, sku=SKU, batch_id="A1", quantity=10)
    ledger.receive(outlet=OUTLET, sku=SKU2, batch_id="P1", quantity=4)
    result = ledger.sell(outlet=OUTLET, sale_id="S-1", lines=[(SKU, 3), (SKU2, 4)])
    by_sku = {line.sku: line for line in result.lines}
    assert by_sku[SKU].takes == takes(("A1", 3))
    assert by_sku[SKU2].takes == takes(("P1", 4))
    assert by_sku[SKU].stock.on_hand == 7
    assert by_sku[SKU2].stock.on_hand == 0
    assert batches(ledger, OUTLET, SKU) == {"A1": 7}
    assert batches(ledger, OUTLET, SKU2) == {}


def test_sale_spanning_batches_and_refund_back_to_them(ledger: Ledger) -> None:
    ledger.receive(outlet=OUTLET, sku=SKU, batch_id="E1", quantity=5, expires_on=far_expiry(30))
    ledger.receive(outlet=OUTLET, sku=SKU, batch_id="E2", quantity=5, expires_on=far_expiry(60))
    sale = ledger.sell(outlet=OUTLET, sale_id="S-1", lines=[(SKU, 8)])
    assert sale.lines[0].takes == takes(("E1", 5), ("E2", 3))
    refund = ledger.refund(sale_id="S-1", refund_id="R-1", lines=[(SKU, 6)])
    assert refund.lines[0].restocked == takes(("E1", 5), ("E2", 1))
    assert refund.lines[0].written_off == ()
    assert batches(ledger, OUTLET, SKU) == {"E1": 5, "E2": 3}
    # A second refund may take the rest, never more.
    with pytest.raises(RefundExceedsSale) as refused:
        ledger.refund(sale_id="S-1", refund_id="R-2", lines=[(SKU, 3)])
    assert (refused.value.sku, refused.value.asked, refused.value.refundable) == (SKU, 3, 2)
    last = ledger.refund(sale_id="S-1", refund_id="R-3", lines=[(SKU, 2)], write_off=True)
    assert last.lines[0].restocked == ()
    assert last.lines[0].written_off == takes(("E2", 2))
    assert batches(ledger, OUTLET, SKU) == {"E1": 5, "E2": 3}


def test_refund_of_sku_not_in_sale_is_refused(ledger: Ledger) -> None:
    ledger.receive(outlet=OUTLET, sku=SKU, batch_id="A1", quantity=10)
    ledger.receive(outlet=OUTLET, sku=SKU2, batch_id="P1", quantity=10)
    ledger.sell(outlet=OUTLET, sale_id="S-1", lines=[(SKU, 1)])
    head = ledger.head_position()
    with pytest.raises(RefundExceedsSale) as refused:
        ledger.refund(sale_id="S-1", refund_id="R-1", lines=[(SKU2, 1)])
    assert (refused.value.sku, refused.value.asked, refused.value.refundable) == (SKU2, 1, 0)
    assert ledger.head_position() == head


def test_expire_writes_off_due_batches_once(ledger: Ledger) -> None:
    expired_on = today() - timedelta(days=3)
    ledger.receive(outlet=OUTLET, sku=SKU, batch_id="OLD", quantity=7, expires_on=expired_on,
                   occurred_at=days_ago(40))
    ledger.receive(outlet=OUTLET, sku=SKU, batch_id="NEW", quantity=5, expires_on=far_expiry())
    item = ledger.stock_item(OUTLET, SKU)
    assert item.on_hand == 12
    assert item.available(today()) == 5

    first = ledger.expire()
    assert [(e.batch_id, e.quantity, e.expires_on) for e in first.expired] == [
        ("OLD", 7, expired_on)]
    assert first.position == ledger.head_position()
    head = ledger.head_position()
    second = ledger.expire()
    assert second.expired == ()
    assert second.position is None
    assert ledger.head_position() == head
    assert batches(ledger, OUTLET, SKU) == {"NEW": 5}
    assert ledger.stock_item(OUTLET, SKU).batches["OLD"].expired is True


def test_expired_batch_is_never_sold_even_before_the_sweep(ledger: Ledger) -> None:
    expiry = today() - timedelta(days=10)
    ledger.receive(outlet=OUTLET, sku=SKU, batch_id="EXP", quantity=5, expires_on=expiry,
                   occurred_at=days_ago(30))
    ledger.receive(outlet=OUTLET, sku=SKU, batch_id="OK", quantity=3, occurred_at=days_ago(30))
    # The day before expiry, FEFO takes the expiring batch first.
    before = ledger.sell(outlet=OUTLET, sale_id="S-before", lines=[(SKU, 1)],
                         occurred_at=days_ago(11))
    assert before.lines[0].takes == takes(("EXP", 1))
    # On the expiry date itself the batch is no longer sellable.
    on_day = ledger.sell(outlet=OUTLET, sale_id="S-on", lines=[(SKU, 2)],
                         occurred_at=datetime.combine(expiry, datetime.min.time(), UTC)
                         + timedelta(hours=12))
    assert on_day.lines[0].takes == takes(("OK", 2))
    head = ledger.head_position()
    with pytest.raises(InsufficientStock) as refused:
        ledger.sell(outlet=OUTLET, sale_id="S-after", lines=[(SKU, 2)])
    assert (refused.value.sku, refused.value.asked, refused.value.available) == (SKU, 2, 1)
    assert ledger.head_position() == head
    assert batches(ledger, OUTLET, SKU) == {"EXP": 4, "OK": 1}


def test_count_records_variance_per_batch(ledger: Ledger) -> None:
    ledger.receive(outlet=OUTLET, sku=SKU, batch_id="A", quantity=10)
    ledger.receive(outlet=OUTLET, sku=SKU, batch_id="B", quantity=5)
    result = ledger.count(outlet=OUTLET, sku=SKU, counts={"A": 8}, count_id="C-1")
    assert [(c.batch_id, c.expected, c.counted, c.variance) for c in result.counts] == [
        ("A", 10, 8, -2)]
    assert result.stock.on_hand == 13
    assert batches(ledger, OUTLET, SKU) == {"A": 8, "B": 5}


def test_whole_sku_count_sets_unlisted_batches_to_zero(ledger: Ledger) -> None:
    ledger.receive(outlet=OUTLET, sku=SKU, batch_id="A", quantity=10)
    ledger.receive(outlet=OUTLET, sku=SKU, batch_id="B", quantity=5)
    result = ledger.count(outlet=OUTLET, sku=SKU, counts={"A": 12}, whole_sku=True,
                          count_id="C-1")
    assert {(c.batch_id, c.expected, c.counted, c.variance) for c in result.counts} == {
        ("A", 10, 12, 2), ("B", 5, 0, -5)}
    assert result.stock.on_hand == 12
    assert batches(ledger, OUTLET, SKU) == {"A": 12}


def test_write_off_named_and_allocated(ledger: Ledger) -> None:
    ledger.receive(outlet=OUTLET, sku=SKU, batch_id="E1", quantity=5, expires_on=far_expiry(30))
    ledger.receive(outlet=OUTLET, sku=SKU, batch_id="E2", quantity=5, expires_on=far_expiry(60))
    named = ledger.write_off(outlet=OUTLET, sku=SKU, quantity=2, batch_id="E2", reason="damage")
    assert named.takes == takes(("E2", 2))
    allocated = ledger.write_off(outlet=OUTLET, sku=SKU, quantity=6, reason="theft")
    assert allocated.takes == takes(("E1", 5), ("E2", 1))
    assert allocated.stock.on_hand == 2
    head = ledger.head_position()
    with pytest.raises(InsufficientStock) as refused:
        ledger.write_off(outlet=OUTLET, sku=SKU, quantity=3, batch_id="E2", reason="damage")
    assert (refused.value.asked, refused.value.available) == (3, 2)
    with pytest.raises(UnknownBatch):
        ledger.write_off(outlet=OUTLET, sku=SKU, quantity=1, batch_id="NOPE", reason="damage")
    assert ledger.head_position() == head


def test_transfer_keeps_batch_identity_and_expiry(ledger: Ledger) -> None:
    expiry = far_expiry(90)
    ledger.receive(outlet=OUTLET, sku=SKU, batch_id="B1", quantity=10, expires_on=expiry,
                   unit_cost="2.5")
    result = ledger.transfer(from_outlet=OUTLET, to_outlet=OTHER, sku=SKU, quantity=4,
                             transfer_id="T-1")
    assert result.received is True
    assert [(b.batch_id, b.quantity, b.expires_on) for b in result.batches] == [
        ("B1", 4, expiry)]
    assert result.from_stock.on_hand == 6
    assert result.to_stock is not None and result.to_stock.on_hand == 4
    arrived = ledger.stock_item(OTHER, SKU)
    assert arrived.batch_quantities() == {"B1": 4}
    assert arrived.batches["B1"].expires_on == expiry
    assert arrived.batches["B1"].unit_cost == "2.5"
    # The destination outlet now exists and can sell what arrived.
    sold = ledger.sell(outlet=OTHER, sale_id="S-other", lines=[(SKU, 4)])
    assert sold.lines[0].takes == takes(("B1", 4))


def test_transfer_in_transit_is_on_neither_shelf_until_received(ledger: Ledger) -> None:
    ledger.receive(outlet=OUTLET, sku=SKU, batch_id="B1", quantity=10)
    ledger.receive(outlet=OTHER, sku=SKU2, batch_id="X", quantity=1)
    dispatched = ledger.transfer(from_outlet=OUTLET, to_outlet=OTHER, sku=SKU, quantity=7,
                                 transfer_id="T-1", in_transit=True)
    assert dispatched.received is False
    assert dispatched.to_stock is None
    assert ledger.stock_item(OUTLET, SKU).on_hand == 3
    with pytest.raises(UnknownStockItem):
        ledger.stock_item(OTHER, SKU)
    arrived = ledger.receive_transfer(transfer_id="T-1")
    assert arrived.received is True
    assert arrived.to_stock is not None and arrived.to_stock.on_hand == 7
    assert batches(ledger, OTHER, SKU) == {"B1": 7}
    assert batches(ledger, OUTLET, SKU) == {"B1": 3}
    # Receiving it again is an idempotent repeat, not a second arrival.
    again = ledger.receive_transfer(transfer_id="T-1")
    assert again.replayed is True
    assert batches(ledger, OTHER, SKU) == {"B1": 7}


def test_transfer_beyond_stock_is_refused(ledger: Ledger) -> None:
    ledger.receive(outlet=OUTLET, sku=SKU, batch_id="B1", quantity=3)
    head = ledger.head_position()
    with pytest.raises(InsufficientStock) as refused:
        ledger.transfer(from_outlet=OUTLET, to_outlet=OTHER, sku=SKU, quantity=4,
                        transfer_id="T-1")
    assert (refused.value.asked, refused.value.available) == (4, 3)
    assert ledger.head_position() == head


# --------------------------------------------------------------------------- refusals


def test_insufficient_stock_names_line_asked_available_and_records_nothing(
    ledger: Ledger,
) -> None:
    ledger.receive(outlet=OUTLET, sku=SKU, batch_id="A1", quantity=10)
    ledger.receive(outlet=OUTLET, sku=SKU2, batch_id="P1", quantity=2)
    head = ledger.head_position()
    with pytest.raises(InsufficientStock) as refused:
        ledger.sell(outlet=OUTLET, sale_id="S-1", lines=[(SKU, 5), (SKU2, 3)])
    error = refused.value
    assert (error.sku, error.asked, error.available, error.outlet) == (SKU2, 3, 2, OUTLET)
    assert SKU2 in str(error) and "asked 3" in str(error) and "available 2" in str(error)
    assert ledger.head_position() == head
    # All or nothing: the first line's SKU was not touched.
    assert batches(ledger, OUTLET, SKU) == {"A1": 10}
    assert batches(ledger, OUTLET, SKU2) == {"P1": 2}
    # The sale id is still free: a corrected sale under it is accepted.
    ok = ledger.sell(outlet=OUTLET, sale_id="S-1", lines=[(SKU, 5), (SKU2, 2)])
    assert ok.replayed is False


def test_unknown_sale_outlet_stock_item_batch(ledger: Ledger) -> None:
    ledger.receive(outlet=OUTLET, sku=SKU, batch_id="A1", quantity=10)
    head = ledger.head_position()
    with pytest.raises(UnknownSale) as sale:
        ledger.refund(sale_id="NOPE", refund_id="R-1", lines=[(SKU, 1)])
    assert sale.value.sale_id == "NOPE"
    with pytest.raises(UnknownOutlet) as outlet:
        ledger.sell(outlet="NOWHERE", sale_id="S-1", lines=[(SKU, 1)])
    assert outlet.value.outlet == "NOWHERE"
    with pytest.raises(UnknownStockItem) as item:
        ledger.sell(outlet=OUTLET, sale_id="S-2", lines=[("GHOST", 1)])
    assert (item.value.outlet, item.value.sku) == (OUTLET, "GHOST")
    with pytest.raises(UnknownBatch) as batch:
        ledger.count(outlet=OUTLET, sku=SKU, counts={"B-NOPE": 1}, count_id="C-1")
    assert batch.value.batch_id == "B-NOPE"
    with pytest.raises(UnknownStockItem):
        ledger.expire(outlet=OUTLET, sku="GHOST")
    assert ledger.head_position() == head


def test_idempotency_key_reused_for_a_different_command(ledger: Ledger) -> None:
    ledger.receive(outlet=OUTLET, sku=SKU, batch_id="A1", quantity=10)
    ledger.sell(outlet=OUTLET, sale_id="S-1", lines=[(SKU, 1)], key="K-1")
    head = ledger.head_position()
    with pytest.raises(IdempotencyKeyReused) as reused:
        ledger.sell(outlet=OUTLET, sale_id="S-2", lines=[(SKU, 2)], key="K-1")
    assert reused.value.key == "K-1"
    # Same sale id, different lines: the natural key is reused for a different command.
    with pytest.raises(IdempotencyKeyReused):
        ledger.sell(outlet=OUTLET, sale_id="S-3", lines=[(SKU, 1)])
        ledger.sell(outlet=OUTLET, sale_id="S-3", lines=[(SKU, 2)])
    assert ledger.head_position() > head
    assert batches(ledger, OUTLET, SKU) == {"A1": 8}


# --------------------------------------------------------------------------- idempotency


def test_idempotent_repeat_across_a_reopened_ledger(store_url: str) -> None:
    with Ledger.open(store_url, create_tables=True) as first:
        first.receive(outlet=OUTLET, sku=SKU, batch_id="A1", quantity=10)
        first.receive(outlet=OUTLET, sku=SKU2, batch_id="P1", quantity=10)
        sale = first.sell(outlet=OUTLET, sale_id="S-1", lines=[(SKU, 2), (SKU2, 1)])
        refund = first.refund(sale_id="S-1", refund_id="R-1", lines=[(SKU, 1)])
        count = first.count(outlet=OUTLET, sku=SKU2, counts={"P1": 8}, count_id="C-1")
        head = first.head_position()
    with Ledger.open(store_url) as second:
        again = second.sell(outlet=OUTLET, sale_id="S-1", lines=[(SKU, 2), (SKU2, 1)])
        assert again.replayed is True
        assert again == sale.model_copy(update={"replayed": True})
        refund_again = second.refund(sale_id="S-1", refund_id="R-1", lines=[(SKU, 1)])
        assert refund_again == refund.model_copy(update={"replayed": True})
        count_again = second.count(outlet=OUTLET, sku=SKU2, counts={"P1": 8}, count_id="C-1")
        assert count_again == count.model_copy(update={"replayed": True})
        receipt_again = second.receive(outlet=OUTLET, sku=SKU, batch_id="A1", quantity=10)
        assert receipt_again.replayed is True
        assert receipt_again.stock.on_hand == 10  # what the first caller was told
        assert second.head_position() == head
        assert batches(second, OUTLET, SKU) == {"A1": 9}
        assert batches(second, OUTLET, SKU2) == {"P1": 8}


def test_idempotent_repeat_when_the_repeat_would_now_be_refused(ledger: Ledger) -> None:
    ledger.receive(outlet=OUTLET, sku=SKU, batch_id="A1", quantity=3)
    sale = ledger.sell(outlet=OUTLET, sale_id="S-1", lines=[(SKU, 3)])
    head = ledger.head_position()
    again = ledger.sell(outlet=OUTLET, sale_id="S-1", lines=[(SKU, 3)])
    assert again == sale.model_copy(update={"replayed": True})
    assert ledger.head_position() == head


# --------------------------------------------------------------------------- policies


def test_negative_stock_when_allowed_and_settled_by_next_receipt(ledger: Ledger) -> None:
    ledger.set_outlet_policy(outlet=OUTLET, allow_negative=True)
    ledger.receive(outlet=OUTLET, sku=SKU, batch_id="A1", quantity=3)
    sale = ledger.sell(outlet=OUTLET, sale_id="S-1", lines=[(SKU, 5)])
    line = sale.lines[0]
    assert line.takes == takes(("A1", 3))
    assert line.unallocated == 2
    assert line.stock.on_hand == -2
    item = ledger.stock_item(OUTLET, SKU)
    assert item.shortfall == 2
    assert all(b.quantity >= 0 for b in item.batches.values())
    receipt = ledger.receive(outlet=OUTLET, sku=SKU, batch_id="A2", quantity=10)
    assert receipt.shortfall_settled == 2
    assert receipt.stock.on_hand == 8
    item = ledger.stock_item(OUTLET, SKU)
    assert item.shortfall == 0
    assert item.batch_quantities() == {"A2": 8}


def test_negative_stock_refused_by_default(ledger: Ledger) -> None:
    ledger.receive(outlet=OUTLET, sku=SKU, batch_id="A1", quantity=3)
    with pytest.raises(InsufficientStock):
        ledger.sell(outlet=OUTLET, sale_id="S-1", lines=[(SKU, 5)])
    assert ledger.stock_item(OUTLET, SKU).shortfall == 0


@pytest.mark.parametrize(
    ("policy", "expected_batch"), [("fefo", "EARLY-EXPIRY"), ("fifo", "FIRST-IN")]
)
def test_allocation_policy(ledger: Ledger, policy: str, expected_batch: str) -> None:
    ledger.set_outlet_policy(outlet=OUTLET, allocation_policy=policy)
    ledger.receive(outlet=OUTLET, sku=SKU, batch_id="FIRST-IN", quantity=5,
                   expires_on=far_expiry(300))
    ledger.receive(outlet=OUTLET, sku=SKU, batch_id="EARLY-EXPIRY", quantity=5,
                   expires_on=far_expiry(30))
    ledger.receive(outlet=OUTLET, sku=SKU, batch_id="NO-EXPIRY", quantity=5)
    sale = ledger.sell(outlet=OUTLET, sale_id="S-1", lines=[(SKU, 2)])
    assert sale.lines[0].takes == takes((expected_batch, 2))
    write_off = ledger.write_off(outlet=OUTLET, sku=SKU, quantity=3, reason="damage")
    assert write_off.takes == takes((expected_batch, 3))


def test_fefo_puts_batches_without_expiry_last(ledger: Ledger) -> None:
    ledger.receive(outlet=OUTLET, sku=SKU, batch_id="NO-EXPIRY", quantity=2)
    ledger.receive(outlet=OUTLET, sku=SKU, batch_id="LATE", quantity=2, expires_on=far_expiry(300))
    ledger.receive(outlet=OUTLET, sku=SKU, batch_id="SOON", quantity=2, expires_on=far_expiry(10))
    sale = ledger.sell(outlet=OUTLET, sale_id="S-1", lines=[(SKU, 5)])
    assert sale.lines[0].takes == takes(("SOON", 2), ("LATE", 2), ("NO-EXPIRY", 1))


# --------------------------------------------------------------------------- conservation


def test_conservation_over_a_mixed_history(ledger: Ledger) -> None:
    ledger.receive(outlet=OUTLET, sku=SKU, batch_id="A", quantity=50, expires_on=far_expiry(20))
    ledger.receive(outlet=OUTLET, sku=SKU, batch_id="B", quantity=30)
    ledger.receive(outlet=OUTLET, sku=SKU, batch_id="OLD", quantity=4,
                   expires_on=today() - timedelta(days=1), occurred_at=days_ago(20))
    ledger.sell(outlet=OUTLET, sale_id="S-1", lines=[(SKU, 12)])
    ledger.refund(sale_id="S-1", refund_id="R-1", lines=[(SKU, 2)])
    ledger.write_off(outlet=OUTLET, sku=SKU, quantity=3, reason="damage")
    ledger.transfer(from_outlet=OUTLET, to_outlet=OTHER, sku=SKU, quantity=40, transfer_id="T")
    ledger.expire()
    ledger.count(outlet=OUTLET, sku=SKU, counts={"B": 26}, count_id="C-1")
    # FEFO: the sale and write-off drew on A; the transfer took A's 37 and 3 of B; the
    # sweep expired OLD; the count found B one short.
    here = ledger.stock_item(OUTLET, SKU)
    there = ledger.stock_item(OTHER, SKU)
    assert here.batch_quantities() == {"B": 26}
    assert there.batch_quantities() == {"A": 37, "B": 3}
    # received - sold + restocked - written off - expired + count variance, across outlets
    assert here.on_hand + there.on_hand == 84 - 12 + 2 - 3 - 4 - 1
    assert all(b.quantity >= 0 for b in (*here.batches.values(), *there.batches.values()))


def test_a_snapshot_that_cannot_be_written_fails_no_command(
        ledger: Ledger, store_url: str, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """The command is recorded before its stock item's snapshot is written: a snapshot that
    fails is logged, and a later load replays the events instead."""
    from eventsourcing.persistence import OperationalError


    def fail(*_: object, **__: object) -> None:
        raise OperationalError("the disk is full")

    from ledger.store import application as store

    monkeypatch.setattr(store, "SNAPSHOT_INTERVAL", 3)
    snapshots = ledger.application.snapshots
    assert snapshots is not None
    monkeypatch.setattr(snapshots, "put", fail)
    ledger.receive(outlet="O1", sku="AMOX", batch_id="B1", quantity=10)
    with caplog.at_level("WARNING", logger="ledger.store.application"):
        sold = [ledger.sell(outlet="O1", sale_id=f"S{n}", lines=[("AMOX", 1)]) for n in range(4)]
    assert all(s.lines[0].quantity == 1 for s in sold)
    assert "not written: the disk is full" in caplog.text
    with Ledger.open(store_url) as fresh:
        assert fresh.stock_level("O1", "AMOX").on_hand == 6
