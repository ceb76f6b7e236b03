"""Store URLs: what they select, and malformed ones refused as input naming `db`."""

from __future__ import annotations

from pathlib import Path

import pytest
from eventsourcing.persistence import InfrastructureFactory

from ledger.domain.errors import InvalidInput
from ledger.store.settings import parse_url
from ledger.store.sqlite_recorder import LedgerSQLiteDatastore, LedgerSQLiteFactory


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("postgresql://u@h:99999/db", "port '99999' is not a TCP port"),
        ("postgresql://u@h:65536/db", "port '65536' is not a TCP port"),
        ("postgresql://u@h:0/db", "port '0' is not a TCP port"),
        ("postgresql://u@h:-1/db", "is not a TCP port"),
        ("postgresql://u@h:5432x/db", "port '5432x' is not a TCP port"),
        ("postgresql://u@[::1/db", "malformed database URL"),
        ("postgresql://u:hunter2@h:5432/", "no database name"),
        ("mysql://u:hunter2@h/db", "unsupported database URL"),
        ("sqlite:", "no file in"),
        ("sqlite:relative.sqlite3", "no file in"),
        ("sqlite:///tmp/x.sqlite3?mode=rwc", "unknown SQLite mode 'rwc'"),
        ("sqlite:///tmp/x.sqlite3?immutable=yes", "unknown SQLite immutable 'yes'"),
        ("sqlite:///tmp/x.sqlite3?cache=shared", "unknown SQLite option 'cache'"),
    ],
)
def test_a_malformed_url_is_invalid_input_naming_db(url: str, message: str) -> None:
    with pytest.raises(InvalidInput) as raised:
        parse_url(url)
    assert raised.value.field == "db"
    assert message in raised.value.message
    assert "hunter2" not in raised.value.message


def test_postgres_urls() -> None:
    config = parse_url("postgresql://clerk:pw@db.example:6543/shop?schema=s1")
    assert (config.host, config.port, config.user, config.password, config.dbname,
            config.schema) == ("db.example", "6543", "clerk", "pw", "shop", "s1")
    assert parse_url("postgresql://clerk@db.example/shop").port == "5432"
    assert parse_url("postgresql://clerk@db.example:65535/shop").port == "65535"


@pytest.mark.parametrize(
    ("options", "mode"),
    [("", ""), ("?mode=ro", "ro"), ("?mode=rw", "rw"), ("?immutable=1", "immutable"),
     ("?mode=ro&immutable=1", "immutable"), ("?immutable=1&mode=ro", "immutable"),
     ("?immutable=0", "")],
)
def test_sqlite_urls_and_their_open_mode(tmp_path: Path, options: str, mode: str) -> None:
    config = parse_url(f"sqlite:///{tmp_path}/a%20b/ledger.sqlite3{options}")
    assert config.dbname == f"{tmp_path}/a b/ledger.sqlite3"
    assert config.sqlite_mode == mode
    assert config.library_env()["LEDGER_SQLITE_OPEN_MODE"] == mode
    assert not (tmp_path / "a b").exists()  # parsing makes nothing; opening to write does


def test_sqlite_stores_run_on_the_ledgers_datastore(tmp_path: Path) -> None:
    env = parse_url(f"sqlite:///{tmp_path}/ledger.sqlite3?mode=ro").library_env()
    factory = InfrastructureFactory.construct(env)
    try:
        assert isinstance(factory, LedgerSQLiteFactory)
        assert isinstance(factory.datastore, LedgerSQLiteDatastore)
        assert factory.datastore.read_only
        assert factory.datastore.pool.lock_timeout == 30
    finally:
        factory.close()
