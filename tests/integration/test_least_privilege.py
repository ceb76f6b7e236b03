"""Least privilege on PostgreSQL: what a role may do with the store is what it was granted.

* A role with no grants can neither append (calling the SECURITY DEFINER append function),
  read events, seal, nor read the horizon: the store's functions are not executable by
  PUBLIC, and the roles of `docs/append_only_role.sql` get only what they need.
* Advisory locks need no privilege, so a foreign session can take any key. One holding the
  allocation lock makes appends fail at once with a clear error (not a 102 s stall); one
  holding a registration key does not freeze the horizon (registrations of roles that may
  not append are ignored) and makes no append wait; `projections status` reports whoever
  holds the horizon back.
* The auditor role of `docs/append_only_role.sql` (SELECT only) runs `audit verify`, `stock`
  and `history` through the CLI, and is refused `sell` cleanly; the app role verifies too.

Roles are cluster-wide: each test's names are unique and dropped afterwards.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner
from eventsourcing.persistence import PersistenceError
from psycopg import errors, sql

from cli.main import main
from ledger.app.service import Ledger
from ledger.store.postgres.lock_keys import ALLOCATION_LOCK
from projections.runner import ReadModels, create_read_models
from tests.databases import database_url

pytestmark = pytest.mark.postgres

SCRIPT = Path(__file__).resolve().parents[2] / "docs" / "append_only_role.sql"
TABLE = "stockledger_events"
APPEND_ARGS = ("ARRAY[gen_random_uuid()], ARRAY[1::bigint], ARRAY['raw'], ARRAY[''::bytea], "
               "'{}'::uuid[], '{}'::bigint[], '{}'::bigint[]")


@dataclass(frozen=True)
class Roles:
    owner_url: str
    app: str
    projector: str
    auditor: str
    stranger: str

    def url(self, role: str) -> str:
        scheme, _, rest = self.owner_url.partition("://")
        _, _, host_and_path = rest.rpartition("@")
        return f"{scheme}://{role}@{host_and_path}"


@pytest.fixture
def roles(postgres_url: str) -> Iterator[Roles]:
    """A store made by the owner, with a receipt and a sale; the roles of
    `docs/append_only_role.sql` under unique names; and a stranger: LOGIN, no grants."""
    suffix = secrets.token_hex(4)
    made = Roles(postgres_url, f"stockledger_app_{suffix}", f"stockledger_projector_{suffix}",
                 f"stockledger_auditor_{suffix}", f"stockledger_stranger_{suffix}")
    script = (SCRIPT.read_text().replace("stockledger_projector", made.projector)
              .replace("stockledger_auditor", made.auditor)
              .replace("stockledger_app", made.app))
    with Ledger.open(postgres_url, create_tables=True) as owner:
        create_read_models(owner.application)
        owner.receive(outlet="O1", sku="AMOX", batch_id="B0", quantity=10)
        owner.sell(outlet="O1", sale_id="S0", lines=[("AMOX", 2)])
    admin = database_url(postgres_url, "postgres")
    try:
        with psycopg.connect(postgres_url, autocommit=True) as connection:
            connection.execute(script.encode())
            connection.execute(sql.SQL("CREATE ROLE {} LOGIN").format(
                sql.Identifier(made.stranger)))
        yield made
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as connection:
            for role in (made.app, made.projector, made.auditor, made.stranger):
                connection.execute(sql.SQL(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE usename = {}").format(sql.Literal(role)))
                if connection.execute("SELECT 1 FROM pg_roles WHERE rolname = %s",
                                      (role,)).fetchone():
                    connection.execute(sql.SQL("DROP OWNED BY {} CASCADE").format(
                        sql.Identifier(role)))
        with psycopg.connect(admin, autocommit=True) as connection:
            for role in (made.app, made.projector, made.auditor, made.stranger):
                connection.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(
                    sql.Identifier(role)))


def _count(url: str) -> int:
    with psycopg.connect(url) as connection:
        row = connection.execute(f"SELECT count(*) FROM {TABLE}").fetchone()
    assert row is not None
    return int(row[0])


@pytest.mark.parametrize("statement", [
    f"SELECT * FROM {TABLE}_append({APPEND_ARGS})",
    f"SELECT * FROM {TABLE}",
    f"SELECT * FROM {TABLE}_seals",
    "SELECT * FROM stockledger_snapshots",
    f"SELECT {TABLE}_seal(10)",
    f"SELECT {TABLE}_horizon()",
    f"SELECT nextval(pg_get_serial_sequence('{TABLE}', 'notification_id'))",
    f"INSERT INTO {TABLE}_seals VALUES (1000000, '')",
    "SELECT * FROM ledger_stock_levels",
    "DELETE FROM notification_tracking",
])
def test_a_role_with_no_grants_can_do_nothing(roles: Roles, statement: str) -> None:
    before = _count(roles.owner_url)
    with psycopg.connect(roles.url(roles.stranger)) as connection, \
            pytest.raises(errors.InsufficientPrivilege):
        connection.execute(statement)
    assert _count(roles.owner_url) == before


def test_the_app_role_still_appends_through_the_function(roles: Roles) -> None:
    before = _count(roles.owner_url)
    with psycopg.connect(roles.url(roles.app), autocommit=True) as connection:
        rows = connection.execute(f"SELECT * FROM {TABLE}_append({APPEND_ARGS})").fetchall()
    assert len(rows) == 1
    assert _count(roles.owner_url) == before + 1


def _table_oid(url: str) -> int:
    with psycopg.connect(url) as connection:
        row = connection.execute(f"SELECT '{TABLE}'::regclass::oid::bigint").fetchone()
    assert row is not None
    return int(row[0])


def _next_position(url: str) -> int:
    with psycopg.connect(url) as connection:
        row = connection.execute("SELECT coalesce(pg_sequence_last_value(pg_get_serial_sequence("
                                 f"'{TABLE}', 'notification_id')), 0) + 1").fetchone()
    assert row is not None
    return int(row[0])


def test_a_foreign_allocation_lock_fails_appends_at_once(roles: Roles) -> None:
    key = ALLOCATION_LOCK ^ _table_oid(roles.owner_url)
    with psycopg.connect(roles.url(roles.stranger), autocommit=True) as stranger, \
            Ledger.open(roles.owner_url) as ledger:
        stranger.execute("SELECT pg_advisory_lock(%s)", (key,))
        started = time.monotonic()
        with pytest.raises(PersistenceError, match="allocation lock") as raised:
            ledger.receive(outlet="O1", sku="AMOX", batch_id="B1", quantity=1)
        took = time.monotonic() - started
        pid = stranger.info.backend_pid
        assert str(pid) in str(raised.value) and roles.stranger in str(raised.value)
        assert took < 5.0, f"an append waited {took:.1f}s for a foreign allocation lock"
        stranger.execute("SELECT pg_advisory_unlock_all()")
        ledger.receive(outlet="O1", sku="AMOX", batch_id="B1", quantity=1)


@pytest.mark.parametrize("mode", ["shared", "exclusive"])
def test_a_foreign_registration_neither_freezes_the_horizon_nor_stalls_appends(
        roles: Roles, mode: str) -> None:
    oid, position = _table_oid(roles.owner_url), _next_position(roles.owner_url)
    function = "pg_advisory_lock_shared" if mode == "shared" else "pg_advisory_lock"
    with psycopg.connect(roles.url(roles.stranger), autocommit=True) as stranger, \
            Ledger.open(roles.owner_url) as ledger:
        # The registration key of the next position, as the append function takes it.
        stranger.execute(f"SELECT {function}(((%s::bigint << 32) >> 32)::int4, "
                         "((%s::bigint << 32) >> 32)::int4)", (oid, position))
        started = time.monotonic()
        sale = ledger.sell(outlet="O1", sale_id="S1", lines=[("AMOX", 3)])
        assert time.monotonic() - started < 5.0
        recorder = ledger.application.recorder
        assert recorder.horizon() >= sale.position  # type: ignore[attr-defined]
        models = ReadModels(ledger.application)
        models.catch_up()
        assert min(models.positions().values()) >= sale.position
        held = _status(roles.owner_url)["horizon"]
        # Nothing holds the horizon back, and the stranger's lock is reported as ignored.
        assert held["held_at"] is None
        assert any(r["pid"] == stranger.info.backend_pid and r["role"] == roles.stranger
                   and not r["honoured"] for r in held["registrations"])


def _status(url: str) -> dict[str, Any]:
    result = CliRunner().invoke(main, ["--db", url, "projections", "status", "--json"])
    assert result.exit_code == 0, result.output
    report: dict[str, Any] = json.loads(result.stdout)
    return report


def test_status_reports_an_appender_holding_the_horizon(roles: Roles) -> None:
    with Ledger.open(roles.owner_url) as ledger:
        recorder = ledger.application.recorder
        with psycopg.connect(roles.url(roles.app)) as held:
            held.execute(f"SELECT * FROM {TABLE}_append({APPEND_ARGS})").fetchall()
            time.sleep(1.1)
            report = _status(roles.owner_url)["horizon"]
            assert isinstance(report, dict)
            assert report["held_at"] == recorder.horizon()  # type: ignore[attr-defined]
            holder = report["holder"]
            assert holder["pid"] == held.info.backend_pid
            assert holder["role"] == roles.app
            assert holder["seconds"] >= 1.0
            held.rollback()
        report = _status(roles.owner_url)["horizon"]
        assert report["held_at"] is None


def _cli(roles: Roles, role: str, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, ["--db", roles.url(role), *args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"uncaught {result.exception!r}") from result.exception
    return result.exit_code, result.stdout, result.stderr


def test_the_auditor_verifies_and_reads_through_the_cli(roles: Roles) -> None:
    # The projector's runner keeps the read models up to date; the auditor only reads.
    with Ledger.open(roles.url(roles.projector)) as projector:
        ReadModels(projector.application).catch_up()
    code, out, err = _cli(roles, roles.auditor, "audit", "verify")
    assert code == 0, err
    assert out.startswith("verified ")
    code, out, err = _cli(roles, roles.auditor, "stock", "--outlet", "O1", "--sku", "AMOX")
    assert code == 0, err
    assert "on hand        8" in out
    code, out, err = _cli(roles, roles.auditor, "history", "--outlet", "O1", "--sku", "AMOX")
    assert code == 0, err
    assert "S0" in out
    code, out, err = _cli(roles, roles.auditor, "audit", "export", "--format", "jsonl")
    assert code == 0, err
    assert out.count("\n") == 2


def test_the_auditor_reads_models_behind_without_writing(roles: Roles) -> None:
    with Ledger.open(roles.owner_url) as owner:
        owner.receive(outlet="O1", sku="AMOX", batch_id="B9", quantity=5)
    code, _, err = _cli(roles, roles.auditor, "stock", "--outlet", "O1", "--sku", "AMOX")
    assert code == 0, err
    assert "behind" in err and "Traceback" not in err


def test_the_auditor_is_refused_a_sale_cleanly(roles: Roles) -> None:
    before = _count(roles.owner_url)
    code, out, err = _cli(roles, roles.auditor, "sell", "--outlet", "O1", "--sale", "S2",
                          "--line", "AMOX=1")
    assert code == 3, (out, err)
    assert "permission denied" in err and "Traceback" not in err
    assert err.startswith("ledger: ") and err.count("\n") == 1
    assert _count(roles.owner_url) == before


def test_the_app_role_verifies_through_the_cli(roles: Roles) -> None:
    code, out, err = _cli(roles, roles.app, "audit", "verify")
    assert code == 0, err
    assert out.startswith("verified ")


def test_a_foreign_lock_holder_does_not_stall_a_waiting_reader(roles: Roles) -> None:
    """A reader waiting for a position (`--as-of-position`) is not kept waiting by a stranger
    holding that position's registration key."""
    oid, position = _table_oid(roles.owner_url), _next_position(roles.owner_url)
    with psycopg.connect(roles.url(roles.stranger), autocommit=True) as stranger:
        stranger.execute("SELECT pg_advisory_lock_shared(((%s::bigint << 32) >> 32)::int4, "
                         "((%s::bigint << 32) >> 32)::int4)", (oid, position))
        with Ledger.open(roles.owner_url) as ledger:
            sale = ledger.sell(outlet="O1", sale_id="S3", lines=[("AMOX", 1)])
        code, out, err = _cli(roles, roles.app, "stock", "--outlet", "O1", "--sku", "AMOX",
                              "--as-of-position", str(sale.position), "--timeout", "3")
        assert code == 0, err
        assert "on hand        7" in out
