"""One running server per backend for the module that asks for it (tests use fresh ids)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.databases import fresh_database
from tests.http.server import Server, running_server


@pytest.fixture(scope="module",
                params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def server(request: pytest.FixtureRequest,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('http') / 'ledger.sqlite3'}"
        with running_server(url) as started:
            yield started
    else:
        with fresh_database() as url, running_server(url) as started:
            yield started
