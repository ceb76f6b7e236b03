"""The writer queue on the store's side: the exclusive locks a till that lost a race holds on
its streams, taken together with the read of what it missed (`docs/design.md`, "Losers write
next"; the command loop's side is `queued_writers`).

A till that lost a race on a stream retries holding an exclusive advisory lock on it, keyed
by the stream's queue key (`values.stream_key`, XORed with the events table's oid); every
other append to an existing stream first takes the shared lock of its key without waiting,
and fails as a conflict if it cannot (the gate, `sql_append.GATE`), so the losers of a race
queue instead of losing again. The queued till's append runs on the connection holding the
locks and releases them as it ends, in the same round trip (the recorder's `insert_events`,
`prepared.PreparedStatement.values`).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Sequence
from typing import Any
from uuid import UUID

import psycopg
from eventsourcing.persistence import StoredEvent
from eventsourcing.postgres import PostgresDatastore

from ledger.domain.errors import ConcurrencyConflict
from ledger.store.postgres.pool import pooled_connection
from ledger.store.postgres.prepared import run_together
from ledger.store.postgres.sql_names import StoreNames
from ledger.store.postgres.values import (
    array_literal,
    as_uuid,
    persistence_error,
    stored_events_from_binary,
    stream_key,
)

UNLOCK_ALL = b"SELECT pg_advisory_unlock_all()"
"""Releases the session's advisory locks: the queue's are its only session locks that outlive
a statement (the append releases its allocation lock itself)."""


class HeldLocks:
    """A connection holding a queue's session advisory locks; whether an append has run on
    it, and whether that append released them (or closed the connection, which does too)."""

    def __init__(self, connection: psycopg.Connection[Any]) -> None:
        self.connection = connection
        self.used = False
        self.released = False


class ThreadsHeldLocks(threading.local):
    """The locks the current thread holds in `streams_locked`, if any."""

    locks: HeldLocks | None = None


def select_after(qualified_table: str, versions: Sequence[tuple[UUID, int]]) -> bytes:
    """The statement selecting the events of several streams after the versions given, its
    arguments in its text (uuids and integers only), for `stored_events_from_binary`."""
    ids = array_literal([as_uuid(i).hex for i, _ in versions])
    after = array_literal([str(int(v)) for _, v in versions])
    return (
        "SELECT e.originator_id, e.originator_version, e.topic, e.state "
        f"FROM unnest('{ids}'::uuid[], '{after}'::bigint[]) AS known(id, version) "
        f"JOIN {qualified_table} e ON e.originator_id = known.id "
        "AND e.originator_version > known.version "
        "ORDER BY e.originator_id, e.originator_version"
    ).encode()


def select_from(qualified_table: str, starts: Sequence[tuple[UUID, int]],
                lte: int | None = None) -> bytes:
    """The statement selecting the events of several streams from the versions given
    (inclusive), up to version `lte`, with their positions last, its arguments in its text
    (uuids and integers only), for `stored_events_from_binary`."""
    ids = array_literal([as_uuid(i).hex for i, _ in starts])
    start = array_literal([str(int(v)) for _, v in starts])
    upto = "" if lte is None else f"AND e.originator_version <= {int(lte)} "
    return (
        "SELECT e.originator_id, e.originator_version, e.topic, e.state, e.notification_id "
        f"FROM unnest('{ids}'::uuid[], '{start}'::bigint[]) AS wanted(id, version) "
        f"JOIN {qualified_table} e ON e.originator_id = wanted.id "
        f"AND e.originator_version >= wanted.version {upto}"
        "ORDER BY e.originator_id, e.originator_version"
    ).encode()


def gate_keys(stored_events: Sequence[StoredEvent]) -> list[int]:
    """The queue keys the append function's gate probes for `stored_events`, in key order:
    their existing streams'. A new stream (version 1) cannot be contended by a queued retry,
    nor can the later events of a stream this append starts (an import's new stock item,
    opened and received into): its version 1 is unique, so the append fails if any other
    wrote the stream first."""
    started = {e.originator_id for e in stored_events if e.originator_version == 1}
    return sorted({stream_key(e.originator_id) for e in stored_events
                   if e.originator_version > 1 and e.originator_id not in started})


def lock_statements(keys: Sequence[int], *, lock_timeout: int, table_oid: str) -> list[bytes]:
    """The statements taking the queue's locks of `keys`, in the order given, each waiting at
    most `lock_timeout` seconds. The timeout is set local to their transaction: it is the lock
    waits' only, and needs no `SET` and `RESET` of the session."""
    return [f"SELECT set_config('lock_timeout', '{int(lock_timeout)}s', true)".encode(),
            *(f"SELECT pg_advisory_lock({int(key)} # {table_oid})".encode() for key in keys)]


class QueueLocks:
    """The writer queue's locks of one store, and which of them the current thread holds."""

    def __init__(self, datastore: PostgresDatastore, names: StoreNames) -> None:
        self.held = ThreadsHeldLocks()
        self._datastore = datastore
        self._table_oid = names.table_oid
        self._qualified_table = names.qualified_table

    @contextlib.contextmanager
    def streams_locked(self, keys: Sequence[int], versions: Sequence[tuple[UUID, int]],
                       ) -> Iterator[list[StoredEvent]]:
        """Hold the locks of `keys` while the block runs; yield the events of the streams
        after the versions given, selected once the locks are held (the recorder's
        `streams_locked`)."""
        lock_timeout = self._datastore.lock_timeout
        # One transaction, in one round trip: the rows are selected in a snapshot taken
        # once the locks are held.
        statements = lock_statements(keys, lock_timeout=lock_timeout, table_oid=self._table_oid)
        if versions:
            statements.append(select_after(self._qualified_table, versions))
        with pooled_connection(self._datastore.pool) as connection:
            held = HeldLocks(connection)
            try:
                try:
                    rows = run_together(connection, statements, binary=True)
                except psycopg.errors.LockNotAvailable as error:
                    raise ConcurrencyConflict(f"waited {lock_timeout}s for a stream another "
                                              "till holds") from error
                except psycopg.Error as error:
                    raise persistence_error(error) from error
                self.held.locks = held
                yield stored_events_from_binary(rows) if versions else []
            finally:
                self.held.locks = None
                if not held.released and not connection.closed:
                    # Session locks outlive a failed statement: release whatever was taken.
                    with contextlib.suppress(psycopg.Error):
                        connection.execute(UNLOCK_ALL)
