"""What `create_table` runs for a PostgreSQL store beyond the library's own statements, in
order: the SQL itself, and why it is written as it is, lives in `sql_horizon` (the horizon
and the sequence it reads), `sql_append` (the append function) and `sql_seal` (the hash
chain's seals); the names they are formatted with in `sql_names`, the lock keys in
`lock_keys`."""

from __future__ import annotations

from psycopg.sql import SQL, Composed

from ledger.store.postgres import sql_append, sql_horizon, sql_seal
from ledger.store.postgres.sql_names import StoreNames


def create_statements(names: StoreNames, *, lock_timeout: int, channel: str,
                      notify_seconds: float) -> list[Composed]:
    """The statements that create (or upgrade) the store's columns, tables and functions,
    all idempotent: `ledger init` runs them again on a store written by an earlier version
    (`docs/design.md`, "Upgrading a store")."""
    return [
        sql_seal.chain_hash_column(names),
        sql_seal.content_digest_column(names),
        sql_horizon.sequence_cache_one(names),
        sql_seal.seals_table(names),
        *sql_seal.drop_chain_trigger(names),
        sql_horizon.create_horizon_function(names),
        sql_append.create_append_function(names, lock_timeout=lock_timeout, channel=channel,
                                          notify_seconds=notify_seconds),
        sql_seal.create_seal_function(names, lock_timeout=lock_timeout),
        *revoke_from_public(names),
    ]


# A function is executable by PUBLIC when it is created (CREATE OR REPLACE keeps the grants
# of one that exists): the append and the seal run as the tables' owner, so every role that
# can connect could append or seal, and the horizon tells anyone how far the store goes.
# They are revoked in the transaction that creates the functions (the library runs these
# statements in one), so no other session ever sees them executable by PUBLIC; the roles
# that need them are granted them by `docs/append_only_role.sql` (the owner keeps its own).
REVOKE_FROM_PUBLIC = (
    "REVOKE ALL ON FUNCTION {schema}.{function}(uuid[], bigint[], text[], bytea[], uuid[], "
    "bigint[], bigint[]) FROM PUBLIC",
    "REVOKE ALL ON FUNCTION {schema}.{horizon}() FROM PUBLIC",
    "REVOKE ALL ON FUNCTION {schema}.{seal}(integer) FROM PUBLIC",
)


def revoke_from_public(names: StoreNames) -> list[Composed]:
    """Revoke PUBLIC's EXECUTE on every function the store creates (`REVOKE_FROM_PUBLIC`)."""
    return [SQL(statement).format(**names.sql) for statement in REVOKE_FROM_PUBLIC]
