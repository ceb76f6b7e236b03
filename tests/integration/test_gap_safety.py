"""Gap safety: projections following many concurrent writers apply every committed event once.

PostgreSQL hands out notification ids when rows are inserted, but rows become visible when
their transactions commit. A reader that has passed id 11 never looks at id 10 again, so the
write side must never let a lower id become visible after a higher one (docs/ordering.md).

The scenario here: 8 writer processes (spawned, each with its own `Ledger`) append receipts and
sales on their own SKUs and on shared ones, while in the test process
- the ledger's own appends abort: concurrency conflicts on the shared SKUs, and deliberate reuse
  of a recorded sale id under a fresh key (a `DuplicateReference` raised at insert);
- a saboteur aborts transactions that inserted rows (through the recorder's append function,
  and by plain INSERT) and burns sequence values outside any insert: gaps in the ids;
- a holder appends a valid stock item stream through the recorder's own protocol (its append
  statement) inside a transaction it keeps open for up to a second before committing (or,
  sometimes, rolling back): an in-flight append that readers must not pass;
- an idle reader sits in an open REPEATABLE READ transaction for the whole run;
- two projection runners follow the store: `projections.follow.follow` (LISTEN/NOTIFY) and a
  `ReadModels.catch_up` loop, racing each other.

At the end every committed event must have been handed to each projection exactly once
(observed where the runner hands them over), the journal must equal `costed_journal` over all
events, `verify_read_models` must find nothing, the runners' position must be the head, and
the hash chain must be unbroken.

A negative control checks that the oracle can fail: two writers that skip the append protocol
and commit out of order make a runner skip an event, and both the exactly-once check and the
hash chain (sealed in between) notice.
"""

from __future__ import annotations

import multiprocessing
import random
import secrets
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from multiprocessing.synchronize import Barrier
from typing import Any

import psycopg
import pytest
from psycopg import sql

from ledger.app.audit import verify_chain
from ledger.app.service import Ledger
from ledger.domain.errors import DuplicateReference, InsufficientStock
from ledger.domain.journal_costs import costed_journal
from ledger.domain.quantities import BatchIdentity
from ledger.domain.stock_item import MovementContext, StockItem
from ledger.store.application import LedgerApplication, open_application
from projections import runner
from projections.follow import follow
from projections.journal import COLUMNS as JOURNAL_COLUMNS
from projections.runner import ReadModels, create_read_models
from projections.verify import verify_read_models
from tests.appending import append_in
from tests.databases import admin_url, database_url

pytestmark = pytest.mark.postgres

OUTLET = "GAPS-1"
SHARED_SKUS = ("SHARED-A", "SHARED-B", "SHARED-C")
WRITERS = 8
DEFAULT_SECONDS = 10.0
SOAK_SECONDS = 60.0
CATCH_UP_TIMEOUT = 120.0
JOIN_TIMEOUT = 120.0


# --------------------------------------------------------------------------- writers
# Run in spawned children: module level so that the child can import them.


def _writer(url: str, worker: int, seconds: float, barrier: Barrier, queue: Any) -> None:
    counts: Counter[str] = Counter()
    try:
        with Ledger.open(url) as ledger:
            own = f"OWN-{worker}"
            barrier.wait(timeout=JOIN_TIMEOUT)
            deadline = time.monotonic() + seconds
            last_sale: str | None = None
            n = 0
            while time.monotonic() < deadline:
                shared = SHARED_SKUS[(worker + n) % len(SHARED_SKUS)]
                ledger.receive(outlet=OUTLET, sku=own, batch_id=f"W{worker}-B{n}", quantity=3,
                               actor=f"till-{worker}")
                counts["receipts"] += 1
                if n % 3 == 0:
                    ledger.receive(outlet=OUTLET, sku=shared, batch_id=f"W{worker}-B{n}",
                                   quantity=2, actor=f"till-{worker}")
                    counts["receipts"] += 1
                sale_id = f"W{worker}-S{n}"
                try:
                    ledger.sell(outlet=OUTLET, sale_id=sale_id, lines=[(own, 2), (shared, 1)],
                                actor=f"till-{worker}")
                except InsufficientStock:
                    counts["refused"] += 1
                else:
                    counts["sales"] += 1
                    last_sale = sale_id
                if n % 4 == 3 and last_sale is not None:
                    # A recorded sale id under a fresh key: decided, then refused by the
                    # event store's uniqueness at insert (an aborted, id-consuming append).
                    try:
                        ledger.sell(outlet=OUTLET, sale_id=last_sale, lines=[(own, 1)],
                                    key=f"dup:{worker}:{n}", actor=f"till-{worker}")
                    except DuplicateReference:
                        counts["duplicates_refused"] += 1
                    else:
                        counts["duplicates_accepted"] += 1
                n += 1
            counts["conflict_retries"] = ledger.conflict_retries
        queue.put(("counts", worker, dict(counts)))
    except BaseException:
        queue.put(("error", worker, traceback.format_exc()))
    finally:
        queue.put(("finished", worker, None))


# --------------------------------------------------------------------------- helpers


def _observe(patch: pytest.MonkeyPatch, seen: dict[str, Counter[int]],
             lock: threading.Lock) -> None:
    """Count the positions each projection in `seen` commits, whether it folds the event or
    skips it as one no read model reads.

    A commit that returns has committed its batch and the projections' new positions (a
    database error would show up here as a double count: the check fails loudly rather than
    silently)."""
    original = runner.ReadModels.commit

    def observed(models: runner.ReadModels, generations: dict[str, int],
                 before: dict[str, int], batch: runner.Batch, prepared: dict[str, Any], *,
                 live: bool) -> None:
        original(models, generations, before, batch, prepared, live=live)
        with lock:
            for name in generations.keys() & seen.keys():
                seen[name].update(p for p, _ in batch.decoded if p > before[name])

    patch.setattr(runner.ReadModels, "commit", observed)


def _table(app: LedgerApplication) -> sql.Identifier:
    recorder: Any = app.recorder
    return sql.Identifier(recorder.datastore.schema, recorder.events_table_name)


def _stream_rows(app: LedgerApplication, sku: str, actor: str) -> list[Any]:
    """Valid stored events of a new stock item with one batch: a stream the recorder would
    write, and one whose skipping the journal would show."""
    item = StockItem.open(OUTLET, sku)
    context = MovementContext(datetime.now(UTC), actor, sku, f"{actor}:{sku}")
    item.receive(BatchIdentity(batch_id=f"{sku}-B", quantity=7), context)
    return [app.mapper.to_stored_event(event) for event in item.collect_events()]


def _insert(connection: psycopg.Connection[Any], app: LedgerApplication,
            rows: Sequence[Any]) -> list[int]:
    statement = sql.SQL("INSERT INTO {} (originator_id, originator_version, topic, state) "
                        "VALUES (%s, %s, %s, %s) RETURNING notification_id").format(_table(app))
    ids = []
    for row in rows:
        found = connection.execute(statement, (row.originator_id, row.originator_version,
                                               row.topic, row.state)).fetchone()
        assert found is not None
        ids.append(int(found[0]))
    return ids


def _committed_ids(url: str, app: LedgerApplication) -> list[int]:
    with psycopg.connect(url) as connection:
        return [int(row[0]) for row in connection.execute(
            sql.SQL("SELECT notification_id FROM {} ORDER BY notification_id")
            .format(_table(app))).fetchall()]


def _guarded(errors: list[str], target: Callable[..., None], *args: Any) -> threading.Thread:
    def run() -> None:
        try:
            target(*args)
        except BaseException:
            errors.append(traceback.format_exc())

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


# --------------------------------------------------------------------------- saboteurs


@dataclass
class Sabotage:
    rolled_back_appended: int = 0
    rolled_back_inserted: int = 0
    burned: int = 0
    held_committed: list[int] = field(default_factory=list)
    held_rolled_back: list[int] = field(default_factory=list)
    held_seconds: float = 0.0


def _abort(url: str, app: LedgerApplication, stop: threading.Event, log: Sabotage) -> None:
    """Transactions that insert rows and roll back, and sequence values burnt outright."""
    with psycopg.connect(url, autocommit=True) as connection:
        row = connection.execute(
            "SELECT pg_get_serial_sequence(%s, 'notification_id')",
            (_table(app).as_string(connection),)).fetchone()
        assert row is not None and row[0]
        sequence = str(row[0])
        k = 0
        while not stop.wait(random.uniform(0.005, 0.04)):
            if k % 3 == 2:
                connection.execute("SELECT nextval(%s)", (sequence,))
                log.burned += 1
            else:
                with connection.transaction(force_rollback=True):
                    rows = _stream_rows(app, f"ABORTED-{k}", "aborter")
                    if k % 3 == 0:
                        append_in(connection, app, rows)
                    else:
                        _insert(connection, app, rows)
                    time.sleep(random.uniform(0, 0.02))
                if k % 3 == 0:
                    log.rolled_back_appended += 1
                else:
                    log.rolled_back_inserted += 1
            k += 1


def _hold(url: str, app: LedgerApplication, stop: threading.Event, log: Sabotage) -> None:
    """The recorder's append protocol, with the transaction kept open before it ends."""
    with psycopg.connect(url, autocommit=True) as connection:
        k = 0
        while not stop.wait(random.uniform(0.8, 1.6)):
            commit = k % 3 != 2
            started = time.monotonic()
            with connection.transaction(force_rollback=not commit):
                ids = append_in(connection, app, _stream_rows(app, f"HELD-{k}", "holder"))
                time.sleep(random.uniform(0.3, 1.0))
            log.held_seconds += time.monotonic() - started
            (log.held_committed if commit else log.held_rolled_back).extend(ids)
            k += 1


def _idle_reader(url: str, stop: threading.Event) -> None:
    """A session idle in an open transaction with an old snapshot, for the whole run."""
    with psycopg.connect(url) as connection:
        connection.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        connection.execute("SELECT count(*) FROM notification_tracking").fetchone()
        stop.wait()
        connection.rollback()


def _catch_up_loop(app: LedgerApplication, stop: threading.Event) -> None:
    models = ReadModels(app)
    while not stop.is_set():
        models.catch_up()
        stop.wait(random.uniform(0, 0.05))


# --------------------------------------------------------------------------- the scenario


@dataclass
class Outcome:
    url: str
    seconds: float
    writers: Counter[str] = field(default_factory=Counter)
    sabotage: Sabotage = field(default_factory=Sabotage)
    seen: dict[str, Counter[int]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    caught_up_after: float = 0.0


def _run_writers(url: str, seconds: float, outcome: Outcome) -> None:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    barrier = context.Barrier(WRITERS)
    processes = [context.Process(target=_writer, args=(url, w, seconds, barrier, queue))
                 for w in range(WRITERS)]
    for process in processes:
        process.start()
    finished = 0
    while finished < WRITERS:
        kind, worker, payload = queue.get(timeout=JOIN_TIMEOUT + seconds)
        if kind == "finished":
            finished += 1
        elif kind == "error":
            outcome.errors.append(f"writer {worker}: {payload}")
        else:
            outcome.writers.update(payload)
    for process in processes:
        process.join(timeout=JOIN_TIMEOUT)
        if process.exitcode != 0:
            outcome.errors.append(f"writer exited with {process.exitcode}")


def run_scenario(url: str, seconds: float) -> Outcome:
    outcome = Outcome(url, seconds)
    with Ledger.open(url, create_tables=True) as ledger:
        create_read_models(ledger.application)
        for sku in SHARED_SKUS:
            ledger.receive(outlet=OUTLET, sku=sku, batch_id="OPENING", quantity=20)
    lock = threading.Lock()
    apps = [open_application(url) for _ in range(4)]
    follow_app, loop_app, abort_app, hold_app = apps
    sabotage_stop, runners_stop = threading.Event(), threading.Event()
    try:
        with pytest.MonkeyPatch.context() as patch:
            outcome.seen.update({name: Counter() for name in runner.PROJECTIONS})
            _observe(patch, outcome.seen, lock)
            threads = [
                _guarded(outcome.errors, follow, follow_app, runners_stop),
                _guarded(outcome.errors, _catch_up_loop, loop_app, runners_stop),
            ]
            saboteurs = [
                _guarded(outcome.errors, _abort, url, abort_app, sabotage_stop,
                         outcome.sabotage),
                _guarded(outcome.errors, _hold, url, hold_app, sabotage_stop,
                         outcome.sabotage),
                _guarded(outcome.errors, _idle_reader, url, sabotage_stop),
            ]
            try:
                _run_writers(url, seconds, outcome)
            finally:
                sabotage_stop.set()
                for thread in saboteurs:
                    thread.join(timeout=30)
            started = time.monotonic()
            models = ReadModels(follow_app)
            head = models.head()
            while min(models.positions().values()) < head:
                if time.monotonic() - started > CATCH_UP_TIMEOUT or outcome.errors:
                    break
                time.sleep(0.05)
            outcome.caught_up_after = time.monotonic() - started
            runners_stop.set()
            for thread in threads:
                thread.join(timeout=30)
                if thread.is_alive():
                    outcome.errors.append("a projection runner did not stop")
    finally:
        sabotage_stop.set()
        runners_stop.set()
        for app in apps:
            app.close()
    return outcome


# --------------------------------------------------------------------------- the checks


def assert_applied_exactly_once(outcome: Outcome) -> None:
    assert outcome.errors == [], "\n".join(outcome.errors)
    app = open_application(outcome.url)
    try:
        committed = _committed_ids(outcome.url, app)
        models = ReadModels(app)
        head = models.head()
        assert committed and committed[-1] == head

        # Every committed event applied once by each projection: none skipped, none twice.
        for name, seen in outcome.seen.items():
            missing = sorted(set(committed) - set(seen))
            assert missing == [], f"{name} never applied committed positions {missing[:20]}"
            phantom = sorted(set(seen) - set(committed))
            assert phantom == [], f"{name} applied positions never committed {phantom[:20]}"
            twice = sorted(p for p, n in seen.items() if n > 1)
            assert twice == [], f"{name} applied positions more than once {twice[:20]}"
        assert models.positions() == dict.fromkeys(outcome.seen, head)

        # The journal is exactly the movements of all events, and carries every
        # movement-bearing position.
        expected: list[tuple[Any, ...]] = list(costed_journal(
            (notification.id, app.mapper.to_domain_event(notification))
            for start in range(1, head + 1, 5000)
            for notification in app.recorder.select_notifications(start, 5000,
                                                                  stop=start + 4999)))
        with psycopg.connect(outcome.url) as connection:
            stored = [tuple(row) for row in connection.execute(
                "SELECT * FROM ledger_journal ORDER BY position, seq").fetchall()]
            columns = [c.name for c in connection.execute(
                "SELECT * FROM ledger_journal LIMIT 0").description or ()]
        assert tuple(columns) == JOURNAL_COLUMNS  # a journal row's, and its cost
        assert len(stored) == len(expected)
        first_difference = next((i for i, (a, b) in enumerate(zip(stored, expected, strict=True))
                                 if a != b), None)
        assert first_difference is None, (
            f"journal row {first_difference}: stored {stored[first_difference]}, "
            f"expected {expected[first_difference]}")
        assert {row[0] for row in stored} == {row[0] for row in expected}

        assert verify_read_models(app) == []

        # The run exercised what it claims to.
        sabotage, writers = outcome.sabotage, outcome.writers
        assert head > len(committed), "no gaps in the ids: nothing aborted"
        assert set(sabotage.held_committed) <= set(committed)
        assert not set(sabotage.held_rolled_back) & set(committed)
        journal_positions = {row[0] for row in stored}
        held_receipts = [p for p in sabotage.held_committed if p in journal_positions]
        assert len(held_receipts) * 2 == len(sabotage.held_committed) > 0
        assert sabotage.held_rolled_back, "no held transaction was rolled back"
        assert sabotage.rolled_back_appended and sabotage.rolled_back_inserted
        assert sabotage.burned
        assert writers["duplicates_refused"] > 0 and writers["duplicates_accepted"] == 0
        assert writers["conflict_retries"] > 0, "the writers never collided"
        assert writers["sales"] > 0
    finally:
        app.close()


def assert_chain_unbroken(outcome: Outcome) -> None:
    assert outcome.errors == [], "\n".join(outcome.errors)
    app = open_application(outcome.url)
    try:
        report = verify_chain(app)
        committed = _committed_ids(outcome.url, app)
        assert report.findings == []
        assert report.rows == len(committed)
        assert report.head_position == committed[-1]
    finally:
        app.close()


# --------------------------------------------------------------------------- tests


@pytest.fixture(scope="module")
def default_run() -> Iterator[Outcome]:
    """One ~10 s run shared by the default tests (it is the expensive part)."""
    admin = admin_url()
    dbname = f"stockledger_test_{secrets.token_hex(6)}"
    with psycopg.connect(admin, autocommit=True, connect_timeout=5) as connection:
        connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
    try:
        yield run_scenario(database_url(admin, dbname), DEFAULT_SECONDS)
    finally:
        with psycopg.connect(admin, autocommit=True, connect_timeout=5) as connection:
            connection.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
                               .format(sql.Identifier(dbname)))


def test_projections_apply_every_committed_event_exactly_once(default_run: Outcome) -> None:
    assert_applied_exactly_once(default_run)


def test_hash_chain_is_never_forked_by_concurrent_writers(default_run: Outcome) -> None:
    assert_chain_unbroken(default_run)


@pytest.mark.soak
def test_soak_a_minute_of_concurrent_writers_aborts_and_held_transactions(
        postgres_url: str) -> None:
    outcome = run_scenario(postgres_url, SOAK_SECONDS)
    assert_applied_exactly_once(outcome)
    assert_chain_unbroken(outcome)


def test_oracle_detects_an_event_committed_out_of_order(postgres_url: str) -> None:
    """Negative control: writers that skip the append protocol and commit out of order make a
    runner pass over an event for good; the checks above would catch it."""
    seen: Counter[int] = Counter()
    with Ledger.open(postgres_url, create_tables=True) as ledger, \
            pytest.MonkeyPatch.context() as patch:
        app = ledger.application
        create_read_models(app)
        ledger.receive(outlet=OUTLET, sku="SEED", batch_id="B1", quantity=5)
        _observe(patch, {"stock": seen}, threading.Lock())
        models = ReadModels(app)
        models.catch_up()
        with psycopg.connect(postgres_url) as slow, psycopg.connect(postgres_url) as fast:
            slow_ids = _insert(slow, app, _stream_rows(app, "SLOW", "rogue"))
            fast_ids = _insert(fast, app, _stream_rows(app, "FAST", "rogue"))
            fast.commit()
            assert max(slow_ids) < min(fast_ids)
            models.catch_up()  # passes over the slow transaction's ids
            app.recorder.seal_all()  # type: ignore[attr-defined]  # and so does the chain
            slow.commit()
        models.catch_up()
        committed = _committed_ids(postgres_url, app)
        assert models.positions()["stock"] == committed[-1]
        assert sorted(set(committed) - set(seen)) == slow_ids
        assert verify_read_models(app) != []
        assert verify_chain(app).first_broken_position == min(slow_ids)
