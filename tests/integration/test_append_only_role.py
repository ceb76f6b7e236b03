"""docs/append_only_role.sql: the ledger runs under a role that cannot rewrite history.

The store is created as the owner (postgres), the script is applied with role names made
unique for this run (roles are cluster-wide), and then, connected as the app role: commands
and projection catch-up work, and UPDATE, DELETE and TRUNCATE of the events table each fail
with insufficient_privilege. As the projector role a rebuild works, and the app role can
still catch up the rebuilt generation.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import errors

from ledger.app.audit import verify_chain
from ledger.app.service import Ledger
from projections.runner import PROJECTIONS, ReadModels, create_read_models
from projections.verify import verify_read_models
from tests.roles import Roles, made_roles, role_script
from tests.snapshotting import holding

pytestmark = pytest.mark.postgres


@pytest.fixture
def roles(postgres_url: str) -> Iterator[Roles]:
    with Ledger.open(postgres_url, create_tables=True) as owner:
        create_read_models(owner.application)
        owner.receive(outlet="O1", sku="AMOX", batch_id="B0", quantity=10)
    with made_roles(postgres_url) as made:
        with psycopg.connect(postgres_url, autocommit=True) as connection:
            connection.execute(role_script(made).encode())  # idempotent
        yield made


def test_the_app_role_appends_and_projects(roles: Roles) -> None:
    with Ledger.open(roles.url(roles.app)) as ledger:
        ledger.receive(outlet="O1", sku="AMOX", batch_id="B1", quantity=5)
        ledger.receive(outlet="O2", sku="PARA", batch_id="P1", quantity=3)
        sale = ledger.sell(outlet="O1", sale_id="S1", lines=[("AMOX", 12)])
        assert sum(t.quantity for t in sale.lines[0].takes) == 12
        # Snapshots are appended too (INSERT only).
        ledger.application.take_snapshots([ledger.stock_item("O1", "AMOX")], [0], interval=1)
        models = ReadModels(ledger.application)
        assert models.catch_up() > 0
        assert min(models.positions().values()) == models.head()
        assert verify_read_models(ledger.application) == []
        assert verify_chain(ledger.application).findings == []
        with psycopg.connect(roles.url(roles.app)) as connection:
            row = connection.execute(
                "SELECT batch_total FROM ledger_stock_levels WHERE outlet = 'O1' AND sku = 'AMOX'"
            ).fetchone()
        assert row is not None and row[0] == 3


@pytest.mark.parametrize("statement", [
    "UPDATE stockledger_events SET state = state WHERE originator_version = 1",
    "UPDATE stockledger_events SET notification_id = notification_id + 1000",
    "DELETE FROM stockledger_events WHERE originator_version = 1",
    "TRUNCATE stockledger_events",
    "DELETE FROM stockledger_snapshots",
    "UPDATE stockledger_snapshots SET state = state",
    "TRUNCATE stockledger_snapshots",
    "ALTER TABLE stockledger_events DISABLE ROW LEVEL SECURITY",
    "INSERT INTO stockledger_events (originator_id, originator_version, topic, state) "
    "VALUES (gen_random_uuid(), 1, 'raw', '')",
    "INSERT INTO stockledger_events_seals VALUES (1000000, '')",
    "UPDATE stockledger_events_seals SET chain_hash = chain_hash",
    "DELETE FROM stockledger_events_seals",
    "TRUNCATE stockledger_events_seals",
])
@pytest.mark.parametrize("role", ["app", "projector"])
def test_no_role_can_rewrite_the_event_store(roles: Roles, role: str, statement: str) -> None:
    url = roles.url(roles.app) if role == "app" else roles.url(roles.projector)
    with psycopg.connect(url) as connection:
        with pytest.raises(errors.InsufficientPrivilege):
            connection.execute(statement)
        connection.rollback()
        count = connection.execute("SELECT count(*) FROM stockledger_events").fetchone()
    assert count is not None and count[0] > 0


def test_the_projector_role_rebuilds_and_the_app_role_keeps_projecting(roles: Roles) -> None:
    with Ledger.open(roles.url(roles.projector)) as projector:
        ReadModels(projector.application).rebuild(list(PROJECTIONS))
        assert ReadModels(projector.application).generations() == dict.fromkeys(PROJECTIONS, 2)
    with Ledger.open(roles.url(roles.app)) as ledger:
        ledger.receive(outlet="O1", sku="AMOX", batch_id="B2", quantity=4)
        models = ReadModels(ledger.application)
        assert models.catch_up() > 0
        assert min(models.positions().values()) == models.head()
        assert verify_read_models(ledger.application) == []


def test_a_snapshot_the_app_role_forges_is_neither_sold_from_nor_verified(
        roles: Roles, postgres_url: str) -> None:
    """The app role may insert snapshots. One it writes at the stream's head, bound to the
    true position of the event there, carrying the tills' key id and a MAC under a key of its
    own, claiming 5,000 units of the 9 the events give, is not used by a sale (decided on the
    events) and fails the snapshot check (as the app role) and `ledger audit verify` (as the
    owner: the CLI's verify creates the read models, which the app role may not)."""
    import dataclasses
    import json

    from click.testing import CliRunner

    from cli.main import main as ledger_cli
    from ledger.app.snapshot_audit import verify_snapshots
    from ledger.domain import identity
    from ledger.domain.errors import InsufficientStock
    from ledger.store.snapshot_keys import SnapshotKey
    from ledger.store.snapshots import StockItemSnapshot, signed_content

    item = identity.stock_item_id("O1", "AMOX")
    with Ledger.open(roles.url(roles.app)) as ledger:
        ledger.application.take_snapshots([ledger.stock_item("O1", "AMOX")], [0], interval=1)
        ledger.sell(outlet="O1", sale_id="S1", lines=[("AMOX", 1)])
        head = ledger.stock_item("O1", "AMOX").version
        position = ledger.application.position_of(item, head)
        snapshots = ledger.application.snapshots
        assert snapshots is not None and position is not None
        (stored,) = snapshots.recorder.select_events(item)
        genuine = snapshots.mapper.to_domain_event(stored)
        assert isinstance(genuine, StockItemSnapshot) and genuine.key_id is not None
        state = holding(genuine, 5000)
        forger = SnapshotKey(secrets.token_hex(32).encode())
        mac = forger.mac(signed_content(item, head, position, genuine.topic, state))
        forged = snapshots.mapper.to_stored_event(dataclasses.replace(
            genuine, originator_version=head, position=position, state=state, mac=mac))
    with psycopg.connect(roles.url(roles.app)) as connection:
        connection.execute(
            "INSERT INTO stockledger_snapshots (originator_id, originator_version, topic, state)"
            " VALUES (%s, %s, %s, %s)", (item, head, forged.topic, forged.state))
    with Ledger.open(roles.url(roles.app)) as till:
        with pytest.raises(InsufficientStock) as refused:
            till.sell(outlet="O1", sale_id="BIG", lines=[("AMOX", 5000)])
        assert refused.value.available == 9
        findings = verify_snapshots(till.application).findings
    assert [(f.position, f"{item} at version {head}" in f.message,
             "quantity: snapshot 5000, events 9" in f.message) for f in findings] == [
        (position, True, True)], findings
    done = CliRunner().invoke(ledger_cli, ["--db", postgres_url, "audit", "verify", "--json"])
    assert done.exit_code == 1, done.output
    assert [f["check"] for f in json.loads(done.stdout)["findings"]] == ["snapshots"]
