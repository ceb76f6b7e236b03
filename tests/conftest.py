"""Shared fixtures: throwaway stores on SQLite and on the real PostgreSQL server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ledger.app.service import Ledger
from ledger.store.snapshot_keys import SNAPSHOT_KEY_VARIABLE
from tests.databases import fresh_database


@pytest.fixture(autouse=True, scope="session")
def snapshot_key_file(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The tills of a test run (in process and in the processes they start) sign snapshots
    with a key of the run's own, created on first use, never the user's."""
    path = tmp_path_factory.mktemp("snapshot-key") / "snapshot.key"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(SNAPSHOT_KEY_VARIABLE, str(path))
        yield path


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database, dropped afterwards."""
    with fresh_database() as url:
        yield url


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
