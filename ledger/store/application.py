"""The event store adapter: an `eventsourcing` application over PostgreSQL or SQLite."""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, cast
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application, Repository
from eventsourcing.domain import Aggregate, AggregateCreated, DomainEventProtocol
from eventsourcing.persistence import (
    JSONTranscoder,
    Mapper,
    PersistenceError,
    StoredEvent,
    Transcoder,
)
from eventsourcing.utils import get_topic, strtobool

from ledger.domain.errors import StoreNotInitialised
from ledger.domain.stock_item import StockItem
from ledger.events import PAYLOAD_MODELS, StockItemOpened
from ledger.store.decoding import LedgerMapper, UnreadableEvent
from ledger.store.postgres.queued_writers import QueuedWriters
from ledger.store.postgres.recorder import ChainedPostgresRecorder
from ledger.store.repository import CheckedRepository
from ledger.store.settings import StoreConfig, parse_url
from ledger.store.snapshot_keys import SnapshotKeys, key_path
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
        # The key that signs and checks snapshots ($LEDGER_SNAPSHOT_KEY_FILE, or the user's
        # own), read when a snapshot is first met, not here: most commands meet none.
        self.snapshot_keys = SnapshotKeys(key_path())
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

    def construct_repository(self) -> Repository[UUID]:
        """The library's repository, configured as it would be, but checking each snapshot
        before it uses it (`ledger.store.repository`)."""
        assert self.snapshots is not None, "the ledger always runs with snapshots"
        maxsize = self.env.get(self.AGGREGATE_CACHE_MAXSIZE)
        return CheckedRepository(
            self.events,
            snapshot_store=self.snapshots,
            # Looked up at each call, not bound now: a test counts the queries.
            events_from=lambda starts, lte: self.events_from(starts, lte),
            latest_snapshots=lambda ids, lte: self.latest_snapshots(ids, lte),
            key=lambda: self.snapshot_keys.for_loading(),
            cache_maxsize=int(maxsize) if maxsize else None,
            fastforward=strtobool(self.env.get(self.AGGREGATE_CACHE_FASTFORWARD, "y")),
            fastforward_skipping=strtobool(
                self.env.get(self.AGGREGATE_CACHE_FASTFORWARD_SKIPPING, "n")),
            deepcopy_from_cache=strtobool(self.env.get(self.DEEPCOPY_FROM_AGGREGATE_CACHE, "y")),
        )

    @property
    def checked_repository(self) -> CheckedRepository:
        return cast(CheckedRepository, self.repository)

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

    def events_from(self, starts: Sequence[tuple[UUID, int]],
                    lte: int | None = None) -> list[tuple[int, StoredEvent]]:
        """The events of several streams from the versions given (inclusive), up to version
        `lte`, each with its position, in stream order then version order; on PostgreSQL in
        one round trip."""
        recorder = cast(ChainedPostgresRecorder | ChainedSQLiteRecorder, self.recorder)
        return recorder.select_events_from(starts, lte)

    def latest_snapshots(self, aggregate_ids: Sequence[UUID],
                         lte: int | None = None) -> list[StoredEvent]:
        """The latest stored snapshot (at or below version `lte`) of each stream that has
        one; on PostgreSQL in one round trip, on the queue's connection in its turn."""
        assert self.snapshots is not None
        recorder: Any = self.snapshots.recorder
        if isinstance(self.recorder, ChainedPostgresRecorder):
            table = f'"{recorder.datastore.schema}"."{recorder.events_table_name}"'
            return cast(list[StoredEvent],
                        self.recorder.select_latest(table, list(aggregate_ids), lte))
        latest: list[StoredEvent] = []
        for aggregate_id in aggregate_ids:
            latest.extend(recorder.select_events(aggregate_id, desc=True, limit=1, lte=lte))
        return latest

    def position_of(self, aggregate_id: UUID, version: int) -> int | None:
        """The global position (notification id) of one recorded event."""
        return self.positions_of([(aggregate_id, version)]).get((aggregate_id, version))

    def positions_of(self, keys: Sequence[tuple[UUID, int]]) -> dict[tuple[UUID, int], int]:
        """The global positions of the events at several (stream, version) pairs, each an
        index lookup on the events' primary key; pairs with no event are left out. On
        PostgreSQL one round trip for them all; on SQLite, a local file, one query each."""
        found: dict[tuple[UUID, int], int] = {}
        if not keys:
            return found
        table = self.recorder.events_table_name  # type: ignore[attr-defined]
        datastore = self.recorder.datastore  # type: ignore[attr-defined]
        if self.config.backend == "sqlite":
            statement = (
                f"SELECT rowid AS position FROM {table} "
                "WHERE originator_id = ? AND originator_version = ?"
            )
            with datastore.transaction(commit=False) as cursor:
                for aggregate_id, version in dict.fromkeys(keys):
                    cursor.execute(statement, (aggregate_id.hex, version))
                    row = cursor.fetchone()
                    if row is not None:
                        found[(aggregate_id, version)] = int(row["position"])
            return found
        statement = (
            "SELECT e.originator_id, e.originator_version, e.notification_id AS position "
            "FROM unnest(%s::uuid[], %s::bigint[]) AS wanted(id, version) "
            f'JOIN "{datastore.schema}"."{table}" e '
            "ON e.originator_id = wanted.id AND e.originator_version = wanted.version"
        )
        with datastore.transaction(commit=False) as cursor:
            cursor.execute(statement, ([i for i, _ in keys], [v for _, v in keys]))
            for row in cursor.fetchall():
                found[(row["originator_id"], int(row["originator_version"]))] = int(
                    row["position"])
        return found

    def select_snapshots(self, after: tuple[UUID, int] | None,
                         limit: int) -> list[StoredEvent]:
        """Up to `limit` stored snapshots of every stream, in (stream id, version) order,
        from just after `after`: the snapshot table a page at a time, for the auditor."""
        assert self.snapshots is not None
        recorder: Any = self.snapshots.recorder
        table = recorder.events_table_name
        columns = "originator_id, originator_version, topic, state"
        sqlite = self.config.backend == "sqlite"
        if sqlite:
            start = (after[0].hex, after[0].hex, after[1]) if after else ("", "", 0)
            statement = (f"SELECT {columns} FROM {table} WHERE originator_id > ? OR "
                         "(originator_id = ? AND originator_version > ?) "
                         "ORDER BY originator_id, originator_version LIMIT ?")
            parameters: tuple[Any, ...] = (*start, limit)
        else:
            where = "WHERE (originator_id, originator_version) > (%s, %s) " if after else ""
            statement = (f'SELECT {columns} FROM "{recorder.datastore.schema}"."{table}" '
                         f"{where}ORDER BY originator_id, originator_version LIMIT %s")
            parameters = (*after, limit) if after else (limit,)
        with recorder.datastore.transaction(commit=False) as cursor:
            cursor.execute(statement, parameters)
            rows = cursor.fetchall()
        return [StoredEvent(
            originator_id=UUID(row["originator_id"]) if sqlite else row["originator_id"],
            originator_version=int(row["originator_version"]), topic=row["topic"],
            state=row["state"].encode() if isinstance(row["state"], str)
            else bytes(row["state"])) for row in rows]

    def missing_tables(self, names: Iterable[str] = (), *,
                       event_store: bool = True) -> list[str]:
        """Of the event store's tables (unless not `event_store`) and the tables or views
        `names` (unqualified: the store's schema is the one asked), those that do not exist
        yet, in one read of the catalog. It needs no privilege, so that a role without DDL
        rights can ask before it would create anything."""
        assert self.snapshots is not None
        tables = [self.recorder.events_table_name,  # type: ignore[attr-defined]
                  self.snapshots.recorder.events_table_name,  # type: ignore[attr-defined]
                  ] if event_store else []
        tables += names
        if isinstance(self.recorder, ChainedSQLiteRecorder):
            present = self.recorder.schema_names()
            return [table for table in tables if table not in present]
        with self.recorder.datastore.transaction(commit=False) as cursor:  # type: ignore[attr-defined]
            cursor.execute(
                "SELECT t FROM unnest(%s::text[]) WITH ORDINALITY AS n(t, i)"
                " WHERE to_regclass(format('%%I.%%I', %s::text, t)) IS NULL ORDER BY i",
                (tables, self.recorder.datastore.schema))  # type: ignore[attr-defined]
            return [row["t"] for row in cursor.fetchall()]

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
        snapshot, once checked (`ledger.store.repository`), and the events after it, read for
        them all in one query. Streams with no events are left out of the answer.
        """
        cached = self.cached(aggregate_ids)
        found: dict[UUID, Aggregate] = {}
        cold = [i for i in dict.fromkeys(aggregate_ids) if i not in cached]
        if cold:
            # Their events are read together, in one query, their snapshots checked.
            try:
                loaded_cold = self.checked_repository.load(cold)
            except UnreadableEvent as error:
                self.locate(error)
                raise
            for loaded in loaded_cold.values():
                self.cache(loaded)
                found[loaded.id] = loaded
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
        `SNAPSHOT_INTERVAL`), signed under the till's key and bound to the position of the
        event at its version.

        A snapshot that cannot be written is logged, not raised: the command it follows is
        recorded already, and a load without it replays the events instead. Without a usable
        key none is written (`ledger.store.snapshot_keys` logs why, once)."""
        assert self.snapshots is not None
        every = interval or SNAPSHOT_INTERVAL
        due = [aggregate for aggregate, before in zip(aggregates, previous_versions, strict=True)
               if isinstance(aggregate, StockItem) and aggregate.version // every > before // every]
        if not due:
            return
        key = self.snapshot_keys.for_writing()
        if key is None:
            return
        try:
            # One lookup for them all, every `every` events of a stream.
            positions = self.positions_of([(a.id, a.version) for a in due])
            unrecorded = [a for a in due if (a.id, a.version) not in positions]
            if unrecorded:
                raise PersistenceError("no event recorded at " + ", ".join(
                    f"{a.id} v{a.version}" for a in unrecorded))
            self.snapshots.put([StockItemSnapshot.take(a, positions[(a.id, a.version)], key)
                                for a in due])
        except PersistenceError as error:
            logger.warning("snapshots of %s not written: %s",
                           ", ".join(f"{a.id} v{a.version}" for a in due), error)

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
