"""Throwaway PostgreSQL databases for tests: made through the admin URL, always dropped."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import pytest
from psycopg import sql

DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def admin_url() -> str:
    """The maintenance database through which throwaway test databases are made and dropped."""
    return os.environ.get("LEDGER_TEST_POSTGRES_URL") or DEFAULT_ADMIN_URL


def database_url(admin: str, dbname: str) -> str:
    """`admin` with its database name replaced by `dbname` (query string kept)."""
    base, _, query = admin.partition("?")
    prefix = base.rsplit("/", 1)[0]
    return f"{prefix}/{dbname}" + (f"?{query}" if query else "")


@contextmanager
def fresh_database(template: str | None = None) -> Iterator[str]:
    """A new database (a copy of `template`, if given), dropped afterwards. Fails, never
    skips, if the server cannot be reached: a skipped PostgreSQL suite proves nothing."""
    admin = admin_url()
    name = f"stockledger_test_{secrets.token_hex(6)}"
    statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
    if template is not None:
        statement += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
    try:
        with psycopg.connect(admin, autocommit=True, connect_timeout=5) as connection:
            connection.execute(statement)
    except psycopg.Error as error:
        pytest.fail(f"PostgreSQL at {admin} is not usable for tests: {error}")
    try:
        yield database_url(admin, name)
    finally:
        with psycopg.connect(admin, autocommit=True, connect_timeout=5) as connection:
            connection.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(name)))
