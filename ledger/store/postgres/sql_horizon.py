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
HORIZON_FUNCTION = (
    "CREATE OR REPLACE FUNCTION {schema}.{horizon}() RETURNS bigint "
    "LANGUAGE plpgsql VOLATILE AS $body$ "
    "DECLARE last bigint; registered bigint; "
    "BEGIN "
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
)

HORIZON = "SELECT {schema}.{horizon}() AS horizon"

# The horizon as an init plan, evaluated once: the head in one round trip. Rows that commit
# while it is evaluated are missing from the statement's snapshot, which only makes the
# head lower, never past an append in flight.
HEAD = (
    "SELECT max(notification_id) AS max FROM {schema}.{table} "
    "WHERE notification_id <= (SELECT {schema}.{horizon}())"
)


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
