"""Commands decided together (`CommandLoop.run_group`, `Ledger.submit`), on both stores: in
arrival order, each on the state the ones before it left, every accepted one appended in one
transaction with its own position; refusals leave the state as it was; idempotency exact; a
lost race with another process decides the whole group again."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from ledger.app import commands as c
from ledger.app import handlers
from ledger.app import results as r
from ledger.app.service import Ledger
from ledger.domain import identity
from ledger.domain.errors import (
    DuplicateReference,
    IdempotencyKeyReused,
    InsufficientStock,
)
from ledger.events import SaleRecorded, StockSold

ROOT = Path(__file__).resolve().parents[2]
OUTLET = "GROUPS-1"


def sale(sale_id: str, *lines: tuple[str, int], key: str | None = None) -> c.SellStock:
    return c.parse(c.SellStock, outlet=OUTLET, sale_id=sale_id, key=key,
                   lines=[{"sku": sku, "quantity": quantity} for sku, quantity in lines])


def sales(*commands: c.SellStock) -> list[tuple[c.Command, handlers.Handler[Any, Any]]]:
    return [(command, handlers.SELL) for command in commands]


class Appends:
    """Counts the ledger's appends (each one transaction), by wrapping its recorder's."""

    def __init__(self, ledger: Ledger) -> None:
        self.count = 0
        recorder: Any = ledger.application.recorder
        insert: Callable[..., Any] = recorder.insert_events

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.count += 1
            return insert(*args, **kwargs)

        recorder.insert_events = counted


def recorded(ledger: Ledger) -> list[Any]:
    app = ledger.application
    return [app.mapper.to_domain_event(n)
            for n in app.recorder.select_notifications(start=1, limit=100_000)]


def sold_references(ledger: Ledger, sku: str) -> list[str]:
    return [e.reference for e in recorded(ledger) if isinstance(e, StockSold) and e.sku == sku]


def record_position(ledger: Ledger, key: str) -> int | None:
    return ledger.application.position_of(identity.command_record_id(key), 1)


def available(ledger: Ledger, sku: str) -> int:
    return ledger.stock_level(OUTLET, sku).available


def test_a_group_is_decided_in_order_and_appended_in_one_transaction(ledger: Ledger) -> None:
    ledger.receive(outlet=OUTLET, sku="HOT", batch_id="B1", quantity=7)
    appends = Appends(ledger)
    outcomes = ledger._loop.run_group(sales(*(sale(f"S{i}", ("HOT", 1)) for i in range(10))))
    assert appends.count == 1
    accepted = [o for o in outcomes if isinstance(o, r.SaleResult)]
    assert [o.sale_id for o in accepted] == [f"S{i}" for i in range(7)]
    assert [o.lines[0].stock.available for o in accepted] == [6, 5, 4, 3, 2, 1, 0]
    for refusal in outcomes[7:]:
        assert isinstance(refusal, InsufficientStock)
        assert (refusal.asked, refusal.available) == (1, 0)
    # Each answer has its own position: its key's record, after its own events.
    positions = [o.position for o in accepted]
    assert positions == sorted(set(positions))  # type: ignore[type-var]
    for result in accepted:
        assert result.position == record_position(ledger, f"sale:{result.sale_id}")
    events = recorded(ledger)
    by_position = {record_position(ledger, f"sale:{o.sale_id}"): o.sale_id for o in accepted}
    assert len(by_position) == 7
    assert sold_references(ledger, "HOT") == [f"S{i}" for i in range(7)]
    assert sum(isinstance(e, SaleRecorded) for e in events) == 7
    assert available(ledger, "HOT") == 0


def test_a_refused_sale_in_the_middle_leaves_the_state_as_it_was(ledger: Ledger) -> None:
    ledger.receive(outlet=OUTLET, sku="A", batch_id="B1", quantity=3)
    ledger.receive(outlet=OUTLET, sku="B", batch_id="B1", quantity=1)
    outcomes = ledger._loop.run_group(sales(
        sale("S1", ("A", 2)),
        sale("S2", ("A", 1), ("B", 5)),  # its first line fits, its second does not
        sale("S3", ("A", 1)),  # takes the unit S2's first line would have taken
        sale("S4", ("B", 1))))
    first, middle, third, fourth = outcomes
    assert isinstance(first, r.SaleResult) and isinstance(third, r.SaleResult)
    assert isinstance(fourth, r.SaleResult)
    assert isinstance(middle, InsufficientStock) and middle.sku == "B"
    assert (middle.asked, middle.available) == (5, 1)
    assert third.lines[0].stock.available == 0 and fourth.lines[0].stock.available == 0
    assert sold_references(ledger, "A") == ["S1", "S3"]
    assert sold_references(ledger, "B") == ["S4"]
    assert record_position(ledger, "sale:S2") is None
    assert (available(ledger, "A"), available(ledger, "B")) == (0, 0)
    # The cached state is what is recorded: the next command decides on it.
    with pytest.raises(InsufficientStock):
        ledger.sell(outlet=OUTLET, sale_id="S5", lines=[("A", 1)])


def test_a_key_seen_twice_in_a_group_gets_the_first_answer(ledger: Ledger) -> None:
    ledger.receive(outlet=OUTLET, sku="DUP", batch_id="B1", quantity=10)
    appends = Appends(ledger)
    outcomes = ledger._loop.run_group(sales(
        sale("S1", ("DUP", 2)),
        sale("S1", ("DUP", 2)),  # the same request again
        sale("S2", ("DUP", 1), key="K"),
        sale("S3", ("DUP", 3), key="K"),  # another command under a used key
        sale("S1", ("DUP", 2))))
    assert appends.count == 1
    first, again, other, reused, third = outcomes
    assert isinstance(first, r.SaleResult) and not first.replayed
    for repeat in (again, third):
        assert isinstance(repeat, r.SaleResult) and repeat.replayed
        assert repeat.model_dump(exclude={"replayed"}) == first.model_dump(exclude={"replayed"})
    assert isinstance(other, r.SaleResult) and other.idempotency_key == "K"
    assert isinstance(reused, IdempotencyKeyReused) and reused.key == "K"
    assert sold_references(ledger, "DUP") == ["S1", "S2"]
    assert available(ledger, "DUP") == 7


def test_a_key_recorded_before_the_group_gets_its_recorded_answer(ledger: Ledger) -> None:
    ledger.receive(outlet=OUTLET, sku="RETRY", batch_id="B1", quantity=10)
    earlier = ledger.sell(outlet=OUTLET, sale_id="S1", lines=[("RETRY", 4)])
    appends = Appends(ledger)
    outcomes = ledger._loop.run_group(sales(
        sale("S2", ("RETRY", 1)), sale("S1", ("RETRY", 4)), sale("S3", ("RETRY", 1)),
        sale("S4", ("RETRY", 1), key="sale:S1")))
    new_one, retried, other, reused = outcomes
    assert isinstance(retried, r.SaleResult) and retried.replayed
    assert retried.position == earlier.position
    assert retried.lines == earlier.lines
    assert isinstance(reused, IdempotencyKeyReused)
    assert isinstance(new_one, r.SaleResult) and isinstance(other, r.SaleResult)
    # The first append collided on the recorded key; the rest went in the second.
    assert appends.count == 2
    assert ledger.conflict_retries == 0  # not a lost race: nothing to queue on
    assert sold_references(ledger, "RETRY") == ["S1", "S2", "S3"]
    assert available(ledger, "RETRY") == 4


def test_a_sale_id_under_two_keys_is_recorded_once(ledger: Ledger) -> None:
    ledger.receive(outlet=OUTLET, sku="REF", batch_id="B1", quantity=10)
    ledger.sell(outlet=OUTLET, sale_id="OLD", lines=[("REF", 1)])
    outcomes = ledger._loop.run_group(sales(
        sale("S1", ("REF", 1), key="K1"), sale("S1", ("REF", 2), key="K2"),
        sale("OLD", ("REF", 1), key="K3"), sale("S2", ("REF", 1))))
    first, twice, old, last = outcomes
    assert isinstance(first, r.SaleResult) and isinstance(last, r.SaleResult)
    assert isinstance(twice, DuplicateReference) and "sale S1" in str(twice)
    assert isinstance(old, DuplicateReference) and "sale OLD" in str(old)
    assert sold_references(ledger, "REF") == ["OLD", "S1", "S2"]
    assert available(ledger, "REF") == 7


def sell_in_another_process(url: str, sale_id: str, sku: str, quantity: int) -> None:
    script = ("import sys; from ledger import Ledger\n"
              "with Ledger.open(sys.argv[1]) as ledger:\n"
              "    ledger.sell(outlet=sys.argv[2], sale_id=sys.argv[3],"
              " lines=[(sys.argv[4], int(sys.argv[5]))])\n")
    subprocess.run([sys.executable, "-c", script, url, OUTLET, sale_id, sku, str(quantity)],
                   check=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                   timeout=120)


def test_a_race_lost_to_another_process_decides_the_whole_group_again(
        ledger: Ledger, store_url: str) -> None:
    ledger.receive(outlet=OUTLET, sku="RACE", batch_id="B1", quantity=5)
    assert available(ledger, "RACE") == 5  # cached: the group decides on it first
    sell_in_another_process(store_url, "ELSEWHERE", "RACE", 3)
    appends = Appends(ledger)
    outcomes = ledger._loop.run_group(sales(*(sale(f"S{i}", ("RACE", 1)) for i in range(4))))
    assert ledger.conflict_retries == 1 and appends.count == 2
    accepted = [o for o in outcomes if isinstance(o, r.SaleResult)]
    assert [o.sale_id for o in accepted] == ["S0", "S1"]
    assert [o.lines[0].stock.available for o in accepted] == [1, 0]
    assert all(isinstance(o, InsufficientStock) for o in outcomes[2:])
    assert sold_references(ledger, "RACE") == ["ELSEWHERE", "S0", "S1"]
    assert available(ledger, "RACE") == 0


def test_a_refund_of_a_sale_in_its_own_group_waits_for_the_next(ledger: Ledger) -> None:
    ledger.receive(outlet=OUTLET, sku="RF", batch_id="B1", quantity=5)
    refund = c.parse(c.RefundSale, sale_id="S1", refund_id="R1",
                     lines=[{"sku": "RF", "quantity": 1}])
    after = sale("S2", ("RF", 1))
    outcomes = ledger._loop.run_group([
        (sale("S1", ("RF", 2)), handlers.SELL), (refund, handlers.REFUND),
        (after, handlers.SELL)])
    assert isinstance(outcomes[0], r.SaleResult)
    assert outcomes[1:] == [None, None]  # not decided: the sale is not recorded yet
    again = ledger._loop.run_group([(refund, handlers.REFUND), (after, handlers.SELL)])
    assert isinstance(again[0], r.RefundResult) and isinstance(again[1], r.SaleResult)
    assert available(ledger, "RF") == 3


def wait_until(condition: Callable[[], bool], seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def submit_all(ledger: Ledger, commands: Sequence[c.Command]) -> list[Any]:
    """Submit each command from its own thread while the ledger is busy, so that they all
    wait in their lanes; then let the ledger go and gather what each thread got."""
    outcomes: list[Any] = [None] * len(commands)

    def submit(index: int) -> None:
        try:
            outcomes[index] = ledger.submit(commands[index])
        except Exception as error:
            outcomes[index] = error

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(len(commands))]
    with ledger._loop.lock:  # as a command in progress holds it
        for thread in threads:
            thread.start()
        # Every command is waiting: the lanes' heads for the ledger, the others in lanes.
        lanes = ledger._lanes._lanes  # looked at, not changed
        wait_until(lambda: sum(len(lane.waiting) for lane in list(lanes.values()))
                   == len(commands))
    for thread in threads:
        thread.join(timeout=120)
    assert not lanes, "every lane is gone once it is idle"
    return outcomes


def test_commands_submitted_together_share_one_append_per_lane(ledger: Ledger) -> None:
    ledger.receive(outlet=OUTLET, sku="LANE-A", batch_id="B1", quantity=5)
    ledger.receive(outlet=OUTLET, sku="LANE-B", batch_id="B1", quantity=50)
    appends = Appends(ledger)
    commands = [sale(f"A{i}", ("LANE-A", 1)) for i in range(8)] + [
        sale(f"B{i}", ("LANE-B", 2)) for i in range(4)]
    outcomes = submit_all(ledger, commands)
    assert appends.count == 2  # one per lane: one stock item each
    sold_a = [o for o in outcomes[:8] if isinstance(o, r.SaleResult)]
    assert len(sold_a) == 5
    assert all(isinstance(o, InsufficientStock) for o in outcomes[:8] if o not in sold_a)
    assert all(isinstance(o, r.SaleResult) for o in outcomes[8:])
    assert len({o.position for o in outcomes if isinstance(o, r.SaleResult)}) == 9
    assert sorted(sold_references(ledger, "LANE-A")) == sorted(o.sale_id for o in sold_a)
    assert (available(ledger, "LANE-A"), available(ledger, "LANE-B")) == (0, 42)


def test_refunds_of_one_sale_submitted_together_never_exceed_it(ledger: Ledger) -> None:
    ledger.receive(outlet=OUTLET, sku="SR", batch_id="B1", quantity=5)
    ledger.sell(outlet=OUTLET, sale_id="S0", lines=[("SR", 2)])
    refunds = [c.parse(c.RefundSale, sale_id="S0", refund_id=f"R{i}",
                       lines=[{"sku": "SR", "quantity": 1}]) for i in range(3)]
    outcomes = submit_all(ledger, refunds)
    assert [type(o) for o in outcomes].count(r.RefundResult) == 2
    assert any(isinstance(o, Exception) and "refund" in str(o) for o in outcomes)
    assert available(ledger, "SR") == 5
