"""The PostgreSQL event recorder: the library's, with a hash chain sealed after commit and an
append that holds no table lock.

This module is the Python side: the pool, the connections, which statement runs where, and
psycopg's errors mapped to the library's. The SQL, formatted once per store, and why it is
written as it is, lives beside it:

* `sql_append`: the append function, with the queue's gate, the read checks, the in-flight
  registration of its positions under the allocation lock, and the notify throttle;
* `sql_horizon`: the horizon, how far readers may go without passing an append in flight;
* `sql_seal`: the hash chain, sealed after commit, in position order, up to the horizon;
* `sql`: what `create_table` adds to the library's statements; `sql_names` and `lock_keys`:
  the names and lock keys they are formatted with;
* `queue_locks`: the writer queue's locks, taken with the read of what the queue missed;
* `pool`: the pool, opened ready with one connection; `prepared`: the append sent over
  libpq; `values`: its arguments as binary arrays (or array literals); `notifications`: the
  polling window.

An append is one statement, a call of the `<table>_append` function, run as its own
transaction: prepared once per connection and sent with seven arrays the recorder writes
itself in PostgreSQL's binary array format, which costs the client less than psycopg adapting
seven arrays (`prepared`), and the server less than parsing them from text (`values`).
Appends commit concurrently; readers (`select_notifications`, `max_notification_id`,
`select_range`) go no further than the horizon, read first.

Read checks: a command may have decided on streams it does not write (the outlet's policy,
say). `insert_events(..., expect_versions=[(id, version), ...])` fails the insert with an
integrity error if any of those streams has moved past the version the decision saw.

Queue: a till that lost a race retries in `streams_locked`, and its append there
(`serialised=True`) runs on the connection holding the locks and releases them as it ends, in
the same round trip; every other append to an existing stream is gated.

Hash chain (`ledger.store.hash_chain`): `audit verify` reports by position where the chain
breaks. Here the link is sealed after commit (`seal`); rows recorded by earlier versions carry
their link inline. Each row's content digest is written by its append, in the same INSERT, and
the sealer never chains a row that fails it. (On SQLite both are computed in the inserting
transaction: `ledger.store.sqlite_recorder`.)

Notifications (`notifications`): the append function notifies at most once per
`NOTIFY_SECONDS` per session, and whoever listens polls for `notification_window()` after
each notification, so every append is still seen within that window of its commit
(`projections.follow`, `subscribe`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any
from uuid import UUID

import psycopg
from eventsourcing.persistence import (
    ApplicationRecorder,
    InterfaceError,
    Notification,
    OperationalError,
    PersistenceError,
    StoredEvent,
    Subscription,
)
from eventsourcing.postgres import (
    PostgresApplicationRecorder,
    PostgresDatastore,
)
from eventsourcing.utils import retry

from ledger.store.postgres import notifications, sql, sql_append, sql_horizon, sql_seal
from ledger.store.postgres.lock_keys import ALLOCATION_LOCK, READ_CHECK_SALT, SEAL_LOCK
from ledger.store.postgres.notifications import WindowedPostgresSubscription
from ledger.store.postgres.pool import open_pool, pooled_connection
from ledger.store.postgres.prepared import PreparedStatement, run_together
from ledger.store.postgres.queue_locks import (
    UNLOCK_ALL,
    QueueLocks,
    gate_keys,
    select_after,
    select_from,
)
from ledger.store.postgres.sql_append import INSERTION_SORT_AT_MOST
from ledger.store.postgres.sql_names import StoreNames
from ledger.store.postgres.values import (
    APPEND_ARGUMENT_TYPES,
    DOLLAR_QUOTE,
    append_arrays,
    append_parameters,
    persistence_error,
    stored_events_from_binary,
)

__all__ = [
    # Kept importable from here, where they were defined before the SQL moved out.
    "ALLOCATION_LOCK",
    "INSERTION_SORT_AT_MOST",
    "POOL_MAX_IDLE_SECONDS",
    "READ_CHECK_SALT",
    "SEAL_LOCK",
    "ChainedPostgresRecorder",
]

POOL_MAX_IDLE_SECONDS = 10.0
"""How long a connection beyond the one the pool keeps may stay unused before it is closed
(`ledger.store.settings`: a ledger runs one command at a time, on one connection)."""


class ChainedPostgresRecorder(PostgresApplicationRecorder):
    """PostgreSQL recorder with a hash chain sealed after commit and an append that holds no
    table lock."""

    def __init__(self, datastore: PostgresDatastore, *,
                 events_table_name: str = "stored_events") -> None:
        # Before the library's recorder, which connects (`pool`). The idle limit is read
        # here, when the recorder is made, as before (a test shortens it).
        open_pool(datastore, max_idle_seconds=POOL_MAX_IDLE_SECONDS)
        super().__init__(datastore, events_table_name=events_table_name)
        names = StoreNames(self.datastore.schema, self.events_table_name)
        self._queue = QueueLocks(self.datastore, names)
        self._held = self._queue.held
        self.sql_create_statements.extend(sql.create_statements(
            names, lock_timeout=self.datastore.lock_timeout, channel=self.channel_name,
            notify_seconds=notifications.NOTIFY_SECONDS))
        self._append_statement = sql_append.append_call(names)
        self._append_prepared = PreparedStatement(sql_append.prepared_append_name(names),
                                                  sql_append.prepared_append(names))
        self._horizon_statement = sql_horizon.horizon_statement(names)
        self._seal_statement = sql_seal.seal_statement(names)
        self._try_seal_lock, self._unlock_seal_lock = sql_seal.seal_lock_statements(names)
        self._head_statement = sql_horizon.head_statement(names)
        self._registrations_statement = sql_horizon.registrations_statement(names)
        self._sealed_head_statement = sql_seal.sealed_head_statement(names)
        self._may_seal_statement = sql_seal.may_seal_statement(names)
        self._select_chained = sql_seal.select_chained_query(names)
        self._select_chained_legacy = sql_seal.select_chained_query(names, digests=False)
        self._digest_column = sql_seal.digest_column_query(names)
        self._digests = False
        self._version_breaks = sql_seal.version_breaks_query(names)
        self._qualified_table = names.qualified_table
        self.seals_table_name = names.seals_table

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
    def select_events_after(self, versions: Sequence[tuple[UUID, int]]) -> list[StoredEvent]:
        """The events of several streams after the versions given, in one round trip."""
        with self._connection() as connection:
            try:
                rows = run_together(connection, [select_after(self._qualified_table, versions)],
                                    binary=True)
            except psycopg.Error as error:
                raise persistence_error(error) from error
        return stored_events_from_binary(rows)

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
    def select_events_from(self, starts: Sequence[tuple[UUID, int]],
                           lte: int | None = None) -> list[tuple[int, StoredEvent]]:
        """The events of several streams from the versions given (inclusive), up to version
        `lte`, each with its position, in stream order then version order: one round trip."""
        if not starts:
            return []
        with self._connection() as connection:
            try:
                result = run_together(connection, [select_from(self._qualified_table, starts,
                                                               lte)], binary=True)
            except psycopg.Error as error:
                raise persistence_error(error) from error
        positions = [int.from_bytes(result.get_value(row, 4) or b"", "big", signed=True)
                     for row in range(result.ntuples)]
        return list(zip(positions, stored_events_from_binary(result), strict=True))

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
    def select_latest(self, qualified_table: str, ids: Sequence[UUID],
                      lte: int | None = None) -> list[StoredEvent]:
        """The latest row (at or below version `lte`) of each of several streams of another
        table of this store's (the snapshots'), in one round trip, on this thread's queue
        connection if it holds one: a load in the queue's turn opens no second connection."""
        if not ids:
            return []
        upto = "" if lte is None else " AND originator_version <= %s"
        statement = (
            "SELECT DISTINCT ON (originator_id) originator_id, originator_version, topic, "
            f"state FROM {qualified_table} WHERE originator_id = ANY(%s){upto} "
            "ORDER BY originator_id, originator_version DESC")
        parameters: tuple[Any, ...] = (list(ids),) if lte is None else (list(ids), lte)
        with self._connection() as connection:
            try:
                with connection.cursor() as cursor:
                    rows = cursor.execute(statement, parameters).fetchall()
            except psycopg.Error as error:
                raise persistence_error(error) from error
        return [StoredEvent(originator_id=row["originator_id"],
                            originator_version=int(row["originator_version"]),
                            topic=row["topic"], state=bytes(row["state"])) for row in rows]

    def streams_locked(self, keys: Sequence[int], versions: Sequence[tuple[UUID, int]],
                       ) -> contextlib.AbstractContextManager[list[StoredEvent]]:
        """Hold the advisory locks of `keys` while the block runs; yield the events of several
        streams after the versions given, selected once the locks are held: the queue's turn
        and what happened before it, in one round trip.

        The keys are taken in order, so two queued writers cannot deadlock, each waiting at
        most the store's lock timeout: a till that froze holding a stream makes the others
        give up (`ConcurrencyConflict`) instead of waiting for ever. The statements hold
        only integers and uuids, written into their text, and go as one pipelined
        transaction that returns binary rows.

        The block's first append made with `serialised=True` runs on the connection holding
        the locks and releases them as soon as it has committed, in its own round trip
        (`insert_events`): the next till in the queue need not wait for this one to read
        the answer and ask for the release.
        """
        return self._queue.streams_locked(keys, versions)

    @contextlib.contextmanager
    def _connection(self) -> Iterator[psycopg.Connection[Any]]:
        """The connection holding this thread's queue locks, if it holds any: whatever the
        command does in the queue's turn (read stale streams, retry its append) then needs
        no second connection, which the pool would open (`ledger.store.settings`). Otherwise one
        of the pool's."""
        held = self._held.locks
        if held is not None and not held.connection.closed:
            yield held.connection
            return
        with pooled_connection(self.datastore.pool) as connection:
            yield connection

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
    def _scalar(self, statement: str, *params: int) -> int | None:
        """The one value a one-row statement of this recorder's returns."""
        with self.datastore.get_connection() as connection, connection.cursor() as cursor:
            cursor.execute(statement, params or None, prepare=True)
            row = cursor.fetchone()
            assert row is not None
            value = next(iter(row.values()))
            return None if value is None else int(value)

    def horizon(self) -> int:
        """The highest position at or below which no append is still in flight: every
        position up to it is committed or will never be. Readers go no further."""
        return self._scalar(self._horizon_statement) or 0

    def select_notifications(self, start: int | None, limit: int, stop: int | None = None,
                             topics: Sequence[str] = (), *,
                             inclusive_of_start: bool = True) -> Sequence[Notification]:
        """The library's, stopped at the horizon: never past an append still in flight."""
        # The horizon is read first, in its own statement: the rows are then read in a
        # snapshot taken after every append at or below it had ended.
        horizon = self.horizon()
        notifications: Sequence[Notification] = super().select_notifications(
            start, limit, horizon if stop is None else min(stop, horizon), topics,
            inclusive_of_start=inclusive_of_start)
        return notifications

    def select_range(self, start: int, stop: int) -> Sequence[Notification]:
        """Every notification from `start` to `stop`, a head read earlier; refused (rather than
        cut short) if the horizon has since fallen below it, e.g. by a reset sequence: whoever
        reads a range treats it as complete."""
        if (horizon := self.horizon()) < stop:
            raise PersistenceError(f"the store's horizon {horizon} fell below {stop}, a head "
                                   "read earlier: was its sequence reset?")
        notifications: Sequence[Notification] = super().select_notifications(
            start, stop - start + 1, stop)
        return notifications

    def max_notification_id(self) -> int | None:
        """The highest position at or below the horizon (None in an empty store)."""
        head: int | None = self._scalar(self._head_statement)
        return head

    def seal(self, max_rows: int = 10_000) -> int:
        """Chain up to `max_rows` more events, in position order, up to the horizon; return
        the sealed head (0 if nothing is chained yet). One sealer runs at a time."""
        return self._scalar(self._seal_statement, max_rows) or 0

    def may_seal(self) -> bool:
        """Whether this role may seal (the auditor's may not: `docs/append_only_role.sql`)."""
        return bool(self._scalar(self._may_seal_statement))

    def sealed_head(self) -> int:
        """The last position chained, sealing nothing (0 if none is)."""
        return self._scalar(self._sealed_head_statement) or 0

    def registrations(self) -> list[dict[str, Any]]:
        """Every in-flight registration and allocation lock holder of the store: the lock
        (`registration` or `allocation`), the registered position, the holder's pid and role,
        whether the horizon honours it (its role may append) and how long its transaction has
        run (None where this role may not see it). For reports, not for readers."""
        with self.datastore.get_connection() as connection, connection.cursor() as cursor:
            cursor.execute(self._registrations_statement)
            return [dict(row) for row in cursor.fetchall()]

    def seal_all(self) -> int:
        """Seal everything up to the horizon as it is now; return the sealed head."""
        target, head, sealed = self.horizon(), -1, self.seal()
        while sealed < target and sealed != head:
            head, sealed = sealed, self.seal()
        return sealed

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
    def seal_if_free(self) -> int | None:
        """Seal as `seal_all` does if no other session holds the seal lock at this moment;
        else seal nothing and return None at once. For catch-up, which must not wait: another
        sealer at work seals the same rows, and a stranger holding the lock is named by
        `audit verify` (whose seal fails) and `projections status`."""
        with self.datastore.get_connection() as connection, connection.cursor() as cursor:
            cursor.execute(self._try_seal_lock, prepare=True)
            locked = cursor.fetchone()
            if not (locked and locked["locked"]):
                return None
            try:
                cursor.execute(self._horizon_statement, prepare=True)
                horizon = cursor.fetchone()
                target = int(horizon["horizon"] or 0) if horizon else 0
                head, sealed = -1, self._seal_on(cursor)
                while sealed < target and sealed != head:
                    head, sealed = sealed, self._seal_on(cursor)
                return sealed
            finally:
                cursor.execute(self._unlock_seal_lock, prepare=True)

    def _seal_on(self, cursor: Any, max_rows: int = 10_000) -> int:
        cursor.execute(self._seal_statement, (max_rows,), prepare=True)
        row = cursor.fetchone()
        return int(row["head"] or 0) if row else 0

    def subscribe(self, gt: int | None = None,
                  topics: Sequence[str] = ()) -> Subscription[ApplicationRecorder]:
        """The library's LISTEN/NOTIFY subscription, polling for `notification_window()`
        after each notification, as appends notify at most once per interval."""
        return WindowedPostgresSubscription(recorder=self, gt=gt, topics=topics)

    def append_statement(self, stored_events: Sequence[StoredEvent],
                         expected: Sequence[tuple[UUID, int]] = (),
                         gated: Sequence[int] = ()) -> str:
        """The append as one plain statement, with its arguments in its text, for callers that
        run it on a connection of their own (in a transaction they hold open, say); it
        returns the events' positions. The recorder itself runs the prepared form."""
        for event in stored_events:
            if DOLLAR_QUOTE in event.topic:
                raise ValueError(f"topic {event.topic!r} holds {DOLLAR_QUOTE}")
        arrays = append_arrays(stored_events, expected, gated)
        return (self._append_statement + "(" + ", ".join(
            f"{DOLLAR_QUOTE}{array}{DOLLAR_QUOTE}::{kind}[]" for array, kind in zip(
                arrays, APPEND_ARGUMENT_TYPES, strict=True)) + ") AS appended(notification_id)")

    def append(self, connection: psycopg.Connection[Any], stored_events: Sequence[StoredEvent],
               expected: Sequence[tuple[UUID, int]] = (), gated: Sequence[int] = (), *,
               release_locks: bool = False) -> list[int]:
        """Append `stored_events` in one statement on `connection` (in autocommit mode, it
        is its own transaction); return their positions. See `insert_events`. With
        `release_locks`, the connection's session advisory locks are released right after,
        whether the append committed or failed."""
        # No session lock outlives a failed append: the function releases its allocation
        # lock itself, and an interrupted wait closes the connection.
        try:
            values = self._append_prepared.values(
                connection, append_parameters(stored_events, expected, gated),
                then=UNLOCK_ALL if release_locks else None, binary=True)
        except psycopg.Error as error:
            raise persistence_error(error) from error
        return [int(value) for value in values if value is not None]

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
    def insert_events(self, stored_events: Sequence[StoredEvent],
                      **kwargs: Any) -> Sequence[int] | None:
        """Append `stored_events` in one statement, its own transaction; return their
        positions. `expect_versions=[(id, version), ...]`: fail with an integrity error if
        any of those streams has moved past that version. `serialised=True`: made in
        `streams_locked`, by the till holding the streams' queue locks; the block's first
        such append runs on the locks' connection and releases them as it ends."""
        if not stored_events:
            return []
        expected = kwargs.get("expect_versions") or ()
        serialised = bool(kwargs.get("serialised"))
        held = self._held.locks
        if serialised and held is not None:
            if not held.used:
                held.used = True
                positions = self.append(held.connection, stored_events, expected,
                                        release_locks=True)
                held.released = True
                return positions
            # A retry (`@retry`, after a dropped connection) of an append that released the
            # queue's locks: it no longer holds them, so it passes the gate like any other.
            serialised = False
        # Existing streams are gated unless the caller holds their locks (`serialised`).
        gated = [] if serialised else gate_keys(stored_events)
        with self._connection() as connection:
            return self.append(connection, stored_events, expected, gated)

    def select_chained(self, start: int, limit: int,
                       stop: int | None = None) -> list[dict[str, Any]]:
        """Stored rows from position `start` on (to `stop`), with their chain hashes (inline,
        or sealed after commit; None if not sealed yet) and content digests, for
        verification."""
        with self.datastore.transaction(commit=False) as cursor:
            if not self._digests:
                # Asked until it is there: a store written before digests existed has no
                # column for them until `ledger init` upgrades it (its rows are all legacy).
                cursor.execute(self._digest_column)
                found = cursor.fetchone()
                self._digests = bool(found and found["found"])
            cursor.execute(self._select_chained if self._digests
                           else self._select_chained_legacy,
                           (start, stop if stop is not None else 2**63 - 1, limit))
            return [dict(row) for row in cursor.fetchall()]

    def select_version_breaks(self, stop: int, limit: int) -> list[dict[str, Any]]:
        """Rows up to `stop` that break their stream's run of versions
        (`ledger.store.hash_chain.VERSION_BREAKS_SQL`)."""
        with self.datastore.transaction(commit=False) as cursor:
            cursor.execute(self._version_breaks, (stop, limit))
            return [dict(row) for row in cursor.fetchall()]
