"""The append function, `<table>_append`: an append as one statement, its own transaction,
that holds no table lock (`docs/design.md`, "Global order, gaps and the hash chain").

The library keeps position order equal to commit order by locking the events table for the
whole inserting transaction, commit flush included, so that no two appends ever commit
together. This function instead, in order:

1. probes the writer queue's gate (`GATE`);
2. takes the read-check locks and checks the decision's reads (`READ_CHECK_KEYS`,
   `SORT_READ_CHECK_KEYS`, `READ_CHECK_LOCKS`, `READ_CHECKS`);
3. registers itself as in flight, then takes its positions as one block, under the
   allocation lock, held for those few statements only (`ALLOCATE_POSITIONS`); readers stop
   at the horizon below it (`sql_horizon`);
4. notifies followers, at most once per interval per session (`NOTIFY_THROTTLE`);
5. inserts the rows (`INSERT_ROWS`), each with its content digest, without their chain links,
   which are sealed after commit (`sql_seal`).

Appends therefore commit concurrently, and the server flushes them together. The function is
written as fixed text formatted once per store, and sent prepared, with seven array
arguments (`values.append_parameters`, `prepared`).
"""

from __future__ import annotations

import hashlib

from psycopg.sql import SQL, Composed

from ledger.store.hash_chain import CONTENT_DIGEST_SQL
from ledger.store.postgres.lock_keys import ALLOCATION_LOCK, READ_CHECK_KEY_SQL, READ_CHECK_SALT
from ledger.store.postgres.notifications import notified_at_setting
from ledger.store.postgres.sql_holders import (
    HOLDER_CHECK_AFTER_SECONDS,
    exclusive_by_the_store,
    take_lock_naming_strangers,
)
from ledger.store.postgres.sql_names import StoreNames
from ledger.store.postgres.values import APPEND_ARGUMENT_TYPES

MAX_BURNT_POSITIONS = 1000
"""At most how many positions in a row an append skips whose registration keys someone else
holds exclusively, before it fails naming them (`ALLOCATE_POSITIONS`)."""

INSERTION_SORT_AT_MOST = 16
"""The append function sorts this many read-check keys or fewer by insertion in PL/pgSQL, more
with a query: insertion takes a 1-line sale's two keys at a tenth of the query's cost, but
grows with the square of their number (a 500-line sale's 500 took 69 ms against 10)."""

# As the owner: the application's roles may append through this function only, so that no
# insert can skip the registration (`docs/append_only_role.sql`). Its search path is fixed,
# as PostgreSQL advises for a SECURITY DEFINER function: the catalog, then the session's
# temporary schema last, so that no caller's objects stand in for the ones it names. The lock
# timeout holds until the transaction ends: a caller holding it open waits no longer either.
HEADER = (
    "CREATE OR REPLACE FUNCTION {schema}.{function}("
    "  ids uuid[], versions bigint[], topics text[], states bytea[],"
    "  expect_ids uuid[], expect_versions bigint[], gate_keys bigint[]) "
    "RETURNS SETOF bigint LANGUAGE plpgsql SECURITY DEFINER "
    "SET search_path = pg_catalog, pg_temp AS $body$ "
    "DECLARE positions bigint[]; first bigint; moment float8; seq regclass; "
    "  lock_keys bigint[]; exclusive boolean[]; n integer := 0; j integer; "
    "  swap_key bigint; swap_exclusive boolean; holders text; started boolean := false; "
    "  event_count integer := coalesce(array_length(ids, 1), 0); "
    "BEGIN "
    "  PERFORM set_config('lock_timeout', {lock_timeout}, true); "
)

# The gate: a stream whose exclusive advisory lock a till that lost a race holds is that
# till's to write next (`queue_locks`). Everyone else probes the shared lock of each
# existing stream it writes without waiting, and fails as a conflict (the error a lost race
# raises) if it cannot get it, so that it backs off and queues behind that till instead of
# losing again. The shared locks last until commit and never block one another: one probe
# per stream is all an uncontended append pays. A probe that fails asks whether a till holds
# or awaits the key (`sql_holders`): a stranger's lock on it is passed, since the gate only
# orders the store's own writers (the stream's version and read-check locks keep appends
# correct), and a stranger must not stall a stream by holding its queue key. (Two IFs: the
# probe alone is a simple expression, which PL/pgSQL evaluates without the executor.)
GATE = (
    "  FOR i IN 1 .. coalesce(array_length(gate_keys, 1), 0) LOOP "
    "    IF NOT pg_try_advisory_xact_lock_shared(gate_keys[i] # {table_oid}) THEN "
    "      IF " + exclusive_by_the_store("gate_keys[i] # {table_oid}", "{append_signature}")
    + " THEN "
    "        RAISE EXCEPTION USING ERRCODE = 'unique_violation', "
    "          MESSAGE = 'a till that lost a race on this stream is writing it'; "
    "      END IF; "
    "    END IF; "
    "  END LOOP; "
)

# Read checks: a decision may rest on streams it does not write (the outlet's policy, say).
# The append takes a shared lock on each stream the decision read and an exclusive one on
# each existing stream it writes, until commit, and checks the reads after that: a stream
# read can then not move on before this append commits. (The streams written need no check:
# their next version's uniqueness already is one.) First the keys (`lock_keys`: their
# read-check keys, a key space of their own) and which of them are exclusive.
#
# A stream this append starts (its version 1 is here, and unique: the append fails if the
# stream exists) is not an existing stream, whatever versions follow its first event here: a
# stream started alone (a sale's) never took a lock, and one started with more events (an
# import's stock item, opened and received into) needs none either, so a bulk append of new
# stock items takes no key per event. An event is of a stream started here if the event
# before it is of the same stream and was (`started`), or if its own version is 1; events
# of a stream that are not next to each other are taken for an existing stream's, which
# costs a lock, never a check.
READ_CHECK_KEYS = (
    "  FOR i IN 1 .. coalesce(array_length(expect_ids, 1), 0) LOOP "
    "    n := n + 1; lock_keys[n] := {read_key_e}; "
    "    exclusive[n] := false; "
    "  END LOOP; "
    "  FOR i IN 1 .. coalesce(array_length(ids, 1), 0) LOOP "
    "    IF NOT (i > 1 AND started AND ids[i] = ids[i - 1]) THEN "
    "      started := versions[i] = 1; "
    "    END IF; "
    "    IF versions[i] > 1 AND NOT started THEN "
    "      n := n + 1; lock_keys[n] := {read_key_w}; "
    "      exclusive[n] := true; "
    "    END IF; "
    "  END LOOP; "
)

# The locks are taken in key order, so that appends cannot deadlock; of equal keys the
# exclusive first. A sale's few keys are sorted by insertion, which costs a tenth of the
# query that sorts a many-line command's (`INSERTION_SORT_AT_MOST`).
SORT_READ_CHECK_KEYS = (
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
)

# Of equal keys the first is exclusive if any is; the others add nothing. Each lock is tried
# first, which is all an uncontended append pays. One that does not come is waited for
# `HOLDER_CHECK_AFTER_SECONDS`, then, if it still has not, the append asks who holds it
# (`sql_holders`): a stranger's key (any session may take any advisory key) fails the append
# at once, naming it, instead of each append to the stream waiting out the lock timeout ten
# times over; the store's own appends are waited for as long as any lock, as before.
READ_CHECK_LOCKS = (
    "  FOR i IN 1 .. n LOOP "
    "    IF i = 1 OR lock_keys[i] <> lock_keys[i - 1] THEN "
    + take_lock_naming_strangers(
        "(CASE WHEN exclusive[i] THEN pg_try_advisory_xact_lock(lock_keys[i]) "
        "ELSE pg_try_advisory_xact_lock_shared(lock_keys[i]) END)",
        "IF exclusive[i] THEN PERFORM pg_advisory_xact_lock(lock_keys[i]); "
        "ELSE PERFORM pg_advisory_xact_lock_shared(lock_keys[i]); END IF;",
        "lock_keys[i]", "{append_signature}",
        "'a stream lock of % is held by %, not an append of this store: no append to that "
        "stream can go on until that session releases it or ends', {qualified}, holders")
    + "    END IF; "
    "  END LOOP; "
)

# One index probe per stream: a join over the arrays gets a generic plan that may scan the
# table. A stream that moved on fails the append as a lost race does.
READ_CHECKS = (
    "  FOR i IN 1 .. coalesce(array_length(expect_ids, 1), 0) LOOP "
    "    IF EXISTS (SELECT 1 FROM {schema}.{table} WHERE originator_id = expect_ids[i] "
    "               AND originator_version > expect_versions[i]) THEN "
    "      RAISE EXCEPTION USING ERRCODE = 'unique_violation', "
    "        MESSAGE = 'a stream the decision read has moved on'; "
    "    END IF; "
    "  END LOOP; "
)

# Positions: registered as in flight (until commit) before they are taken, and taken as one
# block, under the allocation lock, held only for these few statements. The registration is a
# transaction-scoped shared lock keyed by the events table's oid and the low 32 bits of the
# lowest position the append can get, the sequence's last value plus one (`sql_horizon`):
# readers stop below it until this transaction's commit is visible. Under the allocation lock
# no other append takes a position between this one's read of the sequence and the end of
# its block, so its block is contiguous (`NonInterleavingNotificationIDsBaseCase`) and starts
# at the registered position. (The block is taken by one query, a `nextval` per event, not
# by a PL/pgSQL loop, which cost a microsecond an event; not by one `nextval` and a `setval`
# either, which a `nextval` outside the lock, the owner's own insert's say, could fall
# between.) That lock is the session's, so that it can be released as soon as the block is
# taken, before commit; a statement cancelled or failed
# while holding it (a timeout, a sequence at its maximum) releases it here, or every later
# append of every session would wait for this one's session to end. It is released only if
# this session holds it (pg_locks shows a 64-bit key as its high and low 32 bits): the
# failure may have come while waiting for it.
#
# Advisory locks need no privilege: any session can take these keys. The allocation lock is
# held by an append for microseconds, so it is first tried without waiting (the uncontended
# path pays nothing more), then waited for `HOLDER_CHECK_AFTER_SECONDS`: if it has not come
# by then, the append asks who holds it (`sql_holders`), and a stranger's hold fails every
# append at once with an error naming it (a plain exception, which neither the recorder nor
# the loop retries) instead of each waiting out the lock timeout ten times over; an append
# of the store holding it is waited for as long as any lock. A registration key held
# exclusively by someone else (appends only ever take them shared) is skipped: its position
# is burnt, a gap like an aborted append's, and the next one registered, still under the
# allocation lock, so the block stays contiguous and starts at the registered position.
ALLOCATE_POSITIONS = (
    "  seq := {sequence}; "
    "  DECLARE burnt integer := 0; "
    "  BEGIN "
    + take_lock_naming_strangers(
        "pg_try_advisory_lock({allocation} # {table_oid})",
        "PERFORM pg_advisory_lock({allocation} # {table_oid});",
        "{allocation} # {table_oid}", "{append_signature}",
        "'the allocation lock of % is held by %, not an append of this store (an append "
        "holds it for microseconds): no append can take positions until that session "
        "releases it or ends', {qualified}, holders")
    + "    first := coalesce(pg_sequence_last_value(seq), 0) + 1; "
    "    WHILE NOT pg_try_advisory_xact_lock_shared((({table_oid} << 32) >> 32)::int4, "
    "                                               ((first << 32) >> 32)::int4) LOOP "
    "      burnt := burnt + 1; "
    "      IF burnt > {max_burnt} THEN "
    "        RAISE EXCEPTION 'the registration keys of positions % to % are held "
    "exclusively by sessions that are not appends of this store', first - burnt + 1, first; "
    "      END IF; "
    "      first := nextval(seq) + 1; "
    "    END LOOP; "
    "    positions := ARRAY(SELECT nextval(seq) "
    "                       FROM pg_catalog.generate_series(1, event_count) AS g(k) ORDER BY k); "
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
)

# NOTIFY takes a cluster-wide lock from before the commit until after its flush, serialising
# every notifying commit: one per session per interval is enough to wake a follower, which
# then polls for `notification_window()` (`notifications`). The time of the session's last
# NOTIFY is kept in a session setting (`notified_at_setting`).
NOTIFY_THROTTLE = (
    "  moment := extract(epoch FROM clock_timestamp()); "
    "  IF moment >= coalesce(nullif(current_setting({notified_at}, true), '')::float8, "
    "                        0) + {interval} THEN "
    "    PERFORM pg_notify({channel}, ''); "
    "    PERFORM set_config({notified_at}, moment::text, false); "
    "  END IF; "
)

# The rows go in without their chain links, which need their predecessors, possibly still in
# flight: they are sealed after commit (`sql_seal`). Each row's content digest needs nothing
# but the row, so it goes in with it, computed by the same INSERT (no extra statement or round
# trip): from its commit on, an edit of the row no longer matches it (`docs/audit.md`).
INSERT_ROWS = (
    "  INSERT INTO {schema}.{table} "
    "    (originator_id, originator_version, topic, state, notification_id, content_digest) "
    "    SELECT u.i, u.v, u.t, u.s, u.p, {digest} "
    "    FROM unnest(ids, versions, topics, states, positions) AS u(i, v, t, s, p); "
    "  FOR i IN 1 .. coalesce(array_length(positions, 1), 0) LOOP "
    "    RETURN NEXT positions[i]; "
    "  END LOOP; "
    "END $body$"
)

APPEND_FUNCTION = (HEADER + GATE + READ_CHECK_KEYS + SORT_READ_CHECK_KEYS + READ_CHECK_LOCKS
                   + READ_CHECKS + ALLOCATE_POSITIONS + NOTIFY_THROTTLE + INSERT_ROWS)


def create_append_function(names: StoreNames, *, lock_timeout: int, channel: str,
                           notify_seconds: float) -> Composed:
    """Create (or replace) the store's `<table>_append` (`APPEND_FUNCTION`): its waits for
    locks time out after `lock_timeout` seconds, and it notifies `channel` at most once per
    `notify_seconds` per session."""
    return SQL(APPEND_FUNCTION).format(
        lock_timeout=f"{lock_timeout}s", channel=channel,
        notified_at=notified_at_setting(channel),
        interval=SQL(repr(float(notify_seconds))),
        read_key_e=SQL(_read_check_key("expect_ids[i]", names)),
        read_key_w=SQL(_read_check_key("ids[i]", names)),
        allocation=SQL(str(ALLOCATION_LOCK)),
        holder_check_after=f"{HOLDER_CHECK_AFTER_SECONDS}s",
        max_burnt=SQL(str(MAX_BURNT_POSITIONS)),
        qualified=names.qualified_table,
        insertion_sort_at_most=SQL(str(INSERTION_SORT_AT_MOST)),
        digest=SQL(CONTENT_DIGEST_SQL.format(position="u.p", originator_id="u.i",
                                             version="u.v", topic="u.t", state="u.s")),
        **names.sql)


def _read_check_key(stream_id: str, names: StoreNames) -> str:
    return READ_CHECK_KEY_SQL.format(id=stream_id, salt=READ_CHECK_SALT,
                                     table_oid=names.table_oid)


def append_call(names: StoreNames) -> str:
    """The start of a call of the append function, up to its arguments."""
    return SQL("SELECT notification_id FROM {schema}.{function}").format(
        **names.sql).as_string(None)


def prepared_append(names: StoreNames) -> str:
    """The call of the append function with its seven arrays as parameters, for `prepared`."""
    return append_call(names) + "(" + ", ".join(
        f"${n}::{kind}[]" for n, kind in enumerate(APPEND_ARGUMENT_TYPES, 1)
    ) + ") AS appended(notification_id)"


def prepared_append_name(names: StoreNames) -> str:
    """The prepared append's name: one per store, as a session may append to stores in two
    schemas, and short, as a name is an identifier (63 bytes at most)."""
    return "stockledger_append_" + hashlib.sha256(names.qualified_table.encode()).hexdigest()[:16]
