"""Concurrent tills on one PostgreSQL store: separate OS processes, one SKU, limited stock."""

from __future__ import annotations

import multiprocessing
import traceback
from collections import Counter
from datetime import UTC, datetime, timedelta
from multiprocessing.synchronize import Barrier
from typing import Any

import pytest

from ledger.app.service import Ledger
from ledger.domain import identity
from ledger.domain.errors import InsufficientStock
from ledger.domain.sale import Sale
from ledger.events import BatchExpired, SaleRecorded, StockSold
from ledger.store.application import SNAPSHOT_INTERVAL

pytestmark = pytest.mark.postgres

OUTLET = "TILLS-1"
SKU = "AMOX-500"
PROCESSES = 8
SALES_PER_PROCESS = 15
STOCK = 60
JOIN_TIMEOUT = 60.0

Outcome = tuple[Any, ...]


def _context() -> multiprocessing.context.SpawnContext:
    return multiprocessing.get_context("spawn")


def _stored_events(ledger: Ledger) -> list[Any]:
    app = ledger.application
    return [app.mapper.to_domain_event(n)
            for n in app.recorder.select_notifications(start=1, limit=100_000)]


def _run_workers(target: Any, args: list[tuple[Any, ...]]) -> list[Outcome]:
    """Start one spawned process per args tuple, collect what each put on the queue."""
    context = _context()
    queue = context.Queue()
    processes = [context.Process(target=target, args=(*a, queue)) for a in args]
    for process in processes:
        process.start()
    outcomes: list[Outcome] = []
    finished = 0
    while finished < len(processes):
        item = queue.get(timeout=JOIN_TIMEOUT)
        if item == ("finished",):
            finished += 1
        else:
            outcomes.append(item)
    for process in processes:
        process.join(timeout=JOIN_TIMEOUT)
        assert process.exitcode == 0, f"worker exited with {process.exitcode}"
    return outcomes


# --------------------------------------------------------------------------- workers
# Run in spawned children: module-level so that the child can import them.


def _sell_one_at_a_time(url: str, worker: int, barrier: Barrier, queue: Any) -> None:
    try:
        with Ledger.open(url) as ledger:
            barrier.wait(timeout=JOIN_TIMEOUT)
            for n in range(SALES_PER_PROCESS):
                sale_id = f"W{worker}-S{n}"
                try:
                    result = ledger.sell(outlet=OUTLET, sale_id=sale_id, lines=[(SKU, 1)],
                                         actor=f"till-{worker}")
                except InsufficientStock as refused:
                    queue.put(("refused", sale_id, refused.sku, refused.asked,
                               refused.available))
                else:
                    queue.put(("sold", sale_id,
                               tuple((t.batch_id, t.quantity) for t in result.lines[0].takes),
                               result.replayed))
            queue.put(("retries", worker, ledger.conflict_retries))
    except BaseException:
        queue.put(("error", worker, traceback.format_exc()))
    finally:
        queue.put(("finished",))


def _sell_same_sale(url: str, worker: int, rounds: int, barrier: Barrier, queue: Any) -> None:
    try:
        with Ledger.open(url) as ledger:
            for n in range(rounds):
                barrier.wait(timeout=JOIN_TIMEOUT)
                result = ledger.sell(outlet=OUTLET, sale_id=f"DUP-{n}",
                                     lines=[(SKU, 2), ("PARA-250", 1)], actor="till")
                queue.put(("sold", n, worker, result.replayed,
                           result.model_dump(mode="json", exclude={"replayed"})))
    except BaseException:
        queue.put(("error", worker, traceback.format_exc()))
    finally:
        queue.put(("finished",))


def _sweep(url: str, worker: int, rounds: int, barrier: Barrier, queue: Any) -> None:
    try:
        with Ledger.open(url) as ledger:
            for n in range(rounds):
                barrier.wait(timeout=JOIN_TIMEOUT)
                result = ledger.expire(outlet=f"SWEEP-{n}")
                queue.put(("expired", n, worker,
                           tuple((e.outlet, e.sku, e.batch_id, e.quantity)
                                 for e in result.expired)))
    except BaseException:
        queue.put(("error", worker, traceback.format_exc()))
    finally:
        queue.put(("finished",))


# --------------------------------------------------------------------------- tests


def test_concurrent_tills_never_oversell_nor_lose_a_sale(postgres_url: str) -> None:
    with Ledger.open(postgres_url, create_tables=True) as ledger:
        for batch in ("B1", "B2", "B3"):
            ledger.receive(outlet=OUTLET, sku=SKU, batch_id=batch, quantity=STOCK // 3)
    barrier = _context().Barrier(PROCESSES)
    outcomes = _run_workers(_sell_one_at_a_time,
                            [(postgres_url, w, barrier) for w in range(PROCESSES)])

    errors = [o for o in outcomes if o[0] == "error"]
    assert errors == [], errors[0][2] if errors else ""
    retries = sum(o[2] for o in outcomes if o[0] == "retries")
    assert retries > 0, "the tills never collided: the race was not exercised"
    sold = [o for o in outcomes if o[0] == "sold"]
    refused = [o for o in outcomes if o[0] == "refused"]
    assert len(sold) + len(refused) == PROCESSES * SALES_PER_PROCESS
    assert len(sold) == STOCK, f"{len(sold)} units sold from a stock of {STOCK}"
    assert all(replayed is False for *_, replayed in sold)
    assert all(sum(q for _, q in takes) == 1 for _, _, takes, _ in sold)
    # Every refusal is a clean InsufficientStock naming the line: nothing was left.
    assert all((sku, asked, available) == (SKU, 1, 0) for _, _, sku, asked, available in refused)

    with Ledger.open(postgres_url) as ledger:
        item = ledger.stock_item(OUTLET, SKU)
        assert item.on_hand == 0
        assert item.shortfall == 0
        assert all(b.quantity == 0 for b in item.batches.values())
        taken = Counter[str]()
        for _, sale_id, takes, _ in sold:
            sale = ledger.application.load(identity.sale_id(sale_id))
            assert isinstance(sale, Sale), f"acknowledged sale {sale_id} is not in the store"
            recorded = tuple((t.batch_id, t.quantity) for t in sale.lines[SKU].takes)
            assert recorded == takes
            for batch_id, quantity in takes:
                taken[batch_id] += quantity
        assert taken == Counter({"B1": 20, "B2": 20, "B3": 20})
        for _, sale_id, *_ in refused:
            assert ledger.application.load(identity.sale_id(sale_id)) is None
        events = _stored_events(ledger)
        sold_events = [e for e in events if isinstance(e, StockSold)]
        assert sorted(e.sale_id for e in sold_events) == sorted(o[1] for o in sold)
        assert len([e for e in events if isinstance(e, SaleRecorded)]) == STOCK


def test_same_sale_from_two_processes_is_recorded_once(postgres_url: str) -> None:
    rounds = 12
    with Ledger.open(postgres_url, create_tables=True) as ledger:
        ledger.receive(outlet=OUTLET, sku=SKU, batch_id="B1", quantity=100)
        ledger.receive(outlet=OUTLET, sku="PARA-250", batch_id="P1", quantity=100)
    barrier = _context().Barrier(2)
    outcomes = _run_workers(_sell_same_sale, [(postgres_url, w, rounds, barrier)
                                              for w in range(2)])
    errors = [o for o in outcomes if o[0] == "error"]
    assert errors == [], errors[0][2] if errors else ""
    by_round: dict[int, list[Outcome]] = {}
    for outcome in outcomes:
        by_round.setdefault(outcome[1], []).append(outcome)
    assert sorted(by_round) == list(range(rounds))
    for n, answers in by_round.items():
        assert len(answers) == 2
        assert sorted(a[3] for a in answers) == [False, True], f"round {n}: {answers}"
        assert answers[0][4] == answers[1][4], f"round {n}: the two callers were told apart"
    with Ledger.open(postgres_url) as ledger:
        assert ledger.stock_item(OUTLET, SKU).on_hand == 100 - 2 * rounds
        assert ledger.stock_item(OUTLET, "PARA-250").on_hand == 100 - rounds
        sold = Counter(e.sale_id for e in _stored_events(ledger) if isinstance(e, StockSold))
        assert sold == Counter({f"DUP-{n}": 2 for n in range(rounds)})


def test_concurrent_expiry_sweeps_expire_each_batch_once(postgres_url: str) -> None:
    rounds, skus, sweepers = 4, 3, 3
    expiry = datetime.now(UTC).date() - timedelta(days=2)
    long_ago = datetime.now(UTC) - timedelta(days=30)
    with Ledger.open(postgres_url, create_tables=True) as ledger:
        for n in range(rounds):
            for s in range(skus):
                for b in range(2):
                    ledger.receive(outlet=f"SWEEP-{n}", sku=f"SKU-{s}", batch_id=f"B{b}",
                                   quantity=5 + b, expires_on=expiry, occurred_at=long_ago)
                ledger.receive(outlet=f"SWEEP-{n}", sku=f"SKU-{s}", batch_id="FRESH",
                               quantity=9)
    barrier = _context().Barrier(sweepers)
    outcomes = _run_workers(_sweep, [(postgres_url, w, rounds, barrier)
                                     for w in range(sweepers)])
    errors = [o for o in outcomes if o[0] == "error"]
    assert errors == [], errors[0][2] if errors else ""
    reported = Counter(batch for *_, expired in outcomes for batch in expired)
    expected = {(f"SWEEP-{n}", f"SKU-{s}", f"B{b}", 5 + b)
                for n in range(rounds) for s in range(skus) for b in range(2)}
    assert set(reported) == expected
    assert all(times == 1 for times in reported.values()), reported
    with Ledger.open(postgres_url) as ledger:
        stored = Counter((e.outlet, e.sku, e.batch_id, e.quantity)
                         for e in _stored_events(ledger) if isinstance(e, BatchExpired))
        assert stored == Counter(dict.fromkeys(expected, 1))
        for n in range(rounds):
            for s in range(skus):
                assert ledger.stock_item(f"SWEEP-{n}", f"SKU-{s}").batch_quantities() == {
                    "FRESH": 9}


def test_a_till_that_lost_a_race_writes_next(postgres_url: str) -> None:
    """While a till that lost a race holds a stream's lock, other tills' appends to that
    stream fail as conflicts (so they queue behind it instead of winning again); appends of
    new streams and of the lock holder go through."""
    import threading

    from eventsourcing.persistence import IntegrityError

    with Ledger.open(postgres_url, create_tables=True) as ledger, \
            Ledger.open(postgres_url) as other:
        ledger.receive(outlet=OUTLET, sku=SKU, batch_id="B1", quantity=10)
        app = ledger.application
        stream = identity.stock_item_id(OUTLET, SKU)
        held, release = threading.Event(), threading.Event()

        def hold() -> None:
            with app.writer_queue.serialised([stream]):
                held.set()
                release.wait(timeout=JOIN_TIMEOUT)

        holder = threading.Thread(target=hold)
        holder.start()
        assert held.wait(timeout=JOIN_TIMEOUT)
        try:
            item = other.application.load(stream)
            assert item is not None
            pending = other.application.mapper.to_stored_event(
                _next_event(item))
            with pytest.raises(IntegrityError, match="lost a race"):
                other.application.recorder.insert_events([pending])
            other.application.recorder.insert_events([pending], serialised=True)
        finally:
            release.set()
            holder.join(timeout=JOIN_TIMEOUT)
        # Released: an ordinary sale goes through at once.
        sold = other.sell(outlet=OUTLET, sale_id="AFTER", lines=[(SKU, 1)])
        assert sold.lines[0].quantity == 1


def test_after_losing_a_race_a_till_queues_first_for_a_while(
        postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A till that lost a race on a stream decides its next commands on that stream in the
    stream's queue, on fresh state, instead of losing again on its stale cache; once the
    stream has been quiet for a while it goes back to appending optimistically."""
    import time

    from ledger.store.postgres import queued_writers


    monkeypatch.setattr(queued_writers, "QUEUE_AFTER_CONFLICT_SECONDS", 2.0)
    with Ledger.open(postgres_url, create_tables=True) as till, \
            Ledger.open(postgres_url) as other:
        till.receive(outlet=OUTLET, sku=SKU, batch_id="B1", quantity=100)
        sales = iter(range(100))

        def sell(ledger: Ledger) -> None:
            ledger.sell(outlet=OUTLET, sale_id=f"S{next(sales)}", lines=[(SKU, 1)])

        sell(till)  # cached by the till
        sell(other)  # the till's cached stock item is now a version behind
        sell(till)
        assert till.conflict_retries == 1
        sell(other)
        sell(till)  # behind again, but queued first: decided on fresh state, no race lost
        assert till.conflict_retries == 1
        time.sleep(2.1)
        sell(other)
        sell(till)  # the stream was quiet: optimistic again, and behind, so it loses once
        assert till.conflict_retries == 2
        assert till.stock_level(outlet=OUTLET, sku=SKU).on_hand == 100 - 7


def test_a_till_runs_every_command_on_one_connection_queued_or_not(postgres_url: str) -> None:
    """A till runs one command at a time, so its pool keeps one connection and opens no
    other: a second would take every other command (the pool hands idle connections out
    in turn), on a server process whose caches are cold. In a stream's queue too, where
    the stale outlet is read on the lock's connection and the snapshot is written after."""
    with Ledger.open(postgres_url, create_tables=True) as till, \
            Ledger.open(postgres_url) as other:
        till.receive(outlet=OUTLET, sku=SKU, batch_id="B1", quantity=1000)
        till.sell(outlet=OUTLET, sale_id="T0", lines=[(SKU, 1)])
        item_id = identity.stock_item_id(OUTLET, SKU)
        sold = 0
        while other.stock_item(OUTLET, SKU).version < SNAPSHOT_INTERVAL - 1:
            other.sell(outlet=OUTLET, sale_id=f"O{sold}", lines=[(SKU, 1)])
            sold += 1
        # Behind by many versions: loses the race, then sells in the queue, crossing the
        # snapshot interval.
        till.sell(outlet=OUTLET, sale_id="T1", lines=[(SKU, 1)])
        assert till.conflict_retries == 1
        assert till.stock_item(OUTLET, SKU).version == SNAPSHOT_INTERVAL
        snapshots = till.application.snapshots
        assert snapshots is not None
        assert [s.originator_version for s in snapshots.get(item_id)] == [SNAPSHOT_INTERVAL]
        assert till.application.recorder.datastore.pool.get_stats()[  # type: ignore[attr-defined]
            "connections_num"] == 1


def test_a_connection_opened_beyond_the_kept_one_is_closed_once_unused(
        postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """When a checkout finds no idle connection (another thread holds it, or the kept one is
    being replaced at its age limit) the pool opens another; once the till is back to one
    command at a time, the extra one goes, instead of taking every other command."""
    import time

    from ledger.store.postgres import recorder as postgres_recorder


    monkeypatch.setattr(postgres_recorder, "POOL_MAX_IDLE_SECONDS", 0.2)
    with Ledger.open(postgres_url, create_tables=True) as till:
        till.receive(outlet=OUTLET, sku=SKU, batch_id="B1", quantity=100_000)
        pool = till.application.recorder.datastore.pool  # type: ignore[attr-defined]
        elsewhere = pool.getconn()  # as another thread would hold it
        till.sell(outlet=OUTLET, sale_id="S0", lines=[(SKU, 1)])
        pool.putconn(elsewhere)
        assert pool.get_stats()["pool_size"] == 2
        sales, deadline = 1, time.monotonic() + 10
        while pool.get_stats()["pool_size"] > 1 and time.monotonic() < deadline:
            till.sell(outlet=OUTLET, sale_id=f"S{sales}", lines=[(SKU, 1)])
            sales += 1
        assert pool.get_stats()["pool_size"] == 1


def _next_event(item: Any) -> Any:
    """An event for the stream's next version, as a till would append it."""
    item = item.clone()
    item.set_reorder_level(3, "test")
    return item.pending_events[-1]


def test_a_till_gives_up_on_a_stream_another_till_holds_too_long(postgres_url: str) -> None:
    """A till that froze holding a stream's lock makes the next one fail cleanly, after the
    store's lock timeout, instead of hanging the queue for ever."""
    import threading

    from ledger.domain.errors import ConcurrencyConflict

    with Ledger.open(postgres_url, create_tables=True) as ledger, \
            Ledger.open(postgres_url) as other:
        ledger.receive(outlet=OUTLET, sku=SKU, batch_id="B1", quantity=10)
        stream = identity.stock_item_id(OUTLET, SKU)
        held, release = threading.Event(), threading.Event()

        def freeze() -> None:
            with ledger.application.writer_queue.serialised([stream]):
                held.set()
                release.wait(timeout=JOIN_TIMEOUT)

        frozen = threading.Thread(target=freeze)
        frozen.start()
        assert held.wait(timeout=JOIN_TIMEOUT)
        datastore: Any = other.application.recorder.datastore  # type: ignore[attr-defined]
        datastore.lock_timeout = 1
        try:
            with pytest.raises(ConcurrencyConflict, match="another till holds"), \
                    other.application.writer_queue.serialised([stream]):
                pass
        finally:
            release.set()
            frozen.join(timeout=JOIN_TIMEOUT)
        with other.application.writer_queue.serialised([stream]):  # released: taken at once
            pass


def _queue_key(ledger: Ledger, stream: Any) -> int:
    """The advisory lock key of a stream's queue in this ledger's store: the stream's key
    XORed with the store's events table's oid."""
    from ledger.store.postgres.values import stream_key

    recorder: Any = ledger.application.recorder
    with recorder.datastore.get_connection() as connection:
        row = connection.execute("SELECT %s::bigint # %s::regclass::oid::bigint AS key",
                                 (stream_key(stream), recorder._qualified_table)).fetchone()
    return int(row["key"])


def _lock_is_free(postgres_url: str, key: int) -> bool:
    import psycopg

    with psycopg.connect(postgres_url, autocommit=True) as probe:
        row = probe.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()
        assert row is not None
        if row[0]:
            probe.execute("SELECT pg_advisory_unlock(%s)", (key,))
        return bool(row[0])


def _pooled_sessions_are_clean(ledger: Ledger) -> None:
    """Every idle pooled connection is out of pipeline mode, holds no advisory lock and
    keeps the server's default lock timeout."""
    from psycopg import pq

    pool: Any = ledger.application.recorder.datastore.pool  # type: ignore[attr-defined]
    connections = [pool.getconn() for _ in range(pool.get_stats().get("pool_available", 1))]
    try:
        for connection in connections:
            assert connection.pgconn.pipeline_status == pq.PipelineStatus.OFF
            held = connection.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = %s",
                (connection.info.backend_pid,)).fetchone()
            assert held == {"count": 0} or held == (0,)
            timeout = connection.execute("SHOW lock_timeout").fetchone()
            assert timeout in ({"lock_timeout": "0"}, ("0",))
    finally:
        for connection in connections:
            pool.putconn(connection)


@pytest.mark.parametrize("outcome", ["committed", "conflict"])
def test_a_queued_append_releases_the_queue_as_it_ends(postgres_url: str, outcome: str) -> None:
    """The next till in a stream's queue need not wait for the holder to read its append's
    answer and ask for the release: the append releases the stream's lock itself, in the
    same round trip, whether it committed or failed."""
    from eventsourcing.persistence import IntegrityError

    with Ledger.open(postgres_url, create_tables=True) as ledger:
        ledger.receive(outlet=OUTLET, sku=SKU, batch_id="B1", quantity=10)
        app = ledger.application
        stream = identity.stock_item_id(OUTLET, SKU)
        with app.writer_queue.serialised([stream]):
            assert not _lock_is_free(postgres_url, _queue_key(ledger, stream))
            item = app.load(stream)
            event = app.mapper.to_stored_event(_next_event(item))
            if outcome == "conflict":
                event = type(event)(originator_id=event.originator_id,
                                    originator_version=event.originator_version - 1,
                                    topic=event.topic, state=event.state)
                with pytest.raises(IntegrityError):
                    app.recorder.insert_events([event], serialised=True)
            else:
                app.recorder.insert_events([event], serialised=True)
            assert _lock_is_free(postgres_url, _queue_key(ledger, stream))
        _pooled_sessions_are_clean(ledger)
        # Neither blocks nor loses what was recorded.
        ledger.sell(outlet=OUTLET, sale_id="AFTER", lines=[(SKU, 1)])
        level = ledger.stock_level(OUTLET, SKU)
        assert level.on_hand == 9
        assert ledger.stock_item(OUTLET, SKU).reorder_level == (
            3 if outcome == "committed" else None)


def test_a_queue_left_without_an_append_is_released(postgres_url: str) -> None:
    with Ledger.open(postgres_url, create_tables=True) as ledger:
        ledger.receive(outlet=OUTLET, sku=SKU, batch_id="B1", quantity=10)
        stream = identity.stock_item_id(OUTLET, SKU)
        with pytest.raises(RuntimeError), ledger.application.writer_queue.serialised([stream]):
            raise RuntimeError("the decision failed")
        assert _lock_is_free(postgres_url, _queue_key(ledger, stream))
        _pooled_sessions_are_clean(ledger)


def test_the_queue_brings_cached_streams_up_to_date_as_a_fresh_read_would(
        postgres_url: str) -> None:
    """The events read with the queue's locks (binary rows) are the ones the store returns
    to any reader: same ids, versions, topics and bytes."""
    with Ledger.open(postgres_url, create_tables=True) as ledger, \
            Ledger.open(postgres_url) as other:
        ledger.receive(outlet=OUTLET, sku=SKU, batch_id="B1", quantity=10)
        stream = identity.stock_item_id(OUTLET, SKU)
        cached = ledger.application.load(stream)
        assert cached is not None
        before = cached.version
        other.receive(outlet=OUTLET, sku=SKU, batch_id="B2-é✓", quantity=5)
        other.sell(outlet=OUTLET, sale_id="S-1", lines=[(SKU, 12)])
        recorder: Any = ledger.application.recorder
        with recorder.streams_locked([1], [(stream, before)]) as newer:
            pass
        assert newer == list(recorder.select_events(stream, gt=before))
        assert newer == recorder.select_events_after([(stream, before)])
        assert [e.originator_version for e in newer] == list(
            range(before + 1, before + 1 + len(newer)))
        assert len(newer) >= 2


def test_a_retried_queued_append_whose_locks_are_gone_passes_the_gate(
        postgres_url: str) -> None:
    """An append retried after the one that released the queue's locks (the library retries
    on a dropped connection) no longer holds them: while another till heads the stream's
    queue, it must fail as a lost race instead of overtaking it."""
    import psycopg
    from eventsourcing.persistence import IntegrityError

    with Ledger.open(postgres_url, create_tables=True) as ledger:
        ledger.receive(outlet=OUTLET, sku=SKU, batch_id="B1", quantity=10)
        app = ledger.application
        stream = identity.stock_item_id(OUTLET, SKU)
        with app.writer_queue.serialised([stream]):
            item = app.load(stream)
            first = _next_event(item)
            app.recorder.insert_events([app.mapper.to_stored_event(first)], serialised=True)
            with psycopg.connect(postgres_url, autocommit=True) as other_till:
                other_till.execute("SELECT pg_advisory_lock(%s)", (_queue_key(ledger, stream),))
                retried = type(first)(**{**first.__dict__,
                                         "originator_version": first.originator_version + 1})
                with pytest.raises(IntegrityError, match="lost a race"):
                    app.recorder.insert_events([app.mapper.to_stored_event(retried)],
                                               serialised=True)


def test_a_queue_that_times_out_on_its_second_stream_releases_its_first(
        postgres_url: str) -> None:
    import psycopg

    from ledger.domain.errors import ConcurrencyConflict
    from ledger.store.postgres.values import stream_key

    with Ledger.open(postgres_url, create_tables=True) as ledger:
        first, second = sorted([identity.stock_item_id(OUTLET, "A"),
                                identity.stock_item_id(OUTLET, "B")], key=stream_key)
        datastore: Any = ledger.application.recorder.datastore  # type: ignore[attr-defined]
        datastore.lock_timeout = 1
        with psycopg.connect(postgres_url, autocommit=True) as other_till:
            other_till.execute("SELECT pg_advisory_lock(%s)", (_queue_key(ledger, second),))
            with pytest.raises(ConcurrencyConflict, match="another till holds"), \
                    ledger.application.writer_queue.serialised([first, second]):
                pass
            assert _lock_is_free(postgres_url, _queue_key(ledger, first))
        _pooled_sessions_are_clean(ledger)


def test_a_queued_append_that_fails_before_it_is_sent_leaves_no_lock(
        postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:

    with Ledger.open(postgres_url, create_tables=True) as ledger:
        ledger.receive(outlet=OUTLET, sku=SKU, batch_id="B1", quantity=10)
        app = ledger.application
        stream = identity.stock_item_id(OUTLET, SKU)

        def broken(*args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("could not write the arguments")

        with pytest.raises(RuntimeError), app.writer_queue.serialised([stream]):
            event = app.mapper.to_stored_event(_next_event(app.load(stream)))
            from ledger.store.postgres import recorder as postgres_recorder
            monkeypatch.setattr(postgres_recorder, "append_parameters", broken)
            app.recorder.insert_events([event], serialised=True)
        monkeypatch.undo()
        assert _lock_is_free(postgres_url, _queue_key(ledger, stream))
        _pooled_sessions_are_clean(ledger)
        ledger.sell(outlet=OUTLET, sale_id="AFTER", lines=[(SKU, 1)])


def test_stores_in_other_schemas_queue_apart(postgres_url: str) -> None:
    """Two stores in one database hold the same stream ids for the same outlet and SKU: a
    till queued on one store's stream must not turn the other store's appends to its own
    stream into lost races."""
    import psycopg

    with psycopg.connect(postgres_url, autocommit=True) as connection:
        connection.execute("CREATE SCHEMA elsewhere")
    with Ledger.open(postgres_url, create_tables=True) as here, \
            Ledger.open(f"{postgres_url}?schema=elsewhere", create_tables=True) as there:
        for ledger in (here, there):
            ledger.receive(outlet=OUTLET, sku=SKU, batch_id="B1", quantity=10)
        stream = identity.stock_item_id(OUTLET, SKU)
        assert _queue_key(here, stream) != _queue_key(there, stream)
        with here.application.writer_queue.serialised([stream]):
            there.sell(outlet=OUTLET, sale_id="S-1", lines=[(SKU, 1)])
            assert there.conflict_retries == 0
            assert not _lock_is_free(postgres_url, _queue_key(here, stream))
            assert _lock_is_free(postgres_url, _queue_key(there, stream))
