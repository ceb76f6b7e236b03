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
import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner
from eventsourcing.persistence import PersistenceError
from psycopg import errors

from cli.main import main
from ledger.app.service import Ledger
from ledger.domain.identity import stock_item_id
from ledger.store.postgres.lock_keys import ALLOCATION_LOCK, READ_CHECK_SALT, SEAL_LOCK
from ledger.store.postgres.values import stream_key
from projections.runner import ReadModels, create_read_models
from tests.roles import Roles, made_roles

pytestmark = pytest.mark.postgres

TABLE = "stockledger_events"
APPEND_ARGS = ("ARRAY[gen_random_uuid()], ARRAY[1::bigint], ARRAY['raw'], ARRAY[''::bytea], "
               "'{}'::uuid[], '{}'::bigint[], '{}'::bigint[]")


@pytest.fixture
def roles(postgres_url: str) -> Iterator[Roles]:
    """A store made by the owner, with a receipt and a sale; the roles of
    `docs/append_only_role.sql` under unique names; and a stranger: LOGIN, no grants."""
    with Ledger.open(postgres_url, create_tables=True) as owner:
        create_read_models(owner.application)
        owner.receive(outlet="O1", sku="AMOX", batch_id="B0", quantity=10)
        owner.sell(outlet="O1", sale_id="S0", lines=[("AMOX", 2)])
    with made_roles(postgres_url) as made:
        yield made


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


# ------------------------------------------------------------------ the store's other keys

def _stranger(roles: Roles) -> psycopg.Connection[Any]:
    return psycopg.connect(roles.url(roles.stranger), autocommit=True)


def test_a_stranger_holding_a_streams_lock_fails_its_appends_at_once_and_no_others(
        roles: Roles) -> None:
    """The read-check key of AMOX at O1, held exclusively by a stranger: a sale of AMOX there
    fails within seconds naming the stranger (main waited out ten lock timeouts, 102 s), a
    sale of another stock item goes through, and once the stranger lets go AMOX sells."""
    oid = _table_oid(roles.owner_url)
    with _stranger(roles) as stranger, Ledger.open(roles.owner_url) as ledger:
        ledger.receive(outlet="O1", sku="PARA", batch_id="P0", quantity=10)
        stranger.execute("SELECT pg_advisory_lock(uuid_hash_extended(%s, %s) # %s)",
                         (stock_item_id("O1", "AMOX"), READ_CHECK_SALT, oid))
        started = time.monotonic()
        with pytest.raises(PersistenceError, match="stream lock") as raised:
            ledger.sell(outlet="O1", sale_id="S-held", lines=[("AMOX", 1)])
        took = time.monotonic() - started
        assert str(stranger.info.backend_pid) in str(raised.value)
        assert roles.stranger in str(raised.value)
        assert took < 8.0, f"a sale waited {took:.1f}s for a stranger's stream lock"
        ledger.sell(outlet="O1", sale_id="S-para", lines=[("PARA", 1)])
        stranger.execute("SELECT pg_advisory_unlock_all()")
        sale = ledger.sell(outlet="O1", sale_id="S-held", lines=[("AMOX", 1)])
        assert sale.position is not None


def test_an_append_that_starts_a_stream_takes_none_of_its_stream_locks(roles: Roles) -> None:
    """A stranger holding the read-check key of a stock item nobody has received yet: the
    first receipt opens the item and receives into it (versions 1 and 2) in one append, which
    starts the stream and so takes none of its locks: it goes through at once, where taking
    the exclusive lock of version 2 failed it after 2 s naming the stranger."""
    oid = _table_oid(roles.owner_url)
    with _stranger(roles) as stranger, Ledger.open(roles.owner_url) as ledger:
        stranger.execute("SELECT pg_advisory_lock(uuid_hash_extended(%s, %s) # %s)",
                         (stock_item_id("O1", "NEW-SKU"), READ_CHECK_SALT, oid))
        started = time.monotonic()
        receipt = ledger.receive(outlet="O1", sku="NEW-SKU", batch_id="N1", quantity=5)
        took = time.monotonic() - started
        assert receipt.position is not None
        assert took < 1.5, f"the receipt waited {took:.1f}s for a stream it started"
        item = ledger.application.load(stock_item_id("O1", "NEW-SKU"))
        assert item is not None and item.version == 2


def test_an_append_waits_for_the_stores_own_allocation_lock_past_the_check(
        roles: Roles) -> None:
    """A session that may append (here the owner) holding the allocation lock for 3 s is
    waited for: the check after 2 s finds no stranger and the append goes on, not failing as
    if a stranger held it."""
    key = ALLOCATION_LOCK ^ _table_oid(roles.owner_url)
    with psycopg.connect(roles.owner_url, autocommit=True) as holder, \
            Ledger.open(roles.owner_url) as ledger:
        holder.execute("SELECT pg_advisory_lock(%s)", (key,))
        release = threading.Timer(3.0, lambda: holder.execute(
            "SELECT pg_advisory_unlock(%s)", (key,)))
        release.start()
        try:
            started = time.monotonic()
            receipt = ledger.receive(outlet="O1", sku="AMOX", batch_id="B2", quantity=1)
            took = time.monotonic() - started
        finally:
            release.join()
        assert receipt.position is not None
        assert took >= 2.5, f"the append did not wait for the lock ({took:.1f}s)"


def test_a_stranger_holding_a_streams_queue_key_stalls_nothing(roles: Roles) -> None:
    """The queue key of AMOX at O1, held exclusively by a stranger: every append to the
    stream used to fail the gate as a lost race, then wait the lock timeout for the queue and
    give up; the gate now passes a stranger's lock, and status lists it as foreign."""
    oid = _table_oid(roles.owner_url)
    with _stranger(roles) as stranger, Ledger.open(roles.owner_url) as ledger:
        stranger.execute("SELECT pg_advisory_lock(%s::bigint # %s)",
                         (stream_key(stock_item_id("O1", "AMOX")), oid))
        started = time.monotonic()
        for number in range(3):
            ledger.sell(outlet="O1", sale_id=f"S-queue-{number}", lines=[("AMOX", 1)])
        took = time.monotonic() - started
        assert took < 5.0, f"three sales took {took:.1f}s beside a stranger's queue key"
        foreign = _status(roles.owner_url)["horizon"]["foreign"]
        assert any(lock["pid"] == stranger.info.backend_pid and lock["role"] == roles.stranger
                   for lock in foreign), foreign


def test_a_stranger_holding_the_seal_lock_fails_verify_naming_it(roles: Roles) -> None:
    """main's `audit verify` waited for as long as the stranger's session lived."""
    key = SEAL_LOCK ^ _table_oid(roles.owner_url)
    with _stranger(roles) as stranger:
        stranger.execute("SELECT pg_advisory_lock(%s)", (key,))
        started = time.monotonic()
        code, _, err = _cli(roles, roles.app, "audit", "verify")
        took = time.monotonic() - started
        assert code == 3, err
        assert "seal lock" in err and str(stranger.info.backend_pid) in err
        assert roles.stranger in err and err.count("\n") == 1
        assert took < 8.0, f"verify waited {took:.1f}s for a stranger's seal lock"
        seal = _status(roles.owner_url)["horizon"]["seal"]
        assert [(s["pid"], s["honoured"]) for s in seal] == [
            (stranger.info.backend_pid, False)]
        stranger.execute("SELECT pg_advisory_unlock_all()")
    code, out, err = _cli(roles, roles.app, "audit", "verify")
    assert code == 0, err
    assert out.startswith("verified ")


# ------------------------------------------------------------------ the auditor's other reads

def test_the_auditor_replays_traces_and_reads_the_status(roles: Roles) -> None:
    code, out, err = _cli(roles, roles.auditor, "audit", "replay", "--position", "1000",
                          "--outlet", "O1", "--json")
    assert code == 0, err
    assert json.loads(out)["stock"][0]["on_hand"] == 8
    code, out, err = _cli(roles, roles.auditor, "audit", "trace", "--sale", "S0", "--json")
    assert code == 0, err
    assert "S0" in out
    code, out, err = _cli(roles, roles.auditor, "projections", "status", "--json")
    assert code == 0, err
    assert json.loads(out)["horizon"]["held_at"] is None


def test_the_auditor_waits_for_the_projector_to_reach_a_position(roles: Roles) -> None:
    """`--as-of-position` as a role that may not write the read models waits for whoever may
    (here the projector, a second later) instead of failing on the write it may not do."""
    with Ledger.open(roles.owner_url) as owner:
        receipt = owner.receive(outlet="O1", sku="AMOX", batch_id="B7", quantity=4)
    assert receipt.position is not None

    def project() -> None:
        time.sleep(1.0)
        with Ledger.open(roles.url(roles.projector)) as projector:
            ReadModels(projector.application).catch_up()

    projecting = threading.Thread(target=project)
    projecting.start()
    try:
        code, out, err = _cli(roles, roles.auditor, "stock", "--outlet", "O1", "--sku", "AMOX",
                              "--as-of-position", str(receipt.position), "--timeout", "20")
    finally:
        projecting.join()
    assert code == 0, err
    assert "on hand       12" in out
