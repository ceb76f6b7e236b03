"""`ledger serve` under the database roles of `docs/append_only_role.sql` (PostgreSQL).

As the read-only auditor role the service starts (it creates nothing), and every endpoint an
auditor token may call answers: verify (saying it sealed nothing), status, replay, trace,
export, the change feed and the reads (from the read models as the projector left them).
What that role may not do (a till's sale) is a 503 `store_permission_denied` problem, never a
500 and never a Retry-After. As the app role the service sells, verifies and delivers
webhooks. Role names are unique per test and dropped afterwards."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from cli.http.webhooks import WebhookStore
from ledger.app.service import Ledger
from projections.runner import ReadModels
from tests.databases import fresh_database
from tests.http.receiver import receiving
from tests.http.server import OUTLET, Server, make_tokens, running_server
from tests.http.test_api import is_problem, ok
from tests.roles import Roles, made_roles

pytestmark = pytest.mark.postgres


@contextmanager
def roles_store() -> Iterator[tuple[Roles, dict[str, str]]]:
    """A store with tokens, the webhooks table, a receipt and a sale, all made by the owner;
    the roles made after them (so the script grants them the token and webhooks tables); the
    read models caught up by the projector; then one more receipt that only the projector
    could bring in."""
    with fresh_database() as url:
        tokens = make_tokens(url)
        with Ledger.open(url) as owner:
            WebhookStore(owner.application).create_table()
            owner.receive(outlet=OUTLET, sku="AMOX", batch_id="B0", quantity=10)
            owner.sell(outlet=OUTLET, sale_id="S0", lines=[("AMOX", 2)])
        with made_roles(url) as roles:
            with Ledger.open(roles.url(roles.projector)) as projector:
                ReadModels(projector.application).catch_up()
            with Ledger.open(url) as owner:
                owner.receive(outlet=OUTLET, sku="AMOX", batch_id="B1", quantity=5)
            yield roles, tokens


@pytest.fixture(scope="module")
def store() -> Iterator[tuple[Roles, dict[str, str]]]:
    with roles_store() as made:
        yield made


@pytest.fixture(scope="module")
def auditor_service(store: tuple[Roles, dict[str, str]]) -> Iterator[Server]:
    roles, tokens = store
    with running_server(roles.url(roles.auditor), tokens=tokens) as server:
        yield server


def test_the_read_only_service_verifies_without_sealing(auditor_service: Server) -> None:
    report = ok(auditor_service.client("auditor").get("/v1/audit/verify"))
    assert report["ok"] is True, report
    assert report["sealed_here"] is False and report["read_models_checked"] is True


def test_the_read_only_service_reports_status_replays_traces_and_exports(
        auditor_service: Server) -> None:
    auditor = auditor_service.client("auditor")
    status = ok(auditor.get("/v1/projections/status"))
    assert status["horizon"]["held_at"] is None
    # The last receipt, its movement and its command record, not projected.
    assert {p["lag_events"] for p in status["projections"]} == {2}
    replay = ok(auditor.get("/v1/audit/replay", params={"outlet": OUTLET, "position": 1000}))
    assert replay["stock"][0]["on_hand"] == 13
    trace = ok(auditor.get("/v1/sales/S0/trace"))
    assert "S0" in json.dumps(trace)
    exported = auditor.get("/v1/audit/export")
    assert exported.status_code == 200, exported.text
    assert len(exported.text.splitlines()) == 3


def test_the_read_only_service_reads_the_models_as_they_stand(auditor_service: Server) -> None:
    """The read models are one receipt behind, which this role may not apply: the read
    answers from where they stand and says so by its position."""
    head = ok(auditor_service.client(None).get("/v1/health"))["head"]
    stock = ok(auditor_service.client("auditor").get(f"/v1/outlets/{OUTLET}/stock"))
    assert stock["position"] < head
    assert stock["stock"][0]["on_hand"] == 8
    history = ok(auditor_service.client("auditor").get(f"/v1/outlets/{OUTLET}/history"))
    assert len(history["movements"]) == 2


def test_the_read_only_service_serves_the_change_feed(auditor_service: Server) -> None:
    """The journal as the projector left it: the first receipt and the sale, not the last
    receipt, which this role may not project."""
    page = ok(auditor_service.client("auditor").get("/v1/feed", params={"after": 0}))
    assert [m["kind"] for m in page["movements"]] == ["received", "sold"], page
    head = ok(auditor_service.client(None).get("/v1/health"))["head"]
    assert page["next"] == page["position"] < head


def test_what_the_read_only_service_may_not_do_is_a_clear_503(auditor_service: Server) -> None:
    response = auditor_service.client("till").post("/v1/sales", json={
        "outlet": OUTLET, "sale_id": "S-denied", "lines": [{"sku": "AMOX", "quantity": 1}]})
    problem = is_problem(response, 503, "store_permission_denied")
    assert "permission denied" in problem["detail"]
    assert "Retry-After" not in response.headers


def test_the_app_role_service_sells_verifies_and_delivers_webhooks() -> None:
    """On main the service did not even start as the app role (the token table's CREATE
    TABLE IF NOT EXISTS is refused without CREATE on the schema), nor did its webhooks. A
    store of its own, apart from the read-only service's."""
    with roles_store() as (roles, tokens), receiving() as receiver:
        with Ledger.open(roles.owner_url) as owner:
            WebhookStore(owner.application).add(receiver.url, "whsec_roles_0123456789", [],
                                                None)
        with running_server(roles.url(roles.app), tokens=tokens) as server:
            sale = ok(server.client("till").post("/v1/sales", json={
                "outlet": OUTLET, "sale_id": "S-app",
                "lines": [{"sku": "AMOX", "quantity": 1}]}))
            assert sale["position"] > 0
            assert receiver.wait_for(lambda: receiver.movements(), 30)
            # Verified once the delivery worker has caught the read models up: verify reads
            # their positions and rows in separate transactions, so a catch-up committing
            # between the two (the worker's) shows as a mismatch (as under `projections run`).
            report = ok(server.client("auditor").get("/v1/audit/verify"))
            assert report["ok"] is True and report["sealed_here"] is True, report
    assert [m["reference"] for m in receiver.movements()] == ["S-app"]
