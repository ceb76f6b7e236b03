"""The event store adapter: an `eventsourcing` application over PostgreSQL or SQLite."""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, cast
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.domain import Aggregate, AggregateCreated, DomainEventProtocol
from eventsourcing.persistence import (
    JSONTranscoder,
    Mapper,
    PersistenceError,
    StoredEvent,
    Transcoder,
)
from eventsourcing.utils import get_topic

from ledger.domain.errors import StoreNotInitialised
from ledger.domain.stock_item import StockItem
from ledger.events import PAYLOAD_MODELS, StockItemOpened
from ledger.store.decoding import LedgerMapper, UnreadableEvent
from ledger.store.postgres.queued_writers import QueuedWriters
from ledger.store.postgres.recorder import ChainedPostgresRecorder
from ledger.store.settings import StoreConfig, parse_url
from ledger.store.snapshots import StockItemSnapshot
from ledger.store.sqlite_recorder import ChainedSQLiteRecorder
from ledger.store.topics import register_moved_modules
from ledger.store.transcoding import DateAsISO, LedgerTranscoder, PayloadModelAsDict
from ledger.store.writer_queue import BackOffWriters, WriterQueue

logger = logging.getLogger(__name__)

register_moved_modules()

APPLICATION_NAME = "stockledger"
SNAPSHOT_INTERVAL = 200
"""Events between a stock item's snapshots: a load replays at most this many events."""


class LedgerApplication(Application[UUID]):
    """The write side's storage: one stream per stock item, outlet, sale, transfer and key."""

    name = APPLICATION_NAME

    def __init__(self, config: StoreConfig, *, create_tables: bool = False) -> None:
        self.config = config
        env = config.library_env()
        recorder = ChainedSQLiteRecorder if config.backend == "sqlite" else ChainedPostgresRecorder
        env["APPLICATION_RECORDER_TOPIC"] = get_topic(recorder)
        env["CREATE_TABLE"] = "y" if create_tables else "n"
        # Commands mutate the cached aggregate only after every guard has passed, and the
        # ledger evicts it if the append then fails, so the cache need not copy on every read:
        # a deep copy of a stock item with 10,000 batches would cost more than the decision.
        env["IS_SNAPSHOTTING_ENABLED"] = "y"
        env["AGGREGATE_CACHE_MAXSIZE"] = "5000"
        env["AGGREGATE_CACHE_FASTFORWARD"] = "y"
        env["DEEPCOPY_FROM_AGGREGATE_CACHE"] = "n"
        super().__init__(env=env)

    def construct_mapper(self) -> Mapper[UUID]:
        """The library's mapper, refusing rows that are not the ledger's events with
        `UnreadableEvent` (`ledger.store.decoding`)."""
        return self.factory.mapper(transcoder=self.construct_transcoder(),
                                   mapper_class=LedgerMapper)

    def construct_transcoder(self) -> Transcoder:
        transcoder = LedgerTranscoder()
        self.register_transcodings(transcoder)
        return transcoder

    def register_transcodings(self, transcoder: JSONTranscoder) -> None:
        super().register_transcodings(transcoder)
        transcoder.register(DateAsISO())
        for model in PAYLOAD_MODELS:
            transcoder.register(PayloadModelAsDict(model))

    def record(self, *aggregates: Aggregate, created: Sequence[AggregateCreated] = (),
               **kwargs: Any) -> int:
        """Append the pending events of `aggregates`, then `created` (events that start new
        streams, built without their aggregates), in one transaction; return the position
        of the last.

        `Application.save` does the same through runtime protocol checks that cost more than
        the rest of a sale's decision, and wraps each event in a recording nobody here reads.
        Snapshots are the ledger's own business (`take_snapshots`).
        """
        pending = [event for aggregate in aggregates for event in aggregate.collect_events()]
        pending.extend(created)
        return max(self.append(pending, **kwargs))

    def append(self, pending: Sequence[DomainEventProtocol[UUID]], **kwargs: Any) -> list[int]:
        """Append `pending` in this order, in one transaction (`record`'s keyword arguments);
        return each event's position, in the same order."""
        positions = self.recorder.insert_events(
            [self.mapper.to_stored_event(event) for event in pending], **kwargs)
        if not positions or len(positions) != len(pending):
            raise PersistenceError("the append returned no position for some of its events")
        return list(positions)

    def existing_streams(self, aggregate_ids: Sequence[UUID]) -> set[UUID]:
        """Those of the streams that have events, in one query (on PostgreSQL)."""
        if not aggregate_ids:
            return set()
        recorder = cast(ChainedPostgresRecorder | ChainedSQLiteRecorder, self.recorder)
        found = recorder.select_events_after([(i, 0) for i in dict.fromkeys(aggregate_ids)])
        return {e.originator_id if isinstance(e.originator_id, UUID) else UUID(str(e.originator_id))
                for e in found}

    def load(self, aggregate_id: UUID) -> Aggregate | None:
        """The aggregate of a stream, fast-forwarded from the cache, or None if it has none."""
        try:
            return cast(Aggregate, self.repository.get(aggregate_id))
        except AggregateNotFoundError:
            return None
        except UnreadableEvent as error:
            self.locate(error)
            raise

    def position_of(self, aggregate_id: UUID, version: int) -> int | None:
        """The global position (notification id) of one recorded event."""
        table = self.recorder.events_table_name  # type: ignore[attr-defined]
        if self.config.backend == "sqlite":
            statement = (
                f"SELECT rowid AS position FROM {table} "
                "WHERE originator_id = ? AND originator_version = ?"
            )
            with self.recorder.datastore.transaction(commit=False) as cursor:  # type: ignore[attr-defined]
                cursor.execute(statement, (aggregate_id.hex, version))
                row = cursor.fetchone()
        else:
            schema = self.recorder.datastore.schema  # type: ignore[attr-defined]
            statement = (
                f'SELECT notification_id AS position FROM "{schema}"."{table}" '
                "WHERE originator_id = %s AND originator_version = %s"
            )
            with self.recorder.datastore.transaction(commit=False) as cursor:  # type: ignore[attr-defined]
                cursor.execute(statement, (aggregate_id, version))
                row = cursor.fetchone()
        return None if row is None else int(row["position"])

    def missing_tables(self, names: Iterable[str] = ()) -> list[str]:
        """Of the event store's tables and the tables or views `names`, those that do not
        exist yet (all of them in a fresh database), in one read of the schema on SQLite."""
        assert self.snapshots is not None
        tables = [self.recorder.events_table_name,  # type: ignore[attr-defined]
                  self.snapshots.recorder.events_table_name,  # type: ignore[attr-defined]
                  *names]
        if isinstance(self.recorder, ChainedSQLiteRecorder):
            present = self.recorder.schema_names()
            return [table for table in tables if table not in present]
        with self.recorder.datastore.transaction(commit=False) as cursor:  # type: ignore[attr-defined]
            schema = self.recorder.datastore.schema  # type: ignore[attr-defined]
            missing = []
            for table in tables:
                cursor.execute("SELECT to_regclass(%s) AS found", (f'"{schema}"."{table}"',))
                row = cursor.fetchone()
                if row is None or row["found"] is None:
                    missing.append(table)
            return missing

    def is_set_up(self, names: Iterable[str] = ()) -> bool:
        """Whether an embedded store has the event store's tables and the tables or views
        `names`; or is open read-only, when nothing can be created in it (a command that needs
        what it lacks then fails saying so). PostgreSQL stores are set up by `ledger init`:
        True."""
        recorder = self.recorder
        if not isinstance(recorder, ChainedSQLiteRecorder) or recorder.read_only:
            return True
        return not self.missing_tables(names)

    def stock_items_opened(self, page_size: int = 1000) -> Iterator[StockItemOpened]:
        """Every stock item ever opened, in the order they were opened."""
        topic = get_topic(StockItemOpened)
        start = 1
        while True:
            page = self.recorder.select_notifications(start, page_size, topics=[topic])
            for notification in page:
                event = self.mapper.to_domain_event(notification)
                assert isinstance(event, StockItemOpened)
                yield event
            if len(page) < page_size:
                return
            start = page[-1].id + 1

    def load_many(self, aggregate_ids: Sequence[UUID], *,
                  fast_forward: bool = True) -> dict[UUID, Aggregate]:
        """Several aggregates, brought up to date together.

        Cached aggregates are fast-forwarded with one query for all of them (or, with
        `fast_forward=False`, taken as cached: the caller then validates what it read when it
        appends, with `expect_versions`); the others are reconstructed from their latest
        snapshot and the events after it. Streams with no events are left out of the answer.
        """
        cached = self.cached(aggregate_ids)
        found: dict[UUID, Aggregate] = {}
        for aggregate_id in dict.fromkeys(aggregate_ids):
            if aggregate_id not in cached:
                loaded = self.load(aggregate_id)
                if loaded is not None:
                    found[aggregate_id] = loaded
        if cached and fast_forward:
            recorder = cast(ChainedPostgresRecorder | ChainedSQLiteRecorder, self.recorder)
            self.fast_forward(cached, recorder.select_events_after(
                [(i, a.version) for i, a in cached.items()]))
        found.update(cached)
        return found

    def cached(self, aggregate_ids: Sequence[UUID]) -> dict[UUID, Aggregate]:
        """Those of the aggregates the cache holds, as cached (not brought up to date)."""
        cache = self.repository.cache
        assert cache is not None, "the ledger always runs with an aggregate cache"
        cached: dict[UUID, Aggregate] = {}
        for aggregate_id in aggregate_ids:
            try:
                cached[aggregate_id] = cast(Aggregate, cache.get(aggregate_id))
            except KeyError:
                continue
        return cached

    def fast_forward(self, cached: dict[UUID, Aggregate], newer: Sequence[StoredEvent]) -> None:
        """Apply to cached aggregates, in place, the events recorded after their versions."""
        for stored in newer:
            try:
                event = self.mapper.to_domain_event(stored)
            except UnreadableEvent as error:
                self.locate(error)
                raise
            event.mutate(cached[event.originator_id])  # type: ignore[attr-defined]

    def locate(self, error: UnreadableEvent) -> None:
        """Fill in the position of the row `error` names (a stream's reader does not know
        it), so that whoever sees the error can find the row."""
        if error.position is None:
            originator_id = error.originator_id
            stream = originator_id if isinstance(originator_id, UUID) else UUID(originator_id)
            error.position = self.position_of(stream, error.originator_version)

    def take_snapshots(self, aggregates: Sequence[Aggregate], previous_versions: Sequence[int],
                       interval: int | None = None) -> None:
        """Snapshot each stock item whose version crossed a multiple of `interval` (by default
        `SNAPSHOT_INTERVAL`).

        A snapshot that cannot be written is logged, not raised: the command it follows is
        recorded already, and a load without it replays the events instead."""
        assert self.snapshots is not None
        every = interval or SNAPSHOT_INTERVAL
        snapshots = [
            StockItemSnapshot.take(aggregate)
            for aggregate, before in zip(aggregates, previous_versions, strict=True)
            if isinstance(aggregate, StockItem) and aggregate.version // every > before // every
        ]
        if not snapshots:
            return
        try:
            self.snapshots.put(snapshots)
        except PersistenceError as error:
            logger.warning("snapshots of %s not written: %s",
                           ", ".join(f"{s.originator_id} v{s.originator_version}"
                                     for s in snapshots), error)

    def cache(self, aggregate: Aggregate) -> None:
        """Make `aggregate` the cached state of its stream (it must match what is recorded)."""
        cache = self.repository.cache
        assert cache is not None, "the ledger always runs with an aggregate cache"
        cache.put(aggregate.id, aggregate)

    @functools.cached_property
    def writer_queue(self) -> WriterQueue:
        """Where this process's writers wait after losing a race: a queue on PostgreSQL,
        a back-off on SQLite (which lets one writer in at a time anyway)."""
        if isinstance(self.recorder, ChainedPostgresRecorder):
            return QueuedWriters(self, self.recorder)
        return BackOffWriters()

    def evict(self, aggregate_id: UUID) -> None:
        """Forget a cached aggregate, e.g. after a decision on it was not recorded."""
        cache = self.repository.cache
        if cache is not None:
            with contextlib.suppress(KeyError):
                cache.get(aggregate_id, evict=True)


def open_application(url: str | None = None, *, create_tables: bool = False) -> LedgerApplication:
    """The store at `url`; without `create_tables`, a store with no tables is refused with
    `StoreNotInitialised` at once rather than by the first command's library error."""
    app = LedgerApplication(parse_url(url), create_tables=create_tables)
    if not create_tables:
        missing = app.missing_tables()
        if missing:
            app.close()
            raise StoreNotInitialised(missing)
    return app
