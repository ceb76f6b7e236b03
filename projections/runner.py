"""Runs the read models: catch-up, follow, rebuild and status, exactly once.

Each projection writes its rows and its position (the library's tracking record) in one
transaction per batch of events, so a crash anywhere leaves tables and position in step, and a
second runner that raced ahead makes the slower one's tracking insert fail and roll back.

Every projection's tables are versioned by generation (`ledger_batches_g3`); readers use views
(`ledger_batches`) that point at the live generation. A rebuild fills a new generation from the
first event while appends and the live runner go on, then repoints the views and the runner in
one transaction, so no reader ever sees a half-built view.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from types import ModuleType
from typing import TYPE_CHECKING, Any, cast

from eventsourcing.persistence import IntegrityError, Notification, Tracking
from eventsourcing.postgres import PostgresTrackingRecorder
from eventsourcing.sqlite import SQLiteTrackingRecorder
from eventsourcing.utils import get_topic

from ledger import events
from ledger.domain.movements import movements
from ledger.store.application import LedgerApplication
from ledger.store.postgres.recorder import ChainedPostgresRecorder
from ledger.store.sqlite_recorder import ChainedSQLiteRecorder
from projections import journal, stock_levels
from projections.dialect import Dialect

if TYPE_CHECKING:
    from projections.parallel import ParallelRun

PROJECTIONS: dict[str, ModuleType] = {stock_levels.NAME: stock_levels, journal.NAME: journal}
UNREAD_TOPICS = frozenset(get_topic(event) for event in (
    events.OutletOpened, events.OutletPolicySet, events.SaleRecorded, events.SaleRefunded,
    events.TransferStarted, events.TransferCompleted, events.CommandAccepted))
"""Events no read model folds: only a stock item's events move stock or set its levels."""
BATCH_SIZE = 2000

CREATE_STATE = """CREATE TABLE IF NOT EXISTS {state} (
    name TEXT PRIMARY KEY, generation INTEGER NOT NULL, updated_at TEXT,
    last_error TEXT, last_error_at TEXT, reconnects INTEGER NOT NULL DEFAULT 0)"""
INSERT_STATE = ("INSERT INTO {state} (name, generation, reconnects) VALUES (%s, 1, 0) "
                "ON CONFLICT (name) DO NOTHING")
LOCK_STATE = "UPDATE {state} SET updated_at = %s WHERE name = %s RETURNING generation"
SELECT_STATE = ("SELECT name, generation, updated_at, last_error, last_error_at, reconnects "
                "FROM {state} ORDER BY name")
RECORD_ERROR = ("UPDATE {state} SET last_error = %s, last_error_at = %s, "
                "reconnects = reconnects + 1")
SET_GENERATION = "UPDATE {state} SET generation = %s WHERE name = %s"
SELECT_POSITION = "SELECT notification_id FROM {tracking} WHERE application_name = %s"
DELETE_POSITION = "DELETE FROM {tracking} WHERE application_name = %s"


@dataclass(frozen=True)
class Batch:
    """Events read to be applied in one transaction, up to position `end`."""

    end: int
    count: int
    decoded: list[tuple[int, object | None]]


class ProjectionsMoved(Exception):
    """Another runner applied events between our read and our write; read again."""


@dataclass
class ReadModels:
    """The read-model tables of one store, and how to write them."""

    app: LedgerApplication

    def __post_init__(self) -> None:
        datastore: Any = self.app.recorder.datastore  # type: ignore[attr-defined]
        self.datastore = datastore
        if self.app.config.backend == "sqlite":
            self.dialect = Dialect("sqlite")
            self.prefix = ""
            self.tracking: Any = SQLiteTrackingRecorder(datastore)
        else:
            self.dialect = Dialect("postgres")
            self.prefix = f'"{datastore.schema}".'
            self.tracking = PostgresTrackingRecorder(datastore)
        self.state = f"{self.prefix}ledger_projection_state"
        self.last_parallel_run: ParallelRun | None = None
        self.tracking_table = (f'{self.prefix}"{self.tracking.tracking_table_name}"'
                               if self.prefix else "tracking")

    # ---------------------------------------------------------------- names

    def tables(self, name: str, generation: int) -> dict[str, str]:
        return {t: f"{self.prefix}ledger_{t}_g{generation}" for t in PROJECTIONS[name].TABLES}

    def views(self, name: str) -> dict[str, str]:
        return {t: f"{self.prefix}ledger_{t}" for t in PROJECTIONS[name].TABLES}

    @staticmethod
    def tracking_name(name: str, generation: int) -> str:
        return f"{name}@g{generation}"

    def sql(self, statement: str, **names: str) -> str:
        return self.dialect.sql(statement.format(state=self.state,
                                                 tracking=self.tracking_table, **names))

    def query(self, statement: str, params: Sequence[Any]) -> list[dict[str, Any]]:
        """One read statement in one round trip (no transaction block around it)."""
        if self.dialect.name == "sqlite":
            with self.datastore.transaction(commit=False) as cursor:
                cursor.execute(statement, params)
                return [dict(row) for row in cursor.fetchall()]
        with self.datastore.get_connection() as connection:
            return list(connection.execute(statement, params, prepare=True).fetchall())

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Any]:
        with self.datastore.transaction(commit=True) as cursor:
            yield cursor

    # ---------------------------------------------------------------- schema

    def create(self) -> None:
        self.tracking.create_table()
        with self.transaction() as cursor:
            cursor.execute(self.sql(CREATE_STATE))
            for name in PROJECTIONS:
                cursor.execute(self.sql(INSERT_STATE), (name,))
        for name, generation in self.generations().items():
            with self.transaction() as cursor:
                self._create_tables(cursor, name, generation)
                self._point_views(cursor, name, generation, replace=False)

    def _create_tables(self, cursor: Any, name: str, generation: int) -> None:
        tables = self.tables(name, generation)
        index_names = {k: v.split(".")[-1] for k, v in tables.items()}
        for statement in PROJECTIONS[name].CREATE:
            if statement.startswith("CREATE INDEX") and self.prefix:
                # Index names take no schema; they live in their table's schema.
                head, _, tail = statement.partition(" ON ")
                cursor.execute(self.dialect.sql(head.format(**index_names) + " ON "
                                                + tail.format(**tables)))
            else:
                cursor.execute(self.dialect.sql(statement.format(**tables)))

    def _drop_tables(self, cursor: Any, name: str, generation: int) -> None:
        for table in self.tables(name, generation).values():
            cursor.execute(f"DROP TABLE IF EXISTS {table}")

    def _point_views(self, cursor: Any, name: str, generation: int, *, replace: bool) -> None:
        tables = self.tables(name, generation)
        for base, view in self.views(name).items():
            if replace or self.dialect.name == "sqlite":
                cursor.execute(f"DROP VIEW IF EXISTS {view}")
                cursor.execute(f"CREATE VIEW {view} AS SELECT * FROM {tables[base]}")
            else:
                cursor.execute(f"CREATE OR REPLACE VIEW {view} AS SELECT * FROM {tables[base]}")

    # ---------------------------------------------------------------- positions

    def generations(self) -> dict[str, int]:
        with self.transaction() as cursor:
            cursor.execute(self.sql(SELECT_STATE))
            return {row["name"]: int(row["generation"]) for row in cursor.fetchall()}

    def position(self, cursor: Any, name: str, generation: int) -> int:
        cursor.execute(self.sql(SELECT_POSITION), (self.tracking_name(name, generation),))
        row = cursor.fetchone()
        return 0 if row is None or row["notification_id"] is None else int(
            row["notification_id"])

    def positions(self, generations: dict[str, int] | None = None) -> dict[str, int]:
        generations = generations or self.generations()
        with self.transaction() as cursor:
            return {name: self.position(cursor, name, g) for name, g in generations.items()}

    def head(self) -> int:
        return self.app.recorder.max_notification_id() or 0

    # ---------------------------------------------------------------- applying

    def _decode(self, notifications: Sequence[Notification]) -> list[tuple[int, object | None]]:
        """The events of a batch by position; None for those no read model reads (sales,
        command records, outlets, transfers), which are not worth decoding."""
        to_domain_event = self.app.mapper.to_domain_event
        return [(n.id, None if n.topic in UNREAD_TOPICS else to_domain_event(n))
                for n in notifications]

    def read(self, start: int, stop: int | None = None) -> Batch | None:
        """The next batch of events from position `start`, decoded; None if there are none.

        With `stop`, the batch is every recorded event from `start` to `stop` (at most
        a few thousand positions, all at or below the head), and applying it moves the
        projections to `stop` even if the last positions hold no event: aborted appends
        leave gaps, and no event can appear at or below the head later.
        """
        if stop is None:
            notifications = self.app.recorder.select_notifications(start, BATCH_SIZE)
            if not notifications:
                return None
            end = notifications[-1].id
        else:
            recorder = cast(ChainedPostgresRecorder | ChainedSQLiteRecorder, self.app.recorder)
            notifications, end = recorder.select_range(start, stop), stop
        return Batch(end, len(notifications), self._decode(notifications))

    def prepare(self, batch: Batch, before: dict[str, int]) -> dict[str, Any]:
        """Each projection's rows for the events of `batch` after its position in `before`
        (None where it reads none of them): pure work, outside any transaction. Each event's
        movements are worked out once, for every projection."""
        read = [(p, e, tuple(movements(e))) for p, e in batch.decoded if e is not None]
        prepared: dict[str, Any] = {}
        for name, position in before.items():
            mine = [r for r in read if r[0] > position]
            prepared[name] = PROJECTIONS[name].prepare(mine) if mine else None
        return prepared

    def commit(self, generations: dict[str, int], before: dict[str, int], batch: Batch,
               prepared: dict[str, Any], *, live: bool) -> None:
        """Write a prepared batch and each projection's new position in one transaction.

        `before` is what the caller last knew; the transaction checks it against the stored
        positions and raises `ProjectionsMoved` if another runner got there first. `live`
        steps lock the projections' state rows, so that they serialise with each other and
        with a rebuild's switch-over; a rebuild's own steps write a generation no one else
        writes.
        """
        with self.transaction() as cursor:
            if live:
                for name in sorted(generations):
                    cursor.execute(self.sql(LOCK_STATE), (_now(), name))
                    row = cursor.fetchone()
                    if row is None or int(row["generation"]) != generations[name]:
                        raise ProjectionsMoved
            for name, generation in generations.items():
                if self.position(cursor, name, generation) != before[name]:
                    raise ProjectionsMoved
                if batch.end > before[name]:
                    self._write(cursor, name, generation, prepared[name], batch.end)

    def _write(self, cursor: Any, name: str, generation: int, prepared: Any,
               end: int) -> None:
        """Write one projection's prepared rows (if any) and move its position to `end`."""
        if prepared is not None:
            PROJECTIONS[name].write(cursor, self.dialect, self.tables(name, generation),
                                    prepared)
        self.tracking._insert_tracking(cursor, Tracking(self.tracking_name(name, generation),
                                                        end))

    def step(self, generations: dict[str, int] | None = None, *, live: bool = True) -> int:
        """Apply the next batch of events to each projection; return how many were read."""
        generations = generations or self.generations()
        count, _ = self._apply_next(generations, self.positions(generations), live=live)
        return count

    def _apply_next(self, generations: dict[str, int], before: dict[str, int], *,
                    live: bool) -> tuple[int, dict[str, int]]:
        """Apply the batch of events after the positions `before`; return how many events
        were read and the positions now."""
        batch = self.read(min(before.values()) + 1)
        if batch is None:
            return 0, before
        self.commit(generations, before, batch, self.prepare(batch, before), live=live)
        return batch.count, {name: max(p, batch.end) for name, p in before.items()}

    def catch_up(self, *, until: int | None = None,
                 progress: Callable[[int, int], None] | None = None,
                 workers: int | None = None) -> int:
        """Apply events up to the head as it was on the call (or `until`); return how many
        events were read.

        A long way behind (or given `workers`), the events are prepared by several worker
        processes (`projections.parallel`). Generations and positions are read once and then
        carried from batch to batch; only when another runner or a rebuild moved them are
        they read again. On PostgreSQL, a catch-up that applied events then seals the hash
        chain over them (`_sealed`).
        """
        # Appends go on while we apply: stop at the head we started from, or we may never stop.
        target = self.head() if until is None else until
        applied = 0
        known: tuple[dict[str, int], dict[str, int]] | None = None
        parallel = True
        while True:
            if known is None:
                generations = self.generations()
                known = (generations, self.positions(generations))
            if min(known[1].values()) >= target:
                return self._sealed(applied)
            if parallel:
                parallel = False
                run = self._apply_in_parallel(*known, target, live=True, workers=workers,
                                              progress=progress)
                if run is not None:
                    applied += run.events
                    known = None  # the workers moved the positions: read where they got to
                    continue
            try:
                count, positions = self._apply_next(*known, live=True)
            except (ProjectionsMoved, IntegrityError):
                known = None  # another runner moved first: start again from its position
                continue
            known = (known[0], positions)
            applied += count
            if progress is not None:
                progress(applied, self.head())
            if count == 0:
                return self._sealed(applied)

    def _sealed(self, applied: int) -> int:
        """Seal the chain up to the horizon after a catch-up that applied events, so that
        every reader that catches up (the CLI's reads, `projections catch-up`, the follower)
        keeps the chain close behind the appends; the sealer checks each row's digest on the
        way (`ledger.store.postgres.sql_seal`). SQLite chains as it appends."""
        if applied and isinstance(self.app.recorder, ChainedPostgresRecorder):
            self.app.recorder.seal_all()
        return applied

    def _apply_in_parallel(self, generations: dict[str, int], positions: dict[str, int],
                           target: int, *, live: bool, workers: int | None,
                           progress: Callable[[int, int], None] | None) -> ParallelRun | None:
        """Apply events up to `target` in worker processes, if that is worth it here; None if
        it is not (then nothing was applied)."""
        from projections import parallel

        after = min(positions.values())
        if workers is None:
            workers = (parallel.default_workers()
                       if target - after >= parallel.MIN_EVENTS else 1)
        # Workers need a server to share (SQLite has one writer) and projections that stand
        # at one position (a rebuild of one of them may have left them apart).
        if (workers < 2 or self.dialect.name != "postgres"
                or max(positions.values()) != after):
            return None
        self.last_parallel_run = parallel.apply_in_parallel(
            self, generations, after, target, live=live, workers=workers, progress=progress)
        return self.last_parallel_run

    def wait_for(self, position: int, timeout: float) -> bool:
        """Block until every projection has reached `position`, applying events here if no
        runner does it first; False if the deadline passed."""
        deadline = time.monotonic() + timeout
        while min(self.positions().values()) < position:
            if time.monotonic() > deadline:
                return False
            self.catch_up(until=position)
        return True

    # ---------------------------------------------------------------- rebuild

    def rebuild(self, names: Sequence[str],
                progress: Callable[[int, int], None] | None = None,
                workers: int | None = None) -> int:
        """Rebuild projections into a fresh generation and switch readers over atomically."""
        current = self.generations()
        fresh = {name: current[name] + 1 for name in names}
        with self.transaction() as cursor:
            for name, generation in fresh.items():
                # A rebuild that died part-way left tables and a position; start both afresh.
                self._drop_tables(cursor, name, generation)
                cursor.execute(self.sql(DELETE_POSITION),
                               (self.tracking_name(name, generation),))
                self._create_tables(cursor, name, generation)
        applied = 0
        positions = dict.fromkeys(fresh, 0)
        run = self._apply_in_parallel(fresh, positions, self.head(), live=False,
                                      workers=workers, progress=progress)
        if run is not None:
            applied = run.events
            positions = self.positions(fresh)
        while True:
            count, positions = self._apply_next(fresh, positions, live=False)
            applied += count
            if progress is not None:
                progress(applied, self.head())
            if count < BATCH_SIZE:
                self._switch(current, fresh)
                break
        # The views now read the new generation; the old one has no readers left.
        with self.transaction() as cursor:
            for name in fresh:
                self._drop_tables(cursor, name, current[name])
                cursor.execute(self.sql(DELETE_POSITION),
                               (self.tracking_name(name, current[name]),))
        self.catch_up(progress=progress)
        return applied

    def _switch(self, current: dict[str, int], fresh: dict[str, int]) -> None:
        """Bring the fresh generation up to the live one and point readers and runners at it,
        in one transaction.

        Locking the state rows stops live runners between their batches, so the live
        generation cannot move while the fresh one closes the gap: readers never see the
        views go back to an earlier position, and a rebuild chasing busy appenders finishes.
        """
        with self.transaction() as cursor:
            for name, generation in sorted(fresh.items()):
                cursor.execute(self.sql(LOCK_STATE), (_now(), name))
                live = self.position(cursor, name, current[name])
                position = self.position(cursor, name, generation)
                while position < live:
                    position = self._apply_range(cursor, name, generation, position, live)
            for name, generation in sorted(fresh.items()):
                cursor.execute(self.sql(SET_GENERATION), (generation, name))
                self._point_views(cursor, name, generation, replace=True)

    def _apply_range(self, cursor: Any, name: str, generation: int, after: int,
                     until: int) -> int:
        """Apply a batch of the events after `after`, up to `until`, to one generation, in
        the caller's transaction; return the position reached."""
        batch = self.read(after + 1, stop=min(until, after + BATCH_SIZE))
        assert batch is not None
        prepared = self.prepare(batch, {name: after})[name]
        self._write(cursor, name, generation, prepared, batch.end)
        return batch.end

    # ---------------------------------------------------------------- status

    def record_outage(self, error: BaseException) -> None:
        with self.transaction() as cursor:
            cursor.execute(self.sql(RECORD_ERROR), (str(error).splitlines()[0][:500], _now()))

    def status(self) -> list[dict[str, Any]]:
        head = self.head()
        with self.transaction() as cursor:
            cursor.execute(self.sql(SELECT_STATE))
            states = [dict(row) for row in cursor.fetchall()]
            for state in states:
                state["position"] = self.position(cursor, state["name"], state["generation"])
        report = []
        for state in states:
            lag_events = max(0, head - state["position"])
            lag_seconds = 0.0
            if lag_events:
                waiting = self.app.recorder.select_notifications(state["position"] + 1, 1)
                if waiting:
                    event: Any = self.app.mapper.to_domain_event(waiting[0])
                    lag_seconds = max(0.0, (datetime.now(UTC) - event.timestamp).total_seconds())
            report.append({
                "name": state["name"], "generation": state["generation"],
                "position": state["position"], "head": head, "lag_events": lag_events,
                "lag_seconds": round(lag_seconds, 3), "updated_at": state["updated_at"],
                "last_error": state["last_error"], "last_error_at": state["last_error_at"],
                "reconnects": state["reconnects"],
            })
        return report


def _now() -> str:
    return datetime.now(UTC).isoformat()


def create_read_models(app: LedgerApplication) -> None:
    ReadModels(app).create()


def catch_up(app: LedgerApplication) -> int:
    return ReadModels(app).catch_up()


def rebuild(app: LedgerApplication, names: Sequence[str] = tuple(PROJECTIONS)) -> int:
    return ReadModels(app).rebuild(names)
