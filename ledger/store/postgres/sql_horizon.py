"""The horizon: how far a reader of the store may go in position order without passing an
append still in flight (`docs/design.md`, "Global order, gaps and the hash chain";
`docs/ordering.md`).

Positions (notification ids) come from a sequence when rows are inserted, but rows become
visible when their transactions commit, and a reader that passed a position never looks back.
So an append registers itself as in flight before it takes its positions, as a
transaction-scoped advisory lock keyed by the lowest position it can get (`sql_append`), and
readers go no further than the horizon: the sequence's last value, read first, or just below
the lowest registered position, whichever is lower. An append that registers after the read
of the sequence takes positions above it; one registered before is seen; and a transaction's
locks are released only once its commit is visible, so every position up to the horizon is
committed or never will be.
"""

from __future__ import annotations

from psycopg.sql import SQL, Composed

from ledger.store.postgres.lock_keys import ALLOCATION_LOCK, SEAL_LOCK
from ledger.store.postgres.sql_names import StoreNames

# Registrations are read as the sequence's last value plus one, which is the next value
# only while no session caches a block of values: the sequence caches none. (A DO block:
# the sequence's name is only known to the server, as the serial column's.)
SEQUENCE_CACHE_ONE = (
    "DO $cache$ BEGIN EXECUTE format('ALTER SEQUENCE %s CACHE 1', {sequence}); "
    "END $cache$"
)

# The sequence is read first, the registrations after: an append that registers after the
# read takes positions above `last`, so none can slip below the horizon between the two.
# A registration is a two-key advisory lock (objsubid = 2) whose first key is the events
# table's oid (classid) and whose second the low 32 bits of the append's first position
# (objid); the position is the only one with those low bits within 2**31 of `last` (the
# modulus taken twice, as `%` keeps the dividend's sign), and no append in flight is that far
# from the sequence. pg_locks shows every database's locks; only this one's count.
# Advisory locks need no privilege, so any session that can connect can take a registration's
# key: only those held by sessions of roles that may execute the append function count, which
# every registration an append takes is (it takes it inside that function). The role is the
# session's (`pg_stat_get_activity(pid)` shows it to everyone), looked up only for the few
# registration rows. A stranger's lock is ignored, and reported (`REGISTRATIONS`). A lock
# without a pid is a prepared transaction's, whose role pg_locks does not show: it is
# honoured, since it may hold an append that will yet commit.
HORIZON_FUNCTION = (
    "CREATE OR REPLACE FUNCTION {schema}.{horizon}() RETURNS bigint "
    "LANGUAGE plpgsql VOLATILE AS $body$ "
    "DECLARE last bigint; registered bigint; "
    "  append oid := {append_signature}::regprocedure; "
    "BEGIN "
    "  last := coalesce(pg_sequence_last_value({sequence}), 0); "
    "  SELECT min(last + 2147483648 - (((last + 2147483648 - objid::bigint) "
    "                                  % 4294967296) + 4294967296) % 4294967296) "
    "    INTO registered FROM pg_locks l "
    "    WHERE locktype = 'advisory' AND objsubid = 2 "
    "      AND database = (SELECT oid FROM pg_database "
    "                      WHERE datname = current_database()) "
    "      AND classid = {table_oid}::oid "
    "      AND (l.pid IS NULL OR has_function_privilege("
    "             (SELECT usesysid FROM pg_stat_get_activity(l.pid)), append, 'EXECUTE')); "
    "  RETURN CASE WHEN registered IS NULL THEN last "
    "              ELSE least(last, registered - 1) END; "
    "END $body$"
)

HORIZON = "SELECT {schema}.{horizon}() AS horizon"

# The horizon as an init plan, evaluated once: the head in one round trip. Rows that commit
# while it is evaluated are missing from the statement's snapshot, which only makes the
# head lower, never past an append in flight.
HEAD = (
    "SELECT max(notification_id) AS max FROM {schema}.{table} "
    "WHERE notification_id <= (SELECT {schema}.{horizon}())"
)


# Who holds the horizon back, or could, and who holds the store's other locks: every
# registration (honoured or not), every holder of the allocation and seal locks, and every
# other advisory lock of this database held by a role that may not append (a stranger's lock,
# perhaps on a stream's queue or read-check key, which would fail appends to that stream; or
# another application's), with the session's role and how long its transaction has run (a
# session lock held between transactions: how long the session has been idle), shown only to
# a role allowed to see other sessions' activity (a superuser, pg_read_all_stats, the
# session's own role). `honoured`: whether its role may execute the function that takes such
# a lock (the seal for the seal lock, else the append). For `projections status`; never on
# the append's or a reader's path.
REGISTRATIONS = (
    "SELECT k.lock, "
    "  CASE WHEN k.lock = 'registration' THEN s.last + 2147483648 - (((s.last + 2147483648 "
    "    - l.objid::bigint) % 4294967296) + 4294967296) % 4294967296 END AS position, "
    "  CASE WHEN l.objsubid = 1 THEN ((l.classid::bigint << 32) | l.objid::bigint) END "
    "    AS key, "
    "  l.pid, l.mode, pg_get_userbyid(a.usesysid) AS role, "
    "  has_function_privilege(a.usesysid, CASE WHEN k.lock = 'seal' "
    "    THEN {seal_signature}::regprocedure ELSE {append_signature}::regprocedure END, "
    "    'EXECUTE') AS honoured, "
    "  extract(epoch FROM clock_timestamp() - coalesce(a.xact_start, a.state_change))::float8 "
    "    AS seconds "
    "FROM pg_locks l "
    "CROSS JOIN (SELECT coalesce(pg_sequence_last_value({sequence}), 0) AS last) s "
    "LEFT JOIN pg_stat_activity a ON a.pid = l.pid "
    "CROSS JOIN LATERAL (SELECT CASE "
    "    WHEN l.objsubid = 2 AND l.classid = {table_oid}::oid THEN 'registration' "
    "    WHEN l.objsubid = 1 AND l.classid = ((({allocation} # {table_oid}) >> 32) "
    "                                         & 4294967295)::oid "
    "      AND l.objid = (({allocation} # {table_oid}) & 4294967295)::oid THEN 'allocation' "
    "    WHEN l.objsubid = 1 AND l.classid = ((({seal_lock} # {table_oid}) >> 32) "
    "                                         & 4294967295)::oid "
    "      AND l.objid = (({seal_lock} # {table_oid}) & 4294967295)::oid THEN 'seal' "
    "    ELSE 'other' END AS lock) k "
    "WHERE l.locktype = 'advisory' AND l.granted "
    "  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
    "  AND (k.lock <> 'other' OR NOT coalesce(has_function_privilege(a.usesysid, "
    "       {append_signature}::regprocedure, 'EXECUTE'), true)) "
    "ORDER BY position NULLS FIRST, l.pid"
)


def registrations_statement(names: StoreNames) -> str:
    """Every registration, allocation and seal lock holder of the store, and strangers'
    other advisory locks (`REGISTRATIONS`)."""
    return SQL(REGISTRATIONS).format(allocation=SQL(str(ALLOCATION_LOCK)),
                                     seal_lock=SQL(str(SEAL_LOCK)),
                                     **names.sql).as_string(None)


def sequence_cache_one(names: StoreNames) -> Composed:
    """Set the store's sequence to cache no values (`SEQUENCE_CACHE_ONE`)."""
    return SQL(SEQUENCE_CACHE_ONE).format(**names.sql)


def create_horizon_function(names: StoreNames) -> Composed:
    """Create (or replace) the store's `<table>_horizon()` (`HORIZON_FUNCTION`)."""
    return SQL(HORIZON_FUNCTION).format(**names.sql)


def horizon_statement(names: StoreNames) -> str:
    """The statement returning the store's horizon, as a column `horizon`."""
    return SQL(HORIZON).format(**names.sql).as_string(None)


def head_statement(names: StoreNames) -> str:
    """The statement returning the highest position at or below the horizon (`HEAD`)."""
    return SQL(HEAD).format(**names.sql).as_string(None)
