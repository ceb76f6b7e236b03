"""The hash chain on PostgreSQL: links sealed after commit (`docs/design.md`, "Hash chain";
`ledger.store.hash_chain`).

A link needs its predecessor, which may still be in flight when an append inserts its rows,
or may abort; so the append inserts rows without links, and one sealer at a time
(`<table>_seal`) chains the events above the sealed head up to the horizon, in position
order, into `<table>_seals`. Rows recorded by earlier versions carry their link inline, in
the events table, and the chain continues from the newest of them.

The sealer chains only what its append wrote: a row whose content digest (stamped by the
append, `sql_append`) does not match its content, or that has none above the first row that
has one, is never sealed. The seal stops just before it, so the sealed head stays below it
and `audit verify` fails naming it, until the row is restored.
"""

from __future__ import annotations

from psycopg.sql import SQL, Composed

from ledger.store.hash_chain import CHAIN_LINK_SQL, CONTENT_DIGEST_SQL, VERSION_BREAKS_SQL
from ledger.store.postgres.lock_keys import SEAL_LOCK
from ledger.store.postgres.sql_holders import (
    HOLDER_CHECK_AFTER_SECONDS,
    take_lock_naming_strangers,
)
from ledger.store.postgres.sql_names import StoreNames

# Rows recorded before seals existed carry their link inline.
CHAIN_HASH_COLUMN = "ALTER TABLE {schema}.{table} ADD COLUMN IF NOT EXISTS chain_hash bytea"

# Each row's digest, written by its append; rows of earlier versions have none ("legacy").
CONTENT_DIGEST_COLUMN = (
    "ALTER TABLE {schema}.{table} ADD COLUMN IF NOT EXISTS content_digest bytea")

SEALS_TABLE = (
    "CREATE TABLE IF NOT EXISTS {schema}.{seals} ("
    "position bigint PRIMARY KEY, chain_hash bytea NOT NULL)"
)

# The chain trigger of earlier versions read its predecessor at insert time, which is only
# right while inserts are serialised.
DROP_CHAIN_TRIGGER = (
    "DROP TRIGGER IF EXISTS {trigger} ON {schema}.{table}",
    "DROP FUNCTION IF EXISTS {schema}.{trigger}()",
)

# As the owner, like the append: the application's roles may not write seals themselves
# (`docs/append_only_role.sql`). The seal lock (transaction-scoped) makes one sealer at a
# time, so that two never chain the same rows. It continues from the last seal, or else from
# the newest inline link; it goes no further than the horizon, so that an append still in
# flight, which may yet commit below positions already sealed past, can never be left out.
# Any session may take the seal lock's key (advisory locks need no privilege): the lock is
# tried first, then waited for `HOLDER_CHECK_AFTER_SECONDS`, and if it has not come by then a
# stranger holding it (a role that may not seal, `sql_holders`) fails the seal at once, naming
# it, where the sealer would otherwise wait for as long as that session lives; another
# sealer holding it is waited for up to the store's lock timeout.
#
# Before chaining a row it checks the row's digest, and stops before a row that fails it. A row
# without a digest is legacy only if no row before it has one: that is asked (once per call,
# and only when such a row comes) as an index probe backwards from it, which in a store
# written by this version stops at the row just before.
SEAL_FUNCTION = (
    "CREATE OR REPLACE FUNCTION {schema}.{seal}(max_rows integer) RETURNS bigint "
    "LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp "
    "AS $body$ "
    "DECLARE horizon bigint; tail bigint; previous bytea; r record; n integer := 0; "
    "  positions bigint[]; hashes bytea[]; holders text; digested boolean; "
    "BEGIN "
    + take_lock_naming_strangers(
        "pg_try_advisory_xact_lock({seal_lock} # {table_oid})",
        "PERFORM pg_advisory_xact_lock({seal_lock} # {table_oid});",
        "{seal_lock} # {table_oid}", "{seal_signature}",
        "'the seal lock of % is held by %, which may not seal: the chain cannot be sealed "
        "until that session releases it or ends', {qualified}, holders")
    + "  horizon := {schema}.{horizon}(); "
    "  SELECT position, chain_hash INTO tail, previous FROM {schema}.{seals} "
    "    ORDER BY position DESC LIMIT 1; "
    "  IF NOT FOUND THEN "
    "    SELECT notification_id, chain_hash INTO tail, previous FROM {schema}.{table} "
    "      WHERE chain_hash IS NOT NULL ORDER BY notification_id DESC LIMIT 1; "
    "  END IF; "
    "  tail := coalesce(tail, 0); "
    "  FOR r IN SELECT notification_id, originator_id, originator_version, topic, state, "
    "      content_digest FROM {schema}.{table} WHERE notification_id > tail "
    "      AND notification_id <= horizon ORDER BY notification_id LIMIT max_rows LOOP "
    "    IF r.content_digest IS NULL THEN "
    "      IF digested IS NULL THEN "
    "        digested := EXISTS (SELECT 1 FROM {schema}.{table} "
    "          WHERE notification_id < r.notification_id AND content_digest IS NOT NULL); "
    "      END IF; "
    "      EXIT WHEN digested; "
    "    ELSE "
    "      EXIT WHEN r.content_digest IS DISTINCT FROM {digest}; "
    "      digested := true; "
    "    END IF; "
    "    n := n + 1; "
    "    previous := {link}; "
    "    positions[n] := r.notification_id; "
    "    hashes[n] := previous; "
    "  END LOOP; "
    "  INSERT INTO {schema}.{seals} (position, chain_hash) "
    "    SELECT * FROM unnest(positions, hashes); "
    "  RETURN CASE WHEN n = 0 THEN tail ELSE positions[n] END; "
    "END $body$"
)

SEAL = "SELECT {schema}.{seal}(%s) AS head"

# A catch-up seals what it applied only if the seal lock is free at that moment: it never waits
# on another sealer (who seals the same rows) or on a stranger holding the key (whom verify and
# `projections status` name). The lock is taken at session level on the connection that then
# calls the seal function, whose own request for it, from the same session, always succeeds.
TRY_SEAL_LOCK = "SELECT pg_try_advisory_lock({seal_lock} # {table_oid}) AS locked"
UNLOCK_SEAL_LOCK = "SELECT pg_advisory_unlock({seal_lock} # {table_oid}) AS unlocked"

# Inline links and sealed ones, as one column: verification need not know which is which.
SELECT_CHAINED = (
    "SELECT e.notification_id AS position, e.originator_id, e.originator_version, "
    "e.topic, e.state, coalesce(e.chain_hash, s.chain_hash) AS chain_hash, "
    "{digest} AS content_digest "
    "FROM {schema}.{table} e LEFT JOIN {schema}.{seals} s "
    "ON s.position = e.notification_id "
    "WHERE e.notification_id >= %s AND e.notification_id <= %s "
    "ORDER BY e.notification_id LIMIT %s"
)

DIGEST_COLUMN_EXISTS = (
    "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute WHERE attrelid = {table_oid}::oid "
    "AND attname = 'content_digest' AND NOT attisdropped) AS found"
)


def chain_hash_column(names: StoreNames) -> Composed:
    """Add the inline link's column, if the events table lacks it (`CHAIN_HASH_COLUMN`)."""
    return SQL(CHAIN_HASH_COLUMN).format(**names.sql)


def content_digest_column(names: StoreNames) -> Composed:
    """Add the content digest's column, if the events table lacks it (`CONTENT_DIGEST_COLUMN`)."""
    return SQL(CONTENT_DIGEST_COLUMN).format(**names.sql)


def seals_table(names: StoreNames) -> Composed:
    """Create the seals table, if missing (`SEALS_TABLE`)."""
    return SQL(SEALS_TABLE).format(**names.sql)


def drop_chain_trigger(names: StoreNames) -> list[Composed]:
    """Drop the chain trigger of earlier versions, and its function (`DROP_CHAIN_TRIGGER`)."""
    return [SQL(drop).format(**names.sql) for drop in DROP_CHAIN_TRIGGER]


def create_seal_function(names: StoreNames, *, lock_timeout: int) -> Composed:
    """Create (or replace) the store's `<table>_seal(max_rows)` (`SEAL_FUNCTION`): it waits
    for another sealer's lock at most `lock_timeout` seconds."""
    link = CHAIN_LINK_SQL.format(position="r.notification_id", originator_id="r.originator_id",
                                 version="r.originator_version", topic="r.topic",
                                 state="r.state")
    digest = CONTENT_DIGEST_SQL.format(position="r.notification_id",
                                       originator_id="r.originator_id",
                                       version="r.originator_version", topic="r.topic",
                                       state="r.state")
    return SQL(SEAL_FUNCTION).format(seal_lock=SQL(str(SEAL_LOCK)), link=SQL(link),
                                     digest=SQL(digest), lock_timeout=f"{lock_timeout}s",
                                     holder_check_after=f"{HOLDER_CHECK_AFTER_SECONDS}s",
                                     qualified=names.qualified_table, **names.sql)


def seal_lock_statements(names: StoreNames) -> tuple[str, str]:
    """The statements that try the seal lock at session level without waiting
    (`TRY_SEAL_LOCK`, returning `locked`) and release it (`UNLOCK_SEAL_LOCK`)."""
    lock = SQL(TRY_SEAL_LOCK).format(seal_lock=SQL(str(SEAL_LOCK)), **names.sql)
    unlock = SQL(UNLOCK_SEAL_LOCK).format(seal_lock=SQL(str(SEAL_LOCK)), **names.sql)
    return lock.as_string(None), unlock.as_string(None)


def seal_statement(names: StoreNames) -> str:
    """The call of the seal function, `max_rows` its one parameter; returns `head`."""
    return SQL(SEAL).format(**names.sql).as_string(None)


def select_chained_query(names: StoreNames, *, digests: bool = True) -> Composed:
    """Rows from position `%s` to `%s` (at most `%s`), with their chain hashes and content
    digests; without `digests` (a store written before digests existed, not yet upgraded by
    `ledger init`, has no column for them), with none."""
    digest = SQL("e.content_digest") if digests else SQL("NULL::bytea")
    return SQL(SELECT_CHAINED).format(digest=digest, **names.sql)


def digest_column_query(names: StoreNames) -> Composed:
    """Whether the events table has the content digest's column: `found`, one row."""
    return SQL(DIGEST_COLUMN_EXISTS).format(**names.sql)


def version_breaks_query(names: StoreNames) -> Composed:
    """Rows up to position `%s` (at most `%s`) that break their stream's run of versions
    (`ledger.store.hash_chain.VERSION_BREAKS_SQL`)."""
    template = VERSION_BREAKS_SQL.format(position="notification_id",
                                         table="{schema}.{table}", param="%s")
    return SQL(template).format(**names.sql)


# The sealed head without sealing, for a role that may only read (`docs/append_only_role.sql`,
# the auditor): the last seal, else the newest inline link.
SEALED_HEAD = (
    "SELECT coalesce((SELECT max(position) FROM {schema}.{seals}), "
    "(SELECT max(notification_id) FROM {schema}.{table} WHERE chain_hash IS NOT NULL), 0) "
    "AS head"
)

# Whether this session's role may seal.
MAY_SEAL = "SELECT has_function_privilege({seal_signature}::regprocedure, 'EXECUTE')::int AS may"


def sealed_head_statement(names: StoreNames) -> str:
    """The statement returning the sealed head, sealing nothing (`SEALED_HEAD`)."""
    return SQL(SEALED_HEAD).format(**names.sql).as_string(None)


def may_seal_statement(names: StoreNames) -> str:
    """The statement returning 1 if the session's role may call the seal function."""
    return SQL(MAY_SEAL).format(**names.sql).as_string(None)
