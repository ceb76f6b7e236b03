"""Who holds one of the store's advisory keys: PL/pgSQL for the slow paths of the append and
the seal functions, which ask only once a lock has not come at once (`docs/design.md`,
"Least privilege and foreign locks").

Advisory locks need no privilege: any session that can connect may take any key, the store's
included. The store's own functions take its keys inside themselves, so a holder whose role
may not execute the function that takes a key (the append for the allocation lock, the
queue's and the read checks' keys; the seal for the seal lock) is a stranger, never an
append or a sealer of this store. pg_locks shows a 64-bit key as its high 32 bits (classid)
and low 32 bits (objid), objsubid 1, in every database of the cluster: only this one's count.

Reading pg_locks takes every partition of the server's lock table for a moment, so these run
only after a lock has not come at once (or, for the allocation lock and the read checks,
not within `HOLDER_CHECK_AFTER_SECONDS`), never on an append that met no contention.
"""

from __future__ import annotations

HOLDER_CHECK_AFTER_SECONDS = 2
"""How long an append waits for a lock that appends hold for moments (the allocation lock,
a stream's read-check lock) before it asks who holds it: a stranger's fails the append at once
naming it; the store's own appends are waited for as long as any lock (the lock timeout)."""

_KEY_ROWS = (
    "FROM pg_catalog.pg_locks l JOIN pg_catalog.pg_stat_activity a ON a.pid = l.pid "
    "WHERE l.locktype = 'advisory' AND l.objsubid = 1 AND l.pid <> pg_backend_pid() "
    "  AND l.database = (SELECT oid FROM pg_catalog.pg_database "
    "                    WHERE datname = current_database()) "
    "  AND l.classid = ((({key}) >> 32) & 4294967295)::oid "
    "  AND l.objid = (({key}) & 4294967295)::oid "
)

# The strangers holding `{key}`, as one line of text into `holders` (NULL if none): pid, role
# and how long its transaction has been open, or else (a session lock held between
# transactions) how long it has been in its state; the function's owner sees these if it
# may see other sessions' activity. A session gone since pg_locks was read is no holder.
STRANGERS_INTO_HOLDERS = (
    "SELECT string_agg(format('pid %s (role %s, %s)', l.pid, pg_get_userbyid(a.usesysid), "
    "         CASE WHEN a.xact_start IS NOT NULL THEN 'transaction open for ' "
    "                || round(extract(epoch FROM clock_timestamp() - a.xact_start)) || ' s' "
    "              WHEN a.state_change IS NOT NULL THEN a.state || ' for ' "
    "                || round(extract(epoch FROM clock_timestamp() - a.state_change)) || ' s' "
    "              ELSE 'activity not visible to the store''s owner' END), "
    "       ', ' ORDER BY l.pid) INTO holders "
    + _KEY_ROWS
    + "  AND l.granted "
    "  AND NOT has_function_privilege(a.usesysid, {may}::regprocedure, 'EXECUTE'); "
)

# Whether a session of a role that may execute `{may}` holds or waits for `{key}`
# exclusively: the writer queue's test of whether a till, not a stranger, is on a stream.
EXCLUSIVE_BY_THE_STORE = (
    "EXISTS (SELECT 1 " + _KEY_ROWS
    + "  AND l.mode = 'ExclusiveLock' "
    "  AND has_function_privilege(a.usesysid, {may}::regprocedure, 'EXECUTE'))"
)


def strangers_into_holders(key: str, may: str) -> str:
    """PL/pgSQL setting the variable `holders` to the strangers holding the 64-bit advisory
    key `key` (an expression), those whose role may not execute the function `may` (a
    signature literal); NULL if none (`STRANGERS_INTO_HOLDERS`)."""
    return STRANGERS_INTO_HOLDERS.format(key=key, may=may)


def exclusive_by_the_store(key: str, may: str) -> str:
    """A boolean expression: a session whose role may execute `may` holds or waits for the
    advisory key `key` exclusively (`EXCLUSIVE_BY_THE_STORE`)."""
    return EXCLUSIVE_BY_THE_STORE.format(key=key, may=may)


def take_lock_naming_strangers(try_lock: str, lock: str, key: str, may: str,
                               refusal: str) -> str:
    """PL/pgSQL taking an advisory lock that appends or sealers hold for moments: `try_lock`
    (a boolean expression) first, which is all an uncontended caller pays; if it has not come,
    `lock` (a statement) waited for `HOLDER_CHECK_AFTER_SECONDS`, then, if still not, the
    strangers holding `key` (`strangers_into_holders`) fail the call with `refusal` (the
    arguments of a RAISE EXCEPTION, which may use `holders`), and the store's own holders are
    waited for as long as any lock (`{lock_timeout}`).

    The text is concatenated, not formatted, because the caller's `{placeholders}` are formatted
    later with the rest of its function. Either way the lock timeout is back at
    `{lock_timeout}` afterwards: the statements after the lock wait as long as any other."""
    return (
        "IF NOT " + try_lock + " THEN "
        "  BEGIN "
        "    PERFORM set_config('lock_timeout', {holder_check_after}, true); "
        "    " + lock + " "
        "    PERFORM set_config('lock_timeout', {lock_timeout}, true); "
        "  EXCEPTION WHEN lock_not_available THEN "
        "    " + strangers_into_holders(key, may)
        + "    IF holders IS NOT NULL THEN RAISE EXCEPTION " + refusal + "; END IF; "
        "    PERFORM set_config('lock_timeout', {lock_timeout}, true); "
        "    " + lock + " "
        "  END; "
        "END IF; "
    )
