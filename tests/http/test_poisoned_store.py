"""The HTTP service over a store holding a forged event (appended through the store's own
append, so the chain is intact): every read that does not depend on it answers, saying where
the read models stop; what must read it is a problem document naming it, never a bare 500.
On both stores, against a real `ledger serve` of its own (this module's server)."""

from __future__ import annotations

import csv
import io
import time
from typing import Any

import pytest

from ledger.app.service import Ledger
from ledger.domain import identity
from tests.http.server import OUTLET, Server
from tests.http.test_api import is_problem, ok
from tests.poisoning import UNKNOWN_TOPIC, forge

AMOX, PARA, IBU = "AMOX-500", "PARA-1G", "IBU-200"


@pytest.fixture(scope="module")
def poisoned(server: Server) -> tuple[Server, int]:
    """Three movements, a forged event on OUTLET/AMOX-500, then one more movement; the
    server, and the forged event's position."""
    admin = server.client()
    for sku, batch, quantity in ((AMOX, "A1", 10), (PARA, "P1", 20)):
        ok(admin.post("/v1/receipts", json={"outlet": OUTLET, "sku": sku, "batch_id": batch,
                                            "quantity": quantity}))
    ok(admin.post("/v1/sales", json={"outlet": OUTLET, "sale_id": "S1",
                                     "lines": [{"sku": PARA, "quantity": 2}]}))
    _, topic, state = UNKNOWN_TOPIC
    with Ledger.open(server.store_url) as opened:
        bad = forge(opened.application, topic, state, outlet=OUTLET, sku=AMOX)
    ok(admin.post("/v1/receipts", json={"outlet": OUTLET, "sku": IBU, "batch_id": "I1",
                                        "quantity": 7}))
    return server, bad


def names_the_row(body: dict[str, Any], bad: int) -> None:
    assert body["rule"] == "unreadable_event"
    assert body["position"] == bad and body["topic"] == UNKNOWN_TOPIC[1]
    assert body["stream"] == str(identity.stock_item_id(OUTLET, AMOX))
    assert body["reason"] and isinstance(body["version"], int)
    assert f"position {bad}" in body["detail"]


def test_reads_answer_as_far_as_the_read_models_got_and_say_where_they_stop(
        poisoned: tuple[Server, int]) -> None:
    server, bad = poisoned
    admin = server.client()
    stock = ok(admin.get(f"/v1/outlets/{OUTLET}/stock"))
    assert stock["position"] == bad - 1
    assert stock["stuck"]["position"] == bad and stock["stuck"]["topic"] == UNKNOWN_TOPIC[1]
    assert {r["sku"]: r["on_hand"] for r in stock["stock"]} == {AMOX: 10, PARA: 18}
    history = ok(admin.get(f"/v1/outlets/{OUTLET}/history", params={"sku": PARA}))
    assert sorted(m["quantity"] for m in history["movements"]) == [-2, 20]
    assert history["stuck"]["position"] == bad
    for path in (f"/v1/outlets/{OUTLET}/skus/{PARA}/batches", f"/v1/outlets/{OUTLET}/low-stock",
                 f"/v1/skus/{PARA}/stock"):
        body = ok(admin.get(path))
        assert body["stuck"]["position"] == bad and body["position"] == bad - 1, path
    # A read that asked for a position before it is answered; one beyond it cannot be.
    assert ok(admin.get(f"/v1/outlets/{OUTLET}/stock",
                        params={"after_position": bad - 1}))["position"] == bad - 1
    beyond = admin.get(f"/v1/outlets/{OUTLET}/stock", params={"after_position": bad + 1})
    names_the_row(is_problem(beyond, 500, "unreadable_event"), bad)
    assert "Retry-After" not in beyond.headers  # waiting will not make it readable


def test_status_verify_and_export_name_it(poisoned: tuple[Server, int]) -> None:
    server, bad = poisoned
    auditor = server.client("auditor")
    status = ok(auditor.get("/v1/projections/status"))["projections"]
    assert all(p["position"] == bad - 1 and p["stuck"]["position"] == bad for p in status)
    verify = ok(auditor.get("/v1/audit/verify"))
    assert verify["ok"] is False and verify["first_broken_position"] == bad
    assert [(f["check"], f["position"]) for f in verify["findings"]] == [("events", bad)]
    exported = auditor.get("/v1/audit/export", params={"format": "csv"})
    assert exported.status_code == 200, exported.text
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    marked = [r for r in rows if r["kind"] == "unreadable"]
    assert [r["position"] for r in marked] == [str(bad)]
    assert UNKNOWN_TOPIC[1] in marked[0]["detail"]
    assert sorted((r["sku"], r["quantity"]) for r in rows if r["kind"] != "unreadable") == [
        (AMOX, "10"), (IBU, "7"), (PARA, "-2"), (PARA, "20")]


def test_what_must_read_it_is_a_problem_naming_it_and_the_rest_works(
        poisoned: tuple[Server, int]) -> None:
    server, bad = poisoned
    admin = server.client()
    replay = admin.get("/v1/audit/replay", params={"outlet": OUTLET, "sku": AMOX,
                                                    "position": bad})
    names_the_row(is_problem(replay, 500, "unreadable_event"), bad)
    other = ok(admin.get("/v1/audit/replay", params={"outlet": OUTLET, "sku": PARA,
                                                      "position": bad + 10}))
    assert other["stock"][0]["on_hand"] == 18
    assert ok(admin.get("/v1/sales/S1/trace"))["lines"][0]["sku"] == PARA
    sale = admin.post("/v1/sales", json={"outlet": OUTLET, "sale_id": "S3",
                                         "lines": [{"sku": AMOX, "quantity": 1}]})
    names_the_row(is_problem(sale, 500, "unreadable_event"), bad)
    ok(admin.post("/v1/sales", json={"outlet": OUTLET, "sale_id": "S2",
                                     "lines": [{"sku": PARA, "quantity": 1}]}))


def test_the_feed_stops_before_it_and_says_where(poisoned: tuple[Server, int]) -> None:
    server, bad = poisoned
    admin = server.client()
    body = ok(admin.get("/v1/feed", params={"after": 0, "limit": 1000}))
    assert body["position"] == body["next"] == bad - 1 and body["more"] is False
    assert body["stuck"]["position"] == bad and body["stuck"]["topic"] == UNKNOWN_TOPIC[1]
    assert sorted((m["sku"], m["quantity"]) for m in body["movements"]) == [
        (AMOX, 10), (PARA, -2), (PARA, 20)]  # not IBU's receipt, recorded after it
    # Waiting does not take a consumer past it either: it is told where the feed stops.
    started = time.monotonic()
    waited = ok(admin.get("/v1/feed", params={"after": bad - 1, "wait": 1}))
    assert time.monotonic() - started >= 0.9
    assert waited["movements"] == [] and waited["next"] == bad - 1
    assert waited["stuck"]["position"] == bad
    # A till's filtered feed stops there too.
    till = ok(server.client("till").get("/v1/feed"))
    assert till["next"] == bad - 1 and till["stuck"]["position"] == bad
