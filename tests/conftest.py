"""Shared fixtures: throwaway stores on SQLite and on the real PostgreSQL server."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from ledger.api import Ledger

DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def admin_url() -> str:
    """The maintenance database through which throwaway test databases are made and dropped."""
    return os.environ.get("LEDGER_TEST_POSTGRES_URL") or DEFAULT_ADMIN_URL


def database_url(admin: str, dbname: str) -> str:
    """`admin` with its database name replaced by `dbname` (query string kept)."""
    base, _, query = admin.partition("?")
    prefix = base.rsplit("/", 1)[0]
    return f"{prefix}/{dbname}" + (f"?{query}" if query else "")


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database, dropped afterwards. Fails (never skips) if the
    server cannot be reached: a silently skipped PostgreSQL suite proves nothing."""
    admin = admin_url()
    dbname = f"stockledger_test_{secrets.token_hex(6)}"
    try:
        with psycopg.connect(admin, autocommit=True, connect_timeout=5) as connection:
            connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
    except psycopg.Error as error:
        pytest.fail(f"PostgreSQL at {admin} is not usable for tests: {error}")
    try:
        yield database_url(admin, dbname)
    finally:
        with psycopg.connect(admin, autocommit=True, connect_timeout=5) as connection:
            connection.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname))
            )


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'ledger.sqlite3'}"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest) -> str:
    """The same contract, once per backend."""
    fixture = "sqlite_url" if request.param == "sqlite" else "postgres_url"
    url: str = request.getfixturevalue(fixture)
    return url


@pytest.fixture
def ledger(store_url: str) -> Iterator[Ledger]:
    opened = Ledger.open(store_url, create_tables=True)
    try:
        yield opened
    finally:
        opened.close()
