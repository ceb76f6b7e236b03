"""The recorder's connection pool: opened ready before the first checkout, and checked out
directly.

A ledger runs one command at a time, so its pool keeps one connection (`ledger.store.settings`;
`docs/design.md`, "One connection per till"). It is opened ready before the first checkout:
a checkout that finds none idle makes the pool open another, which would then take every
other command. (Not through the datastore's `pool_open_timeout`: that waits for a full pool
on every checkout, so a thread already holding the one connection would wait for itself.)
One opened later anyway (threads at once, the kept one replaced at its age limit) is closed
once it has been idle for a while.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import psycopg
from eventsourcing.postgres import PostgresDatastore
from psycopg_pool import ConnectionPool

from ledger.store.postgres.values import persistence_error


def open_pool(datastore: PostgresDatastore, *, max_idle_seconds: float) -> None:
    """Open the datastore's pool, if it is closed, and wait for its connection; a connection
    beyond the kept one is closed after `max_idle_seconds` unused. Raises the library's error
    for why it cannot connect."""
    pool = datastore.pool
    if not pool.closed:
        return
    pool.max_idle = max_idle_seconds
    if isinstance(pool.kwargs, dict):
        # The pool's own attempts give up when its checkouts do.
        pool.kwargs.setdefault("connect_timeout", _connect_timeout(pool))
    try:
        pool.open(wait=True, timeout=pool.timeout)
    except psycopg.Error as error:
        raise persistence_error(_why_unconnected(datastore) or error) from error


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


@contextlib.contextmanager
def pooled_connection(pool: ConnectionPool[Any]) -> Iterator[psycopg.Connection[Any]]:
    """A connection of `pool` (a datastore's, opened with its recorder), checked out and
    returned directly: the datastore's own context managers around the checkout cost a sale
    more client CPU than its round trip."""
    try:
        connection = pool.getconn()
    except psycopg.Error as error:
        raise persistence_error(error) from error
    try:
        yield connection
    finally:
        pool.putconn(connection)
