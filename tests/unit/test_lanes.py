"""Lanes (`ledger.app.lanes`) with a stand-in for the command loop: who leads, what goes in a
group, who gets which outcome, and that a lane is gone once idle."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from ledger.app import commands as c
from ledger.app import handlers
from ledger.app import results as r
from ledger.app.lanes import MAX_GROUP, Lanes
from ledger.app.loop import Outcome
from ledger.domain.errors import InsufficientStock

Pair = tuple[c.Command, handlers.Handler[Any, Any]]


def sale(sale_id: str, sku: str = "HOT") -> Pair:
    return c.parse(c.SellStock, outlet="O", sale_id=sale_id,
                   lines=[{"sku": sku, "quantity": 1}]), handlers.SELL


def answer(command: c.Command) -> r.CommandResult:
    assert isinstance(command, c.SellStock)
    return r.SaleResult(kind="sell", idempotency_key=command.idempotency_key(),
                        sale_id=command.sale_id, outlet=command.outlet, lines=())


class Loop:
    """Stands in for `CommandLoop.run_group`: records each group, answers each command by
    `decide`, and holds the ledger while `hold` is set."""

    def __init__(self, decide: Callable[[c.Command], Outcome] = answer) -> None:
        self.groups: list[list[str]] = []
        self.lock = threading.RLock()
        self.decide = decide
        self.entered = threading.Event()
        self.hold = threading.Event()
        self.hold.set()

    def run_group(self, pairs: Sequence[Pair]) -> list[Outcome]:
        with self.lock:
            self.entered.set()
            self.hold.wait(30)
            self.groups.append([p[0].sale_id for p in pairs])  # type: ignore[attr-defined]
            return [self.decide(command) for command, _ in pairs]


def lanes_over(loop: Loop) -> Lanes:
    return Lanes(loop.run_group, lambda: loop.lock)


def submit_in_threads(lanes: Lanes, pairs: list[Pair], pause: float = 0.0
                      ) -> tuple[list[threading.Thread], list[Any]]:
    outcomes: list[Any] = [None] * len(pairs)

    def run(index: int) -> None:
        try:
            outcomes[index] = lanes.run(*pairs[index])
        except Exception as error:
            outcomes[index] = error

    threads = []
    for index in range(len(pairs)):
        thread = threading.Thread(target=run, args=(index,))
        thread.start()
        threads.append(thread)
        time.sleep(pause)
    return threads, outcomes


def waiting(lanes: Lanes) -> int:
    return sum(len(lane.waiting) for lane in list(lanes._lanes.values()))


def wait_for(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < deadline
        time.sleep(0.001)


def test_a_command_on_an_idle_lane_runs_at_once_alone() -> None:
    loop = Loop()
    lanes = lanes_over(loop)
    result = lanes.run(*sale("S1"))
    assert isinstance(result, r.SaleResult) and result.sale_id == "S1"
    assert loop.groups == [["S1"]]
    assert lanes._lanes == {}


def test_commands_that_wait_together_run_as_one_group_in_arrival_order() -> None:
    loop = Loop()
    lanes = lanes_over(loop)
    loop.hold.clear()
    first, first_outcome = submit_in_threads(lanes, [sale("S0")])
    wait_for(loop.entered.is_set)  # S0 runs alone and holds the ledger
    threads, outcomes = submit_in_threads(lanes, [sale(f"S{i}") for i in range(1, 6)],
                                          pause=0.01)
    wait_for(lambda: waiting(lanes) == 5)
    loop.hold.set()
    for thread in [*first, *threads]:
        thread.join(30)
    assert loop.groups == [["S0"], ["S1", "S2", "S3", "S4", "S5"]]
    assert [o.sale_id for o in first_outcome + outcomes] == [f"S{i}" for i in range(6)]
    assert lanes._lanes == {}


def test_each_thread_gets_its_own_outcome_and_only_its_own_error() -> None:
    def decide(command: c.Command) -> Outcome:
        assert isinstance(command, c.SellStock)
        if command.sale_id == "S2":
            return InsufficientStock("sale S2", "O", "HOT", 1, 0)
        return answer(command)

    loop = Loop(decide)
    lanes = lanes_over(loop)
    with loop.lock:  # the ledger is busy: all four wait and go as one group
        threads, outcomes = submit_in_threads(lanes, [sale(f"S{i}") for i in range(4)])
        wait_for(lambda: waiting(lanes) == 4)
    for thread in threads:
        thread.join(30)
    assert loop.groups == [["S0", "S1", "S2", "S3"]]
    assert isinstance(outcomes[2], InsufficientStock)
    assert [o.sale_id for i, o in enumerate(outcomes) if i != 2] == ["S0", "S1", "S3"]


def test_a_command_not_decided_in_its_group_goes_first_in_the_next() -> None:
    deferred_once: set[str] = set()

    def decide(command: c.Command) -> Outcome:
        assert isinstance(command, c.SellStock)
        if command.sale_id in ("S1", "S2") and command.sale_id not in deferred_once:
            deferred_once.add(command.sale_id)
            return None
        return answer(command)

    loop = Loop(decide)
    lanes = lanes_over(loop)
    with loop.lock:
        threads, outcomes = submit_in_threads(lanes, [sale(f"S{i}") for i in range(4)])
        wait_for(lambda: waiting(lanes) == 4)
    for thread in threads:
        thread.join(30)
    assert loop.groups == [["S0", "S1", "S2", "S3"], ["S1", "S2"]]
    assert [o.sale_id for o in outcomes] == ["S0", "S1", "S2", "S3"]
    assert lanes._lanes == {}


def test_other_streams_are_other_lanes() -> None:
    loop = Loop()
    lanes = lanes_over(loop)
    with loop.lock:
        threads, outcomes = submit_in_threads(
            lanes, [sale("A1", "A"), sale("B1", "B"), sale("A2", "A"), sale("B2", "B")])
        wait_for(lambda: waiting(lanes) == 4)
        assert len(lanes._lanes) == 2
    for thread in threads:
        thread.join(30)
    assert sorted(loop.groups) == [["A1", "A2"], ["B1", "B2"]]
    assert [o.sale_id for o in outcomes] == ["A1", "B1", "A2", "B2"]


def test_a_group_is_at_most_max_group_commands() -> None:
    loop = Loop()
    lanes = lanes_over(loop)
    count = MAX_GROUP + 3
    with loop.lock:
        threads, outcomes = submit_in_threads(lanes, [sale(f"S{i}") for i in range(count)])
        wait_for(lambda: waiting(lanes) == count)
    for thread in threads:
        thread.join(30)
    assert [len(group) for group in loop.groups] == [MAX_GROUP, 3]
    assert [o.sale_id for o in outcomes] == [f"S{i}" for i in range(count)]


def test_a_loop_that_fails_fails_every_command_of_its_group_and_hands_the_lane_on() -> None:
    calls = []

    def run_group(pairs: Sequence[Pair]) -> list[Outcome]:
        calls.append(len(pairs))
        if len(calls) == 1:
            raise ConnectionError("store gone")
        return [answer(command) for command, _ in pairs]

    lock = threading.RLock()
    lanes = Lanes(run_group, lambda: lock)
    with lock:
        threads, outcomes = submit_in_threads(lanes, [sale(f"S{i}") for i in range(3)])
        wait_for(lambda: waiting(lanes) == 3)
    for thread in threads:
        thread.join(30)
    assert all(isinstance(o, ConnectionError) for o in outcomes)
    assert lanes._lanes == {}
    assert calls == [3]
    assert lanes.run(*sale("S9")).sale_id == "S9"  # type: ignore[attr-defined]
    assert calls == [3, 1]
