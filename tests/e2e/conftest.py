"""The end-to-end tests' shared fixture: `ledger` run in process on a fresh, initialised
store of each backend (a test module may define its own `cli`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.test_cli import Cli, InProcessCli


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def cli(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Cli]:
    """`ledger` in process on an initialised store, SQLite and PostgreSQL."""
    url = request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "postgres_url")
    runner = InProcessCli(url, tmp_path)
    runner.ok("init")
    yield runner
