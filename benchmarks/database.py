"""Throwaway PostgreSQL databases for one run, and the server settings the run reports."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from urllib.parse import urlparse, urlunparse

import psycopg

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
URL_VARIABLE = "LEDGER_BENCH_POSTGRES_URL"
SETTINGS = ("fsync", "synchronous_commit", "shared_buffers", "wal_level", "max_connections",
            "full_page_writes", "commit_delay")


def admin_url(explicit: str | None) -> str:
    return explicit or os.environ.get(URL_VARIABLE) or DEFAULT_URL


def with_dbname(url: str, dbname: str) -> str:
    return urlunparse(urlparse(url)._replace(path=f"/{dbname}"))


@contextlib.contextmanager
def throwaway_database(url: str, label: str) -> Iterator[str]:
    """Create a fresh database next to the one `url` names, yield its URL, drop it after."""
    dbname = f"bench_{label}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{dbname}"')
    try:
        yield with_dbname(url, dbname)
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')


def server_settings(url: str) -> dict[str, str]:
    with psycopg.connect(url, autocommit=True) as conn:
        settings = {"version": str(conn.execute("SHOW server_version").fetchone()[0])}  # type: ignore[index]
        for name in SETTINGS:
            settings[name] = str(conn.execute(f"SHOW {name}").fetchone()[0])  # type: ignore[index]
    return settings
