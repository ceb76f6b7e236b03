"""The PostgreSQL event recorder: the library's, with a hash chain sealed after commit and an
append that holds no table lock.

An append is one statement, a call of the `<table>_append` function, run as its own
transaction: prepared once per connection and sent with seven array literals the recorder
writes itself as text parameters, which costs the client less than psycopg adapting seven
arrays (`ledger.prepared`).

Global order without a table lock: positions (notification ids) come from a sequence when rows
are inserted, but rows become visible when their transactions commit, and a reader that passed
a position never looks back (shared/notes/ordering.md). The library keeps the orders equal by
locking the events table for the whole inserting transaction, commit flush included, so that no
two appends ever commit together. Here an append instead registers itself as in flight, as a
transaction-scoped advisory lock keyed by the lowest position it can get, before it takes its
positions, as one contiguous block under a lock held for those few statements only. Readers go
no further than the horizon (`<table>_horizon()`): the sequence's last value, read first, or
just below the lowest registered position. A transaction's locks are released only once its
commit is visible, so every position up to the horizon is committed or never will be. Appends
commit concurrently, and the server flushes them together. Every lock key carries the events
table's oid (stores in other schemas keep to themselves); the functions run as the tables'
owner, so that roles without INSERT can append only through them; and the sequence caches
no values, so that its last value plus one is the next position.

Hash chain (`ledger.hash_chain`): `audit verify` reports by position where the chain breaks.
Here the link is sealed after commit, by one sealer at a time (`<table>_seal`), in position
order, up to the horizon, into `<table>_seals`; rows recorded by earlier versions carry their
link inline. (On SQLite it is computed in the inserting transaction: `ledger.sqlite_recorder`.)

Read checks: a command may have decided on streams it does not write (the outlet's policy,
say). `insert_events(..., expect_versions=[(id, version), ...])` fails the insert with an
integrity error if any of those streams has moved past the version the decision saw. The append
takes a shared advisory lock on each stream it read and an exclusive one on each existing stream
it writes, in key order, until commit, and checks after that: a stream read cannot move on
before the append commits. The streams a command writes need no check: their next version's
uniqueness already is one.

Gate: a till that lost a race on a stream retries holding an exclusive advisory lock on it
(`LedgerApplication.serialised`); every other append to an existing stream first takes the
shared lock of its key without waiting, and fails as a conflict if it cannot, so the losers of
a race queue instead of losing again. The queued till's append runs on the connection holding
the lock and releases it as it ends, in the same round trip (`streams_locked`).

Notifications (`ledger.notifications`): a NOTIFY holds a cluster-wide lock from before its
transaction's commit until after the commit's flush, serialising notifying commits. The append
function notifies at most once per `NOTIFY_SECONDS` per session, and whoever listens polls for
`notification_window()` after each notification, so every append is still seen within that
window of its commit (`projections.follow`, `subscribe`).
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
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
from psycopg.sql import SQL, Identifier, Literal

from ledger.domain.errors import ConcurrencyConflict
from ledger.store.hash_chain import CHAIN_LINK_SQL
from ledger.store.postgres import notifications
from ledger.store.postgres.notifications import WindowedPostgresSubscription, notified_at_setting
from ledger.store.postgres.prepared import PreparedStatement, run_together
from ledger.store.postgres.values import (
    APPEND_ARGUMENT_TYPES,
    DOLLAR_QUOTE,
    append_arrays,
    array_literal,
    as_uuid,
    persistence_error,
    stored_events_from_binary,
    stream_key,
)


def _advisory_key(name: str) -> int:
    """A fixed advisory lock key (64-bit, signed) named for what it guards."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


# Every key below is also XORed with the events table's oid: stores in other schemas of the
# same database have locks, and horizons, of their own.
ALLOCATION_LOCK = _advisory_key("stockledger:allocate-positions")
"""Held (session-level) only while an append registers and takes its block of positions."""
SEAL_LOCK = _advisory_key("stockledger:seal-chain")
"""Held by the one sealer at a time."""
READ_CHECK_SALT = _advisory_key("stockledger:read-check")
"""Read-check locks are keyed by the server's own 64-bit hash of the stream id, seeded with
this salt (`uuid_hash_extended`, one call rather than the id's text cut and cast to bits): a
key space apart from the queue's keys on the same stream. Only the append function takes them."""
# In-flight appends register their first position as a two-key advisory lock (the events
# table's oid, the position's low 32 bits): a key space no other lock here uses. Readers
# recover the position from its low bits and the sequence's last value, which no in-flight
# registration can be 2**31 positions away from.

_READ_CHECK_KEY_SQL = "uuid_hash_extended({id}, {salt}) # {table_oid}"

POOL_MAX_IDLE_SECONDS = 10.0
"""How long a connection beyond the one the pool keeps may stay unused before it is closed
(`ledger.settings`: a ledger runs one command at a time, on one connection)."""

INSERTION_SORT_AT_MOST = 16
"""The append function sorts this many read-check keys or fewer by insertion in PL/pgSQL, more
with a query: insertion takes a 1-line sale's two keys at a tenth of the query's cost, but
grows with the square of their number (a 500-line sale's 500 took 69 ms against 10)."""


def _connect_timeout(pool: Any) -> int:
    """libpq's connect timeout for a pool: its checkouts' own (whole seconds, at least 1)."""
    return max(1, int(pool.timeout))


def _why_unconnected(datastore: PostgresDatastore) -> psycopg.Error | None:
    """Why the pool cannot connect (no such database, role, server...), from one attempt made
    as it makes them: the pool itself says only that it gave up waiting."""
    pool = datastore.pool
    kwargs = {"connect_timeout": _connect_timeout(pool),
              **(pool.kwargs() if callable(pool.kwargs) else pool.kwargs or {})}
    conninfo = pool.conninfo() if callable(pool.conninfo) else pool.conninfo
    try:
        psycopg.connect(conninfo, **kwargs).close()
    except psycopg.Error as error:
        return error
    return None


class _HeldLocks:
    """A connection holding a queue's session advisory locks; whether an append has run on
    it, and whether that append released them (or closed the connection, which does too)."""

    def __init__(self, connection: psycopg.Connection[Any]) -> None:
        self.connection = connection
        self.used = False
        self.released = False


class _ThreadsHeldLocks(threading.local):
    """The locks the current thread holds in `streams_locked`, if any."""

    locks: _HeldLocks | None = None


_UNLOCK_ALL = b"SELECT pg_advisory_unlock_all()"


class ChainedPostgresRecorder(PostgresApplicationRecorder):
    """PostgreSQL recorder with a hash chain sealed after commit and an append that holds no
    table lock."""

    def __init__(self, datastore: PostgresDatastore, *,
                 events_table_name: str = "stored_events") -> None:
        # The pool keeps one connection (`ledger.settings`). It is opened ready before the
        # first checkout: a checkout that finds none idle makes the pool open another, which
        # would then take every other command. (Not through the datastore's
        # `pool_open_timeout`: that waits for a full pool on every checkout, so a thread
        # already holding the one connection would wait for itself.) One opened later
        # anyway (threads at once, the kept one replaced at its age limit) is closed soon.
        pool = datastore.pool
        if pool.closed:
            pool.max_idle = POOL_MAX_IDLE_SECONDS
            if isinstance(pool.kwargs, dict):
                # The pool's own attempts give up when its checkouts do.
                pool.kwargs.setdefault("connect_timeout", _connect_timeout(pool))
            try:
                pool.open(wait=True, timeout=pool.timeout)
            except psycopg.Error as error:
                raise persistence_error(_why_unconnected(datastore) or error) from error
        super().__init__(datastore, events_table_name=events_table_name)
        self._held = _ThreadsHeldLocks()
        schema = Identifier(self.datastore.schema)
        table = Identifier(self.events_table_name)
        seals = Identifier(f"{self.events_table_name}_seals")
        chain_trigger = Identifier(f"{self.events_table_name}_chain")
        append_function = Identifier(f"{self.events_table_name}_append")
        horizon_function = Identifier(f"{self.events_table_name}_horizon")
        seal_function = Identifier(f"{self.events_table_name}_seal")
        qualified = SQL("{schema}.{table}").format(schema=schema, table=table).as_string(None)
        sequence = f"pg_get_serial_sequence({Literal(qualified).as_string(None)}, " \
                   "'notification_id')::regclass"
        table_oid = f"{Literal(qualified).as_string(None)}::regclass::oid::bigint"
        names = {"schema": schema, "table": table, "seals": seals, "function": append_function,
                 "horizon": horizon_function, "seal": seal_function, "sequence": SQL(sequence),
                 "table_oid": SQL(f"({table_oid})")}
        self._table_oid = f"({table_oid})"
        self.sql_create_statements.extend([
            # Rows recorded before seals existed carry their link inline.
            SQL("ALTER TABLE {schema}.{table} ADD COLUMN IF NOT EXISTS chain_hash bytea")
            .format(**names),
            # Positions are registered as the sequence's last value plus one, which is the
            # next value only while no session caches a block of values.
            SQL("DO $cache$ BEGIN EXECUTE format('ALTER SEQUENCE %s CACHE 1', {sequence}); "
                "END $cache$").format(**names),
            SQL("CREATE TABLE IF NOT EXISTS {schema}.{seals} ("
                "position bigint PRIMARY KEY, chain_hash bytea NOT NULL)").format(**names),
            # The chain trigger of earlier versions read its predecessor at insert time, which
            # is only right while inserts are serialised.
            SQL("DROP TRIGGER IF EXISTS {trigger} ON {schema}.{table}").format(
                trigger=chain_trigger, **names),
            SQL("DROP FUNCTION IF EXISTS {schema}.{trigger}()").format(
                trigger=chain_trigger, **names),
            SQL(
                "CREATE OR REPLACE FUNCTION {schema}.{horizon}() RETURNS bigint "
                "LANGUAGE plpgsql VOLATILE AS $body$ "
                "DECLARE last bigint; registered bigint; "
                "BEGIN "
                # The sequence first, the registrations after: an append that registers
                # after this read takes positions above `last`.
                "  last := coalesce(pg_sequence_last_value({sequence}), 0); "
                "  SELECT min(last + 2147483648 - (((last + 2147483648 - objid::bigint) "
                "                                  % 4294967296) + 4294967296) % 4294967296) "
                "    INTO registered FROM pg_locks "
                "    WHERE locktype = 'advisory' AND objsubid = 2 "
                "      AND database = (SELECT oid FROM pg_database "
                "                      WHERE datname = current_database()) "
                "      AND classid = {table_oid}::oid; "
                "  RETURN CASE WHEN registered IS NULL THEN last "
                "              ELSE least(last, registered - 1) END; "
                "END $body$"
            ).format(**names),
        ])
        self.sql_create_statements.append(SQL(
            "CREATE OR REPLACE FUNCTION {schema}.{function}("
            "  ids uuid[], versions bigint[], topics text[], states bytea[],"
            "  expect_ids uuid[], expect_versions bigint[], gate_keys bigint[]) "
            # As the owner: the application's roles may append through this function only,
            # so that no insert can skip the registration (`docs/append_only_role.sql`).
            "RETURNS SETOF bigint LANGUAGE plpgsql SECURITY DEFINER "
            "SET search_path = pg_catalog, pg_temp AS $body$ "
            "DECLARE positions bigint[]; first bigint; moment float8; seq regclass; "
            "  lock_keys bigint[]; exclusive boolean[]; n integer := 0; j integer; "
            "  swap_key bigint; swap_exclusive boolean; "
            "BEGIN "
            # Until the transaction ends: a caller holding it open waits no longer either.
            "  PERFORM set_config('lock_timeout', {lock_timeout}, true); "
            # A stream whose exclusive advisory lock a till that lost a race holds is that
            # till's to write next: everyone else backs off and queues behind it.
            "  FOR i IN 1 .. coalesce(array_length(gate_keys, 1), 0) LOOP "
            "    IF NOT pg_try_advisory_xact_lock_shared(gate_keys[i] # {table_oid}) THEN "
            "      RAISE EXCEPTION USING ERRCODE = 'unique_violation', "
            "        MESSAGE = 'a till that lost a race on this stream is writing it'; "
            "    END IF; "
            "  END LOOP; "
            # Read checks: a shared lock on each stream the decision read, an exclusive one
            # on each existing stream written, in key order (so appends cannot deadlock),
            # until commit; a stream read can then not move on before this append commits.
            # A sale's few keys are sorted by insertion, which costs a tenth of the query
            # that sorts a many-line command's.
            "  FOR i IN 1 .. coalesce(array_length(expect_ids, 1), 0) LOOP "
            "    n := n + 1; lock_keys[n] := {read_key_e}; "
            "    exclusive[n] := false; "
            "  END LOOP; "
            "  FOR i IN 1 .. coalesce(array_length(ids, 1), 0) LOOP "
            "    IF versions[i] > 1 THEN "
            "      n := n + 1; lock_keys[n] := {read_key_w}; "
            "      exclusive[n] := true; "
            "    END IF; "
            "  END LOOP; "
            "  IF n > {insertion_sort_at_most} THEN "
            "    SELECT array_agg(k ORDER BY k, x DESC), array_agg(x ORDER BY k, x DESC) "
            "      INTO lock_keys, exclusive FROM unnest(lock_keys, exclusive) AS u(k, x); "
            "  ELSE "
            "    FOR i IN 2 .. n LOOP "
            "      j := i; "
            "      WHILE j > 1 AND (lock_keys[j - 1] > lock_keys[j] OR (lock_keys[j - 1] = "
            "          lock_keys[j] AND exclusive[j] AND NOT exclusive[j - 1])) LOOP "
            "        swap_key := lock_keys[j]; lock_keys[j] := lock_keys[j - 1]; "
            "        lock_keys[j - 1] := swap_key; "
            "        swap_exclusive := exclusive[j]; exclusive[j] := exclusive[j - 1]; "
            "        exclusive[j - 1] := swap_exclusive; "
            "        j := j - 1; "
            "      END LOOP; "
            "    END LOOP; "
            "  END IF; "
            # Of equal keys the first is exclusive if any is; the others add nothing.
            "  FOR i IN 1 .. n LOOP "
            "    IF i = 1 OR lock_keys[i] <> lock_keys[i - 1] THEN "
            "      IF exclusive[i] THEN PERFORM pg_advisory_xact_lock(lock_keys[i]); "
            "      ELSE PERFORM pg_advisory_xact_lock_shared(lock_keys[i]); END IF; "
            "    END IF; "
            "  END LOOP; "
            # One index probe per stream: a join over the arrays gets a generic plan that
            # may scan the table.
            "  FOR i IN 1 .. coalesce(array_length(expect_ids, 1), 0) LOOP "
            "    IF EXISTS (SELECT 1 FROM {schema}.{table} WHERE originator_id = expect_ids[i] "
            "               AND originator_version > expect_versions[i]) THEN "
            "      RAISE EXCEPTION USING ERRCODE = 'unique_violation', "
            "        MESSAGE = 'a stream the decision read has moved on'; "
            "    END IF; "
            "  END LOOP; "
            # Positions: registered as in flight (until commit) before they are taken, and
            # taken as one block, under a lock held only for these few statements.
            # The lock is the session's: a statement cancelled or failed while holding it
            # (a timeout, a sequence at its maximum) releases it here, or every later append
            # of every session would wait for this one's session to end.
            "  seq := {sequence}; "
            "  BEGIN "
            "    PERFORM pg_advisory_lock({allocation} # {table_oid}); "
            "    first := coalesce(pg_sequence_last_value(seq), 0) + 1; "
            "    PERFORM pg_advisory_xact_lock_shared((({table_oid} << 32) >> 32)::int4, "
            "                                         ((first << 32) >> 32)::int4); "
            "    FOR i IN 1 .. coalesce(array_length(ids, 1), 0) LOOP "
            "      positions[i] := nextval(seq); "
            "    END LOOP; "
            "  EXCEPTION WHEN query_canceled OR others THEN "
            "    IF EXISTS (SELECT 1 FROM pg_catalog.pg_locks WHERE locktype = 'advisory' "
            "               AND pid = pg_backend_pid() AND granted AND objsubid = 1 "
            "               AND classid = ((({allocation} # {table_oid}) >> 32) "
            "                              & 4294967295)::oid "
            "               AND objid = (({allocation} # {table_oid}) & 4294967295)::oid) THEN "
            "      PERFORM pg_advisory_unlock({allocation} # {table_oid}); "
            "    END IF; "
            "    RAISE; "
            "  END; "
            "  PERFORM pg_advisory_unlock({allocation} # {table_oid}); "
            # NOTIFY takes a cluster-wide lock from before the commit until after its
            # flush, serialising every notifying commit: one per session per interval is
            # enough to wake a follower, which then polls for `notification_window()`.
            "  moment := extract(epoch FROM clock_timestamp()); "
            "  IF moment >= coalesce(nullif(current_setting({notified_at}, true), '')::float8, "
            "                        0) + {interval} THEN "
            "    PERFORM pg_notify({channel}, ''); "
            "    PERFORM set_config({notified_at}, moment::text, false); "
            "  END IF; "
            "  INSERT INTO {schema}.{table} "
            "    (originator_id, originator_version, topic, state, notification_id) "
            "    SELECT * FROM unnest(ids, versions, topics, states, positions); "
            "  FOR i IN 1 .. coalesce(array_length(positions, 1), 0) LOOP "
            "    RETURN NEXT positions[i]; "
            "  END LOOP; "
            "END $body$"
        ).format(lock_timeout=f"{self.datastore.lock_timeout}s", channel=self.channel_name,
                 notified_at=notified_at_setting(self.channel_name),
                 interval=SQL(repr(float(notifications.NOTIFY_SECONDS))),
                 read_key_e=SQL(_READ_CHECK_KEY_SQL.format(
                     id="expect_ids[i]", salt=READ_CHECK_SALT, table_oid=names["table_oid"]
                     .as_string(None))),
                 read_key_w=SQL(_READ_CHECK_KEY_SQL.format(
                     id="ids[i]", salt=READ_CHECK_SALT, table_oid=names["table_oid"]
                     .as_string(None))),
                 allocation=SQL(str(ALLOCATION_LOCK)),
                 insertion_sort_at_most=SQL(str(INSERTION_SORT_AT_MOST)), **names))
        self.sql_create_statements.append(SQL(
            "CREATE OR REPLACE FUNCTION {schema}.{seal}(max_rows integer) RETURNS bigint "
            "LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp "
            "AS $body$ "
            "DECLARE horizon bigint; tail bigint; previous bytea; r record; n integer := 0; "
            "  positions bigint[]; hashes bytea[]; "
            "BEGIN "
            "  PERFORM pg_advisory_xact_lock({seal_lock} # {table_oid}); "
            "  horizon := {schema}.{horizon}(); "
            "  SELECT position, chain_hash INTO tail, previous FROM {schema}.{seals} "
            "    ORDER BY position DESC LIMIT 1; "
            "  IF NOT FOUND THEN "
            "    SELECT notification_id, chain_hash INTO tail, previous FROM {schema}.{table} "
            "      WHERE chain_hash IS NOT NULL ORDER BY notification_id DESC LIMIT 1; "
            "  END IF; "
            "  tail := coalesce(tail, 0); "
            "  FOR r IN SELECT notification_id, originator_id, originator_version, topic, state "
            "      FROM {schema}.{table} WHERE notification_id > tail "
            "      AND notification_id <= horizon ORDER BY notification_id LIMIT max_rows LOOP "
            "    n := n + 1; "
            "    previous := {link}; "
            "    positions[n] := r.notification_id; "
            "    hashes[n] := previous; "
            "  END LOOP; "
            "  INSERT INTO {schema}.{seals} (position, chain_hash) "
            "    SELECT * FROM unnest(positions, hashes); "
            "  RETURN CASE WHEN n = 0 THEN tail ELSE positions[n] END; "
            "END $body$"
        ).format(seal_lock=SQL(str(SEAL_LOCK)),
                 link=SQL(CHAIN_LINK_SQL.format(position="r.notification_id",
                                             originator_id="r.originator_id",
                                             version="r.originator_version", topic="r.topic",
                                             state="r.state")), **names))
        self._append_statement = SQL("SELECT notification_id FROM {schema}.{function}").format(
            **names).as_string(None)
        self._append_prepared = PreparedStatement(
            "stockledger_append_" + hashlib.sha256(qualified.encode()).hexdigest()[:16],
            self._append_statement + "(" + ", ".join(
                f"${n}::{kind}[]" for n, kind in enumerate(APPEND_ARGUMENT_TYPES, 1))
            + ") AS appended(notification_id)")
        self._horizon_statement = SQL("SELECT {schema}.{horizon}() AS horizon").format(
            **names).as_string(None)
        self._seal_statement = SQL("SELECT {schema}.{seal}(%s) AS head").format(
            **names).as_string(None)
        # The horizon as an init plan, evaluated once: the head in one round trip. Rows that
        # commit while it is evaluated are missing from the statement's snapshot, which
        # only makes the head lower, never past an append in flight.
        self._head_statement = SQL(
            "SELECT max(notification_id) AS max FROM {schema}.{table} "
            "WHERE notification_id <= (SELECT {schema}.{horizon}())").format(
                **names).as_string(None)
        self._qualified_table = qualified
        self.seals_table_name = f"{self.events_table_name}_seals"

    def _select_after(self, versions: Sequence[tuple[UUID, int]]) -> bytes:
        """The statement selecting the events of several streams after the versions given,
        its arguments in its text (uuids and integers only), for `stored_events_from_binary`."""
        ids = array_literal([as_uuid(i).hex for i, _ in versions])
        after = array_literal([str(int(v)) for _, v in versions])
        return (
            "SELECT e.originator_id, e.originator_version, e.topic, e.state "
            f"FROM unnest('{ids}'::uuid[], '{after}'::bigint[]) AS known(id, version) "
            f"JOIN {self._qualified_table} e ON e.originator_id = known.id "
            "AND e.originator_version > known.version "
            "ORDER BY e.originator_id, e.originator_version"
        ).encode()

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
    def select_events_after(self, versions: Sequence[tuple[UUID, int]]) -> list[StoredEvent]:
        """The events of several streams after the versions given, in one round trip."""
        with self._connection() as connection:
            try:
                rows = run_together(connection, [self._select_after(versions)], binary=True)
            except psycopg.Error as error:
                raise persistence_error(error) from error
        return stored_events_from_binary(rows)

    @contextlib.contextmanager
    def streams_locked(self, keys: Sequence[int], versions: Sequence[tuple[UUID, int]],
                       ) -> Iterator[list[StoredEvent]]:
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
        # One transaction: the timeout is the lock waits' only, and the rows are selected
        # in a snapshot taken once the locks are held.
        statements = [f"SELECT set_config('lock_timeout', "
                      f"'{int(self.datastore.lock_timeout)}s', true)".encode(),
                      *(f"SELECT pg_advisory_lock({int(key)} # {self._table_oid})".encode()
                        for key in keys)]
        if versions:
            statements.append(self._select_after(versions))
        with self._pooled_connection() as connection:
            held = _HeldLocks(connection)
            try:
                try:
                    rows = run_together(connection, statements, binary=True)
                except psycopg.errors.LockNotAvailable as error:
                    raise ConcurrencyConflict(f"waited {self.datastore.lock_timeout}s for a "
                                              "stream another till holds") from error
                except psycopg.Error as error:
                    raise persistence_error(error) from error
                self._held.locks = held
                yield stored_events_from_binary(rows) if versions else []
            finally:
                self._held.locks = None
                if not held.released and not connection.closed:
                    # Session locks outlive a failed statement: release whatever was taken.
                    with contextlib.suppress(psycopg.Error):
                        connection.execute(_UNLOCK_ALL)

    @contextlib.contextmanager
    def _connection(self) -> Iterator[psycopg.Connection[Any]]:
        """The connection holding this thread's queue locks, if it holds any: whatever the
        command does in the queue's turn (read stale streams, retry its append) then needs
        no second connection, which the pool would open (`ledger.settings`). Otherwise one
        of the pool's."""
        held = self._held.locks
        if held is not None and not held.connection.closed:
            yield held.connection
            return
        with self._pooled_connection() as connection:
            yield connection

    @contextlib.contextmanager
    def _pooled_connection(self) -> Iterator[psycopg.Connection[Any]]:
        """A connection of the datastore's pool (opened with the recorder), checked out and
        returned directly: the datastore's own context managers around the checkout cost a
        sale more client CPU than its round trip."""
        pool = self.datastore.pool
        try:
            connection = pool.getconn()
        except psycopg.Error as error:
            raise persistence_error(error) from error
        try:
            yield connection
        finally:
            pool.putconn(connection)

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
        head: int | None = self._scalar(self._head_statement)
        return head

    def seal(self, max_rows: int = 10_000) -> int:
        """Chain up to `max_rows` more events, in position order, up to the horizon; return
        the sealed head (0 if nothing is chained yet). One sealer runs at a time."""
        return self._scalar(self._seal_statement, max_rows) or 0

    def seal_all(self) -> int:
        """Seal everything up to the horizon as it is now; return the sealed head."""
        target, head, sealed = self.horizon(), -1, self.seal()
        while sealed < target and sealed != head:
            head, sealed = sealed, self.seal()
        return sealed

    def subscribe(self, gt: int | None = None,
                  topics: Sequence[str] = ()) -> Subscription[ApplicationRecorder]:
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
            values = self._append_prepared.values(connection, [
                array.encode() for array in append_arrays(stored_events, expected, gated)],
                then=_UNLOCK_ALL if release_locks else None)
        except psycopg.Error as error:
            raise persistence_error(error) from error
        return [int(value) for value in values if value is not None]

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
    def insert_events(self, stored_events: Sequence[StoredEvent],
                      **kwargs: Any) -> Sequence[int] | None:
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
        # Existing streams are gated unless the caller holds their locks (`serialised`);
        # a new stream (version 1) cannot be contended by a queued retry.
        gated = [] if serialised else sorted({
            stream_key(e.originator_id) for e in stored_events if e.originator_version > 1})
        with self._connection() as connection:
            return self.append(connection, stored_events, expected, gated)

    def select_chained(self, start: int, limit: int,
                       stop: int | None = None) -> list[dict[str, Any]]:
        """Stored rows from position `start` on (to `stop`), with their chain hashes, for
        verification: inline, or sealed after commit."""
        query = SQL(
            "SELECT e.notification_id AS position, e.originator_id, e.originator_version, "
            "e.topic, e.state, coalesce(e.chain_hash, s.chain_hash) AS chain_hash "
            "FROM {schema}.{table} e LEFT JOIN {schema}.{seals} s "
            "ON s.position = e.notification_id "
            "WHERE e.notification_id >= %s AND e.notification_id <= %s "
            "ORDER BY e.notification_id LIMIT %s"
        ).format(schema=Identifier(self.datastore.schema),
                 table=Identifier(self.events_table_name),
                 seals=Identifier(self.seals_table_name))
        with self.datastore.transaction(commit=False) as cursor:
            cursor.execute(query, (start, stop if stop is not None else 2**63 - 1, limit))
            return [dict(row) for row in cursor.fetchall()]
