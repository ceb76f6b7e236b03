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
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import psycopg
import pytest
from eventsourcing.persistence import PersistenceError
from eventsourcing.utils import get_topic

from ledger.app import commands as c
from ledger.app import handlers
from ledger.app import results as r
from ledger.app.audit import verify_chain
from ledger.app.service import Ledger
from ledger.domain import identity
from ledger.domain.errors import (
    DuplicateReference,
    IdempotencyKeyReused,
    InsufficientStock,
)
from ledger.events import CommandAccepted, SaleRecorded, StockSold
from ledger.store.decoding import UnreadableEvent
from ledger.store.hash_chain import select_chained
from ledger.store.privileges import permission_denied
from projections.runner import create_read_models
from tests.poisoning import POISONS, forge
from tests.roles import made_roles

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
    twice_command = sale("S1", ("REF", 2), key="K2")
    outcomes = ledger._loop.run_group(sales(
        sale("S1", ("REF", 1), key="K1"), twice_command,
        sale("OLD", ("REF", 1), key="K3"), sale("S2", ("REF", 1))))
    first, twice, old, last = outcomes
    assert isinstance(first, r.SaleResult) and isinstance(last, r.SaleResult)
    # The second start of sale S1 waits for the group to be recorded, then is refused as a
    # command alone is, naming where the id was used.
    assert twice is None
    again = ledger._loop.run_group(sales(twice_command, sale("S3", ("REF", 1))))
    assert isinstance(again[1], r.SaleResult)
    for refusal, sale_id in ((again[0], "S1"), (old, "OLD")):
        assert isinstance(refusal, DuplicateReference)
        assert str(refusal).startswith(f"sale {sale_id} is already recorded, at outlet {OUTLET}")
    with pytest.raises(DuplicateReference) as alone:
        ledger.execute(twice_command)
    assert str(alone.value) == str(again[0])
    assert sold_references(ledger, "REF") == ["OLD", "S1", "S2", "S3"]
    assert available(ledger, "REF") == 6


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


def answer_alone(ledger: Ledger, command: c.Command) -> Any:
    """What `Ledger.execute` answers `command` alone: its result or its refusal."""
    try:
        return ledger.execute(command)
    except Exception as error:
        return error


def same_answer(in_group: Any, alone: Any) -> None:
    assert type(in_group) is type(alone)
    if isinstance(alone, Exception):
        assert str(in_group) == str(alone)
    else:
        # Alone afterwards, even a command the group recorded first is a repeat.
        assert in_group.model_dump(exclude={"replayed"}) == alone.model_dump(
            exclude={"replayed"})


def test_a_repeated_key_in_a_group_is_answered_exactly_as_alone(ledger: Ledger) -> None:
    """Every way a key or a sale id can be used again, within the group and before it: each
    gets what `execute` gives the same command alone afterwards, word for word."""
    ledger.receive(outlet=OUTLET, sku="EXACT", batch_id="B1", quantity=20)
    ledger.sell(outlet=OUTLET, sale_id="OLD", lines=[("EXACT", 1)])
    commands = [
        sale("OLD", ("EXACT", 1)),  # recorded before: the first answer again
        sale("OLD", ("EXACT", 2)),  # its key (sale:OLD) with another body: refused
        sale("OLD", ("EXACT", 1), key="K-OLD"),  # its sale id under another key
        sale("NEW", ("EXACT", 3)),
        sale("NEW", ("EXACT", 3)),  # the same again within the group
        sale("NEW", ("EXACT", 4)),  # another body under NEW's key within the group
        sale("NEW2", ("EXACT", 1), key="sale:NEW"),  # another sale under NEW's key
        sale("NEW3", ("EXACT", 50)),  # refused: more than there is
    ]
    outcomes = ledger._loop.run_group(sales(*commands))
    assert all(outcome is not None for outcome in outcomes)
    alone = [answer_alone(ledger, command) for command in commands]
    for in_group, answered_alone in zip(outcomes, alone, strict=True):
        same_answer(in_group, answered_alone)
    assert isinstance(outcomes[0], r.SaleResult) and outcomes[0].replayed
    assert isinstance(outcomes[1], IdempotencyKeyReused) and "at outlet GROUPS-1" in str(
        outcomes[1])
    assert isinstance(outcomes[2], DuplicateReference)
    assert isinstance(outcomes[3], r.SaleResult) and not outcomes[3].replayed
    assert isinstance(outcomes[4], r.SaleResult) and outcomes[4].replayed
    assert isinstance(outcomes[5], IdempotencyKeyReused) and "sale NEW" in str(outcomes[5])
    assert isinstance(outcomes[6], IdempotencyKeyReused)
    assert isinstance(outcomes[7], InsufficientStock)
    assert sold_references(ledger, "EXACT") == ["OLD", "NEW"]
    assert available(ledger, "EXACT") == 16


class FailingAppends:
    """Makes the ledger's next append fail as a store outage would, recording nothing."""

    def __init__(self, ledger: Ledger) -> None:
        recorder: Any = ledger.application.recorder
        insert: Callable[..., Any] = recorder.insert_events
        self.failures = 1

        def failing(*args: Any, **kwargs: Any) -> Any:
            if self.failures:
                self.failures -= 1
                raise PersistenceError("the store went away")
            return insert(*args, **kwargs)

        recorder.insert_events = failing


def test_a_failed_group_append_loses_no_sale_its_refusals_rested_on(ledger: Ledger) -> None:
    """S1 takes the last units, so S2 is refused within the group; the group's append then
    fails: S1 gets the error, and S2, whose refusal rested on S1, is decided again."""
    ledger.receive(outlet=OUTLET, sku="LOST", batch_id="B1", quantity=5)
    FailingAppends(ledger)
    first, second, repeat = ledger._loop.run_group(sales(
        sale("S1", ("LOST", 5)), sale("S2", ("LOST", 3)), sale("S1", ("LOST", 5))))
    assert isinstance(first, PersistenceError)
    assert second is None and repeat is None  # to be decided again
    assert sold_references(ledger, "LOST") == [] and available(ledger, "LOST") == 5
    again = ledger._loop.run_group(sales(sale("S2", ("LOST", 3)), sale("S1", ("LOST", 5))))
    assert isinstance(again[0], r.SaleResult) and isinstance(again[1], InsufficientStock)
    assert sold_references(ledger, "LOST") == ["S2"] and available(ledger, "LOST") == 2



def test_a_read_failing_after_the_append_fails_only_the_answer_it_was_for(
        ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    """The repeat's answer is read from its key's record after the group's append; if that
    read fails, the repeat gets the error and the recorded sale keeps its answer."""
    ledger.receive(outlet=OUTLET, sku="READ", batch_id="B1", quantity=5)

    def failing(*args: Any) -> Any:
        raise PersistenceError("the store went away")

    monkeypatch.setattr(ledger._loop, "_replay", failing)
    first, repeat = ledger._loop.run_group(sales(sale("S1", ("READ", 2)), sale("S1", ("READ", 2))))
    assert isinstance(first, r.SaleResult) and first.position == record_position(ledger, "sale:S1")
    assert isinstance(repeat, PersistenceError)
    assert available(ledger, "READ") == 3

def test_a_member_that_fails_fails_alone(ledger: Ledger) -> None:
    """An unreadable event in one stock item's stream fails the sales that read it, with the
    error a command alone gets, and no other member of the group."""
    ledger.receive(outlet=OUTLET, sku="GOOD", batch_id="B1", quantity=5)
    ledger.receive(outlet=OUTLET, sku="BAD", batch_id="B1", quantity=5)
    ledger.application.evict(identity.stock_item_id(OUTLET, "BAD"))
    _, topic, state = POISONS[0]
    bad = forge(ledger.application, topic, state, outlet=OUTLET, sku="BAD")
    outcomes = ledger._loop.run_group(sales(
        sale("S1", ("GOOD", 1)), sale("S2", ("BAD", 1)), sale("S3", ("GOOD", 1), ("BAD", 1)),
        sale("S4", ("GOOD", 1))))
    assert [type(o) for o in outcomes] == [r.SaleResult, UnreadableEvent, UnreadableEvent,
                                            r.SaleResult]
    for failed in outcomes[1:3]:
        assert isinstance(failed, UnreadableEvent) and failed.position == bad
    alone = answer_alone(ledger, sale("S5", ("BAD", 1)))
    assert isinstance(alone, UnreadableEvent) and alone.position == bad
    # Recorded: the sales that read no unreadable stream (their keys' records), no other.
    assert [record_position(ledger, f"sale:S{i}") is not None for i in range(1, 6)] == [
        True, False, False, True, False]
    assert available(ledger, "GOOD") == 3


def test_a_groups_rows_carry_their_digests_and_verify(ledger: Ledger) -> None:
    ledger.receive(outlet=OUTLET, sku="SEAL", batch_id="B1", quantity=9)
    before = ledger.application.recorder.max_notification_id() or 0
    outcomes = ledger._loop.run_group(sales(*(sale(f"S{i}", ("SEAL", 1)) for i in range(6))))
    assert all(isinstance(o, r.SaleResult) for o in outcomes)
    rows = select_chained(ledger.application.recorder, before + 1, 1000, None)
    assert len(rows) == 6 * 3  # each sale: its stock item's event, the sale's, its key's
    assert all(row["content_digest"] is not None for row in rows)
    report = verify_chain(ledger.application)
    assert report.findings == [] and report.head_position == rows[-1]["position"]


def test_crash_mid_group_records_all_or_none_and_no_answered_sale_is_lost(
        store_url: str) -> None:
    """Two processes whose threads submit sales of one item together (so they go in groups,
    and the processes' groups race) are killed mid-run: every sale they answered is recorded,
    every sale recorded is whole (its stock item's event, the sale and its key's record, or
    none of them), and the shelf fell by exactly the units of the sales recorded."""
    with Ledger.open(store_url, create_tables=True) as ledger:
        ledger.receive(outlet=OUTLET, sku="CRASH", batch_id="B1", quantity=100_000)
    answered: set[str] = set()
    children = [subprocess.Popen(
        [sys.executable, "-c", CRASHING_CHILD, store_url, OUTLET, str(n)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)}) for n in range(2)]
    for child in children:
        assert child.stdout is not None
        lines = 0
        for line in child.stdout:
            if line.startswith("sold "):
                answered.add(line.split()[1])
                lines += 1
                if lines >= 40:
                    break
        child.kill()
        rest, errors = child.communicate(timeout=60)
        # Whole lines only: each is one write, so a kill cannot cut one short.
        answered.update(line.split()[1] for line in rest.split("\n")[:-1]
                        if line.startswith("sold "))
        assert lines >= 40, errors
    with Ledger.open(store_url) as ledger:
        events = recorded(ledger)
        sold = Counter(e.reference for e in events if isinstance(e, StockSold))
        sales_recorded = Counter(e.sale_id for e in events if isinstance(e, SaleRecorded))
        keys = Counter(e.key for e in events if isinstance(e, CommandAccepted)
                       and e.key.startswith("sale:C"))
        assert answered <= set(sold)
        assert sold == sales_recorded == Counter({k.removeprefix("sale:"): n
                                                  for k, n in keys.items()})
        assert set(sold.values()) == {1}
        units = sum(take.quantity for e in events if isinstance(e, StockSold)
                    for take in e.takes)
        assert available(ledger, "CRASH") == 100_000 - units
    if store_url.startswith("postgresql"):
        # The sales went in groups: rows of one transaction share their xmin.
        with psycopg.connect(store_url) as connection:
            row = connection.execute(
                "SELECT max(n) FROM (SELECT count(*) AS n FROM stockledger_events "
                "WHERE topic = %s GROUP BY xmin::text) AS t", (get_topic(SaleRecorded),)
            ).fetchone()
        assert row is not None and row[0] >= 2, row



@pytest.mark.postgres
def test_a_group_from_a_role_that_may_not_append_is_refused_whole(postgres_url: str) -> None:
    """The auditor's role reads but may not append: every member of its group gets the
    store's permission refusal (`permission_denied`), as a command alone does, and the app
    role's group is recorded."""
    with Ledger.open(postgres_url, create_tables=True) as owner:
        create_read_models(owner.application)  # the roles' script grants on them too
        owner.receive(outlet=OUTLET, sku="PRIV", batch_id="B1", quantity=5)
    with made_roles(postgres_url) as roles:
        with Ledger.open(roles.url(roles.auditor)) as auditor:
            outcomes = auditor._loop.run_group(sales(sale("S1", ("PRIV", 1)),
                                                     sale("S2", ("PRIV", 1))))
            alone = answer_alone(auditor, sale("S3", ("PRIV", 1)))
        for refused in [*outcomes, alone]:
            assert isinstance(refused, PersistenceError) and permission_denied(refused)
        with Ledger.open(roles.url(roles.app)) as app:
            assert sold_references(app, "PRIV") == []
            done = app._loop.run_group(sales(sale("S1", ("PRIV", 1)), sale("S2", ("PRIV", 1))))
            assert all(isinstance(o, r.SaleResult) for o in done)
            assert sold_references(app, "PRIV") == ["S1", "S2"]


CRASHING_CHILD = r"""
import sys, threading
from ledger.app import commands as c
from ledger.app.service import Ledger

url, outlet, round_ = sys.argv[1], sys.argv[2], sys.argv[3]
printing = threading.Lock()
with Ledger.open(url) as ledger:
    def till(n):
        for i in range(10_000):
            sale_id = f"C{round_}-{n}-{i}"
            ledger.submit(c.parse(c.SellStock, outlet=outlet, sale_id=sale_id,
                                  lines=[{"sku": "CRASH", "quantity": 1 + i % 3}]))
            with printing:
                sys.stdout.write(f"sold {sale_id}\n")
                sys.stdout.flush()
    threads = [threading.Thread(target=till, args=(n,), daemon=True) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
"""
