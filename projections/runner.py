"""Applies events to the read models one batch at a time, exactly once; and `ReadModels`, the
façade the CLI and tests use for every job on them.

Each batch's rows and each projection's new position (its record in the library's tracking
table, `projections.tracking`) are written in one transaction, so a crash anywhere leaves
tables and position in step, and a second runner that raced ahead makes the slower one's
position check or tracking write fail and roll back.

The jobs live in modules of their own: the schema and views in `schema`, the live generations
in `generations`, catch-up in `catch_up`, rebuilds in `rebuild`, worker processes in
`parallel` and the report in `status`. They take the runner as a `BatchRunner`
(`projections.batch`) and do not import this module.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any, cast

from eventsourcing.persistence import Notification
from eventsourcing.utils import get_topic

from ledger import events
from ledger.domain.movements import movements
from ledger.store.application import LedgerApplication
from ledger.store.decoding import UnreadableEvent
from ledger.store.postgres.recorder import ChainedPostgresRecorder
from ledger.store.sqlite_recorder import ChainedSQLiteRecorder
from projections import catch_up as catching_up
from projections import generations as live_generations
from projections import parallel, registry, schema, stuck, tracking
from projections import rebuild as rebuilding
from projections import status as reporting
from projections.batch import Batch, Progress, ProjectionsMoved
from projections.dialect import Dialect
from projections.projection import Projection
from projections.store import ReadStore
from projections.stuck import ProjectionStuck, Stuck

__all__ = ["BATCH_SIZE", "PROJECTIONS", "UNREAD_TOPICS", "Batch", "ProjectionStuck",
           "ProjectionsMoved", "ReadModels", "Runner", "catch_up", "create_read_models",
           "rebuild"]

PROJECTIONS: Mapping[str, Projection[Any]] = registry.BY_NAME
"""The registered projections (`projections.registry.PROJECTIONS`) by name."""
UNREAD_TOPICS = frozenset(get_topic(event) for event in (
    events.OutletOpened, events.OutletPolicySet, events.LateSalesWindowSet,
    events.BalanceImportStarted, events.BalanceChunkImported,
    events.SaleRefunded,
    events.TransferStarted, events.TransferCompleted, events.CommandAccepted,
    events.StoreCurrencySet, events.HoldRegisterOpened))
"""Events no read model folds: only a stock item's events move stock or set its levels (and
a sale's record gives the journal its lines' costs)."""
BATCH_SIZE = 2000
"""At most how many events a batch reads (read on each batch, so tests may change it)."""


class Runner:
    """Reads, prepares and commits batches of events for the projections of one store."""

    def __init__(self, app: LedgerApplication) -> None:
        self.app = app
        self.store = ReadStore(app)

    @property
    def batch_size(self) -> int:
        return BATCH_SIZE

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
        try:
            return Batch(end, len(notifications), self._decode(notifications))
        except UnreadableEvent as error:
            return self._cut(notifications, error)

    def _cut(self, notifications: Sequence[Notification], error: UnreadableEvent) -> Batch:
        """The batch of the events before the first that cannot be read, stopping there.

        The whole batch is decoded in one pass, and only a failure looks for where it
        failed: the first row that cannot be read is the one the error names, as rows are
        decoded in position order."""
        bad = Stuck.of(error)
        before = [n for n in notifications if n.id < bad.position]
        return Batch(bad.position - 1, len(before), self._decode(before), stuck=bad)

    def _decode(self, notifications: Sequence[Notification]) -> list[tuple[int, object | None]]:
        """The events of a batch by position; None for those no read model reads (refunds
        of sales, command records, outlets, transfers), which are not worth decoding."""
        to_domain_event = self.app.mapper.to_domain_event
        return [(n.id, None if n.topic in UNREAD_TOPICS else to_domain_event(n))
                for n in notifications]

    def changes(self, batch: Batch, before: Mapping[str, int]) -> dict[str, Any]:
        """Each projection's changes for the events of `batch` after its position in `before`
        (None where it reads none of them): pure work, outside any transaction. Each event's
        movements are worked out once, for every projection."""
        read = [(p, e, tuple(movements(e))) for p, e in batch.decoded if e is not None]
        prepared: dict[str, Any] = {}
        for name, position in before.items():
            mine = [r for r in read if r[0] > position]
            prepared[name] = PROJECTIONS[name].changes(mine) if mine else None
        return prepared

    def commit(self, generations: Mapping[str, int], before: Mapping[str, int], batch: Batch,
               prepared: Mapping[str, Any], *, live: bool) -> None:
        """Write a prepared batch and each projection's new position in one transaction.

        `before` is what the caller last knew; the transaction checks it against the stored
        positions and raises `ProjectionsMoved` if another runner got there first. `live`
        steps lock the projections' state rows, so that they serialise with each other and
        with a rebuild's switch-over; a rebuild's own steps write a generation no one else
        writes.
        """
        with self.store.transaction() as cursor:
            if live:
                for name in sorted(generations):
                    if live_generations.lock(self.store, cursor, name) != generations[name]:
                        raise ProjectionsMoved
            for name, generation in generations.items():
                if tracking.position(self.store, cursor, name, generation) != before[name]:
                    raise ProjectionsMoved
                if batch.end > before[name]:
                    self.write(cursor, name, generation, prepared[name], batch.end)

    def write(self, cursor: Any, name: str, generation: int, prepared: Any, end: int) -> None:
        """Write one projection's prepared changes (if any) and move its position to `end`,
        in the caller's transaction."""
        if prepared is not None:
            PROJECTIONS[name].write(cursor, self.store.dialect,
                                    self.store.tables(name, generation), prepared)
        tracking.record(self.store, cursor, name, generation, end)

    def step(self, generations: Mapping[str, int] | None = None, *, live: bool = True) -> int:
        """Apply the next batch of events to each projection; return how many were read."""
        generations = generations or live_generations.generations(self.store)
        count, _ = self.apply_next(generations, tracking.positions(self.store, generations),
                                   live=live)
        return count

    def apply_next(self, generations: Mapping[str, int], before: Mapping[str, int], *,
                   live: bool) -> tuple[int, dict[str, int]]:
        """Apply the batch of events after the positions `before`; return how many events
        were read and the positions now."""
        batch = self.read(min(before.values()) + 1)
        if batch is None:
            return 0, dict(before)
        self.commit(generations, before, batch, self.changes(batch, before), live=live)
        positions = {name: max(p, batch.end) for name, p in before.items()}
        if batch.stuck is not None:
            # Everything before the unreadable event is committed; record where and why the
            # live projections stop (a rebuild's generation is not what anyone reads yet).
            if live:
                stuck.record(self.store, generations, positions, batch.stuck)
            raise ProjectionStuck(batch.stuck, positions, batch.count)
        return batch.count, positions

    def apply_range(self, cursor: Any, name: str, generation: int, after: int,
                    until: int) -> int:
        """Apply a batch of the events after `after`, up to `until`, to one generation, in
        the caller's transaction; return the position reached."""
        batch = self.read(after + 1, stop=min(until, after + BATCH_SIZE))
        assert batch is not None
        if batch.stuck is not None:
            raise ProjectionStuck(batch.stuck, {name: after})
        self.write(cursor, name, generation, self.changes(batch, {name: after})[name],
                   batch.end)
        return batch.end


class ReadModels(Runner):
    """The read models of one store: every job on them, for callers that want one object."""

    def __init__(self, app: LedgerApplication) -> None:
        super().__init__(app)
        self.last_parallel_run: parallel.ParallelRun | None = None

    @property
    def dialect(self) -> Dialect:
        return self.store.dialect

    @property
    def prefix(self) -> str:
        return self.store.prefix

    def tables(self, name: str, generation: int) -> dict[str, str]:
        return self.store.tables(name, generation)

    def views(self, name: str) -> dict[str, str]:
        return self.store.views(name)

    def query(self, statement: str, params: Sequence[Any]) -> list[dict[str, Any]]:
        return self.store.query(statement, params)

    def transaction(self) -> AbstractContextManager[Any]:
        return self.store.transaction()

    def head(self) -> int:
        return self.store.head()

    def create(self) -> None:
        """Create what is missing of the read models' schema, and rebuild a projection whose
        live generation an earlier version created in an older shape (upgrading a store)."""
        schema.create(self.store)
        outdated = schema.outdated(self.store)
        if outdated:
            self.rebuild(outdated)

    def exists(self) -> bool:
        return schema.exists(self.store)

    def generations(self) -> dict[str, int]:
        return live_generations.generations(self.store)

    def positions(self, generations: Mapping[str, int] | None = None) -> dict[str, int]:
        return tracking.positions(self.store, generations or self.generations())

    def catch_up(self, *, until: int | None = None, progress: Progress | None = None,
                 workers: int | None = None) -> int:
        return catching_up.catch_up(self, until=until, progress=progress, workers=workers)

    def catch_up_if_permitted(self, *, workers: int | None = None) -> int | None:
        return catching_up.catch_up_if_permitted(self, workers=workers)

    def wait_for(self, position: int, timeout: float) -> bool:
        return catching_up.wait_for(self, position, timeout)

    def rebuild(self, names: Sequence[str], progress: Progress | None = None,
                workers: int | None = None) -> int:
        return rebuilding.rebuild(self, names, progress, workers)

    def apply_in_parallel(self, generations: Mapping[str, int], positions: Mapping[str, int],
                          target: int, *, live: bool, workers: int | None,
                          progress: Progress | None) -> int | None:
        workers = parallel.workers_for(self.dialect.name, positions, target, workers)
        if workers < 2:
            return None
        self.last_parallel_run = parallel.apply_in_parallel(
            self, type(self), generations, min(positions.values()), target, live=live,
            workers=workers, progress=progress)
        return self.last_parallel_run.events

    def record_outage(self, error: BaseException) -> None:
        reporting.record_outage(self.store, error)

    def status(self) -> list[dict[str, Any]]:
        return reporting.status(self.store)

    def horizon(self) -> dict[str, Any] | None:
        return reporting.horizon(self.store)


def create_read_models(app: LedgerApplication) -> None:
    ReadModels(app).create()


def catch_up(app: LedgerApplication) -> int:
    return ReadModels(app).catch_up()


def rebuild(app: LedgerApplication, names: Sequence[str] = tuple(PROJECTIONS)) -> int:
    return ReadModels(app).rebuild(names)
