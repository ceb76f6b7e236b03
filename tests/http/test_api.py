"""The HTTP API through a real client against a real `ledger serve`, on both stores: every
endpoint, idempotency, concurrency, tokens and roles, bounds and problem documents."""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from ledger.app.commands import MAX_LINES
from tests.http.server import OTHER, OUTLET, Server

PROBLEM = "application/problem+json"


def new(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def ok(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def is_problem(response: httpx.Response, status: int, rule: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body: dict[str, Any] = response.json()
    assert body["type"] == f"urn:stockledger:problem:{rule}"
    assert body["status"] == status and body["title"] and body["detail"]
    return body


def receive(client: httpx.Client, sku: str, quantity: int, outlet: str = OUTLET,
            batch: str = "B1", expires_on: str = "2099-01-01") -> dict[str, Any]:
    return ok(client.post("/v1/receipts", json={
        "outlet": outlet, "sku": sku, "batch_id": batch, "quantity": quantity,
        "expires_on": expires_on, "unit_cost": "0.12"}))


def movements(client: httpx.Client, reference: str, outlet: str = OUTLET) -> list[Any]:
    rows: list[Any] = ok(client.get(f"/v1/outlets/{outlet}/history",
                                    params={"reference": reference, "limit": 1000}))["movements"]
    return rows


def head(client: httpx.Client) -> int:
    value: int = ok(client.get("/v1/health"))["head"]
    return value


def test_every_endpoint(server: Server) -> None:
    admin = server.client()
    sku = new("AMOX")
    ok(admin.post("/v1/outlet-policies", json={"outlet": OUTLET, "allocation_policy": "fefo"}))
    receipt = receive(admin, sku, 100)
    assert receipt["stock"]["on_hand"] == 100 and receipt["position"] > 0
    receive(admin, sku, 5, batch="OLD", expires_on="2020-01-01")

    sale_id = new("S")
    sale = ok(admin.post("/v1/sales", json={
        "outlet": OUTLET, "sale_id": sale_id, "lines": [{"sku": sku, "quantity": 3}]}))
    assert sale["lines"][0]["takes"] == [{"batch_id": "B1", "quantity": 3}]
    assert "replayed" not in sale
    refund = ok(admin.post("/v1/refunds", json={
        "sale_id": sale_id, "refund_id": "R1", "lines": [{"sku": sku, "quantity": 1}]}))
    assert refund["outlet"] == OUTLET
    count = ok(admin.post("/v1/counts", json={
        "outlet": OUTLET, "sku": sku, "counts": {"B1": 97}, "count_id": new("C")}))
    assert count["counts"][0]["variance"] == -1
    write_off = ok(admin.post("/v1/write-offs", json={
        "outlet": OUTLET, "sku": sku, "quantity": 2, "reason": "damaged", "batch_id": "B1"}))
    assert write_off["stock"]["on_hand"] == 100  # 95 in B1, 5 expired in OLD
    transfer_id = new("T")
    transfer = ok(admin.post("/v1/transfers", json={
        "from_outlet": OUTLET, "to_outlet": OTHER, "sku": sku, "quantity": 10,
        "transfer_id": transfer_id, "in_transit": True}))
    assert transfer["received"] is False
    arrived = ok(admin.post("/v1/transfer-receipts", json={"transfer_id": transfer_id}))
    assert arrived["received"] is True and arrived["to_stock"]["on_hand"] == 10
    level = ok(admin.post("/v1/reorder-levels", json={"outlet": OUTLET, "sku": sku,
                                                      "level": 200}))
    assert level["level"] == 200
    sweep = ok(admin.post("/v1/expiry-sweeps", json={"outlet": OUTLET, "sku": sku}))
    assert [e["batch_id"] for e in sweep["expired"]] == ["OLD"]
    last = sweep["position"]

    stock = ok(admin.get(f"/v1/outlets/{OUTLET}/stock",
                         params={"sku": sku, "after_position": last, "wait": 5}))
    assert stock["position"] >= last
    assert stock["stock"] == [{"outlet": OUTLET, "sku": sku, "on_hand": 85, "available": 85,
                               "held": 0, "reorder_level": 200}]
    across = ok(admin.get(f"/v1/skus/{sku}/stock"))
    assert {(row["outlet"], row["on_hand"]) for row in across["stock"]} == {
        (OUTLET, 85), (OTHER, 10)}
    batches = ok(admin.get(f"/v1/outlets/{OUTLET}/skus/{sku}/batches"))
    assert [b["batch_id"] for b in batches["batches"]] == ["B1"]
    low = ok(admin.get(f"/v1/outlets/{OUTLET}/low-stock"))
    assert sku in [row["sku"] for row in low["low_stock"]]
    history = ok(admin.get(f"/v1/outlets/{OUTLET}/history", params={"sku": sku}))
    assert {m["actor"] for m in history["movements"]} == {"admin-1"}
    assert {m["kind"] for m in history["movements"]} >= {"received", "sold", "refunded"}
    cost = {(m["kind"], m["batch_id"], m["quantity"]): m["cost"] for m in history["movements"]}
    # Each unit at 0.12; a write-off's cost is derived from the layers, not recorded: null.
    assert (cost[("received", "B1", 100)], cost[("sold", "B1", -3)]) == ("12.00", "-0.36")
    assert (cost[("refunded", "B1", 1)], cost[("written_off", "B1", -2)]) == ("0.12", None)
    trace = ok(admin.get(f"/v1/sales/{sale_id}/trace"))
    assert trace["outlet"] == OUTLET and trace["refunds"][0]["refund_id"] == "R1"
    lot = ok(admin.get(f"/v1/lots/{sku}/B1/trace"))
    assert [(r["outlet"], r["quantity"]) for r in lot["received"]] == [(OUTLET, 100)]
    assert [(x["sale_id"], x["quantity"], [r["refund_id"] for r in x["refunds"]])
            for x in lot["sales"]] == [(sale_id, 3, ["R1"])]
    assert [(t["transfer_id"], t["to_outlet"], t["status"]) for t in lot["transfers"]] == [
        (transfer_id, OTHER, "received")]
    assert {(s["outlet"], s["quantity"]) for s in lot["now"]["on_shelves"]} == {
        (OUTLET, 85), (OTHER, 10)}
    today = datetime.now(UTC).date().isoformat()
    period = ok(admin.get("/v1/reports/movements", params={
        "from": today, "to": today, "outlet": OUTLET, "sku": sku}))
    assert [(r["opening"], r["received"], r["sold"], r["refunded_restocked"],
             r["count_variance"], r["written_off"], r["transferred_out"], r["expired"],
             r["closing"]) for r in period["rows"]] == [(0, 105, 3, 1, -1, 2, 10, 5, 85)]
    is_problem(admin.get("/v1/reports/movements", params={"from": today, "to": "2000-01-01"}),
               422, "invalid_input")
    soon = (datetime.now(UTC).date() + timedelta(days=10)).isoformat()
    receive(admin, sku, 4, outlet=OTHER, batch="SOON", expires_on=soon)
    expiring = ok(admin.get("/v1/expiring", params={"within_days": 30, "sku": sku}))
    assert [(r["outlet"], r["batch_id"], r["quantity"], r["expired"])
            for r in expiring["expiring"]] == [(OTHER, "SOON", 4, False)]
    status = ok(admin.get("/v1/projections/status"))
    assert {p["name"] for p in status["projections"]} == {"stock", "journal", "holds",
                                                          "lots", "periods"}
    verified = ok(admin.get("/v1/audit/verify"))
    assert verified["ok"] is True and verified["findings"] == []
    anchored = ok(admin.get("/v1/audit/verify", params={
        "expect_head": f"{verified['head_position']}:{verified['head_hash']}"}))
    assert anchored["ok"] is True
    replayed = ok(admin.get("/v1/audit/replay", params={"outlet": OUTLET, "sku": sku,
                                                        "position": receipt["position"]}))
    assert replayed["stock"][0]["on_hand"] == 100
    exported = admin.get("/v1/audit/export", params={"format": "jsonl", "reference": sale_id})
    assert exported.status_code == 200
    assert exported.headers["content-type"].startswith("application/x-ndjson")
    assert len(exported.text.splitlines()) == 2  # the sale's line and the refund's
    csv_export = admin.get("/v1/audit/export", params={"format": "csv", "reference": sale_id})
    assert csv_export.text.splitlines()[0].startswith("position")

    assert "/v1/sales" in ok(admin.get("/openapi.json"))["paths"]
    assert admin.get("/docs").status_code == 200
    is_problem(admin.get("/v1/nowhere"), 404, "not_found")
    is_problem(admin.get(f"/v1/sales/{new('S')}/trace"), 404, "unknown_sale")


def test_the_same_request_again_answers_the_first_response_and_records_nothing(
        server: Server) -> None:
    admin = server.client()
    sku = new("PARA")
    receive(admin, sku, 10)
    sale_id = new("S")
    body = {"outlet": OUTLET, "sale_id": sale_id, "lines": [{"sku": sku, "quantity": 2}]}
    key = new("K")
    first = admin.post("/v1/sales", json=body, headers={"Idempotency-Key": key})
    again = admin.post("/v1/sales", json=body, headers={"Idempotency-Key": key})
    assert first.status_code == again.status_code == 200
    assert again.content == first.content
    assert again.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert first.json()["idempotency_key"] == key
    assert len(movements(admin, sale_id)) == 1

    recorded = head(admin)
    changed = {**body, "lines": [{"sku": sku, "quantity": 3}]}
    reused = admin.post("/v1/sales", json=changed, headers={"Idempotency-Key": key})
    problem = is_problem(reused, 422, "idempotency_key_reused")
    assert problem["key"] == key
    # Without a header, the command's own key (the sale id) is the key, as on the CLI.
    other_sale = {**body, "sale_id": new("S")}
    plain = ok(admin.post("/v1/sales", json=other_sale))
    assert plain["idempotency_key"] == f"sale:{other_sale['sale_id']}"
    recorded = head(admin)
    assert admin.post("/v1/sales", json=other_sale).headers["Idempotent-Replayed"] == "true"
    # A header and a body key that disagree are refused before anything runs.
    mismatch = admin.post("/v1/sales", json={**body, "sale_id": new("S"), "key": "a"},
                          headers={"Idempotency-Key": "b"})
    assert is_problem(mismatch, 422, "invalid_input")["errors"][0]["field"] == "key"
    assert head(admin) == recorded  # neither the repeat nor the mismatch recorded anything


def test_one_sale_sent_by_six_clients_at_once_is_recorded_once(server: Server) -> None:
    sku = new("IBU")
    receive(server.client(), sku, 50)
    sale_id = new("S")
    body = {"outlet": OUTLET, "sale_id": sale_id, "lines": [{"sku": sku, "quantity": 4}]}
    barrier = threading.Barrier(6)

    def send(_: int) -> httpx.Response:
        with server.client("till") as client:
            barrier.wait()
            return client.post("/v1/sales", json=body, headers={"Idempotency-Key": sale_id})

    with ThreadPoolExecutor(6) as pool:
        responses = list(pool.map(send, range(6)))
    assert {r.status_code for r in responses} == {200}
    assert len({r.content for r in responses}) == 1
    assert sum(r.headers.get("Idempotent-Replayed") == "true" for r in responses) == 5
    admin = server.client()
    assert len(movements(admin, sale_id)) == 1
    stock = ok(admin.get(f"/v1/outlets/{OUTLET}/stock", params={"sku": sku}))
    assert stock["stock"][0]["on_hand"] == 46


def test_eight_clients_selling_one_sku_sell_exactly_the_stock(server: Server) -> None:
    sku = new("HOT")
    stock = 30
    receive(server.client(), sku, stock)
    barrier = threading.Barrier(8)

    def till(n: int) -> list[tuple[str, httpx.Response]]:
        done = []
        with server.client("till") as client:
            barrier.wait()
            for i in range(6):
                sale_id = f"{sku}-{n}-{i}"
                done.append((sale_id, client.post("/v1/sales", json={
                    "outlet": OUTLET, "sale_id": sale_id,
                    "lines": [{"sku": sku, "quantity": 1}]})))
        return done

    with ThreadPoolExecutor(8) as pool:
        results = [pair for batch in pool.map(till, range(8)) for pair in batch]
    sold = [(sale_id, r.json()) for sale_id, r in results if r.status_code == 200]
    refused = [r for _, r in results if r.status_code != 200]
    for response in refused:
        problem = is_problem(response, 409, "insufficient_stock")
        assert problem["asked"] > problem["available"] and problem["sku"] == sku
    assert sum(body["lines"][0]["quantity"] for _, body in sold) == stock
    admin = server.client()
    journal = ok(admin.get(f"/v1/outlets/{OUTLET}/history",
                           params={"sku": sku, "limit": 1000}))["movements"]
    sales_in_journal = Counter(m["reference"] for m in journal if m["kind"] == "sold")
    assert set(sales_in_journal) == {sale_id for sale_id, _ in sold}
    assert all(n == 1 for n in sales_in_journal.values())
    level = ok(admin.get(f"/v1/outlets/{OUTLET}/stock", params={"sku": sku}))["stock"][0]
    assert level["on_hand"] == 0


def test_who_may_do_what(server: Server) -> None:
    admin = server.client()
    sku = new("AUTH")
    receive(admin, sku, 10)
    receive(admin, sku, 10, outlet=OTHER)
    before = head(admin)
    sale = {"outlet": OUTLET, "sale_id": new("S"), "lines": [{"sku": sku, "quantity": 1}]}

    for client in (server.client(None), server.client(raw="slk_nonsense"),
                   server.client("revoked")):
        response = client.post("/v1/sales", json=sale)
        is_problem(response, 401, "unauthenticated")
        assert response.headers["WWW-Authenticate"] == "Bearer"
        is_problem(client.get(f"/v1/outlets/{OUTLET}/stock"), 401, "unauthenticated")
    till, store, auditor = server.client("till"), server.client("store"), server.client("auditor")
    is_problem(till.post("/v1/sales", json={**sale, "outlet": OTHER}), 403, "forbidden")
    is_problem(till.post("/v1/receipts", json={
        "outlet": OUTLET, "sku": sku, "batch_id": "X", "quantity": 1}), 403, "forbidden")
    is_problem(auditor.post("/v1/sales", json=sale), 403, "forbidden")
    is_problem(store.post("/v1/transfers", json={
        "from_outlet": OTHER, "to_outlet": OUTLET, "sku": sku, "quantity": 1,
        "transfer_id": new("T")}), 403, "forbidden")
    is_problem(store.post("/v1/outlet-policies", json={"outlet": OUTLET}), 403, "forbidden")
    is_problem(till.get(f"/v1/outlets/{OTHER}/stock"), 403, "forbidden")
    is_problem(till.get("/v1/audit/verify"), 403, "forbidden")
    is_problem(store.post("/v1/expiry-sweeps", json={}), 403, "forbidden")
    assert head(admin) == before  # nothing recorded by any of them

    # In scope, the token's name is the actor, whatever the body says.
    sold = ok(till.post("/v1/sales", json={**sale, "actor": "someone-else"}))
    assert sold["position"] > before
    assert [m["actor"] for m in movements(admin, sale["sale_id"])] == ["till-7"]
    ok(till.post("/v1/refunds", json={"sale_id": sale["sale_id"], "refund_id": "R1",
                                      "lines": [{"sku": sku, "quantity": 1}]}))
    ok(store.post("/v1/receipts", json={"outlet": OUTLET, "sku": sku, "batch_id": "S1",
                                        "quantity": 3}))
    across = ok(till.get(f"/v1/skus/{sku}/stock"))
    assert [row["outlet"] for row in across["stock"]] == [OUTLET]
    assert ok(auditor.get("/v1/audit/verify"))["ok"] is True
    ok(auditor.get(f"/v1/outlets/{OTHER}/history"))


def test_malformed_input_names_the_fields_by_their_api_names(server: Server) -> None:
    admin = server.client()
    before = head(admin)
    bad = admin.post("/v1/sales", json={"outlet": OUTLET, "sale_id": "S x",
                                        "lines": [{"sku": "A", "quantity": 0}], "extra": 1})
    fields = {e["field"] for e in is_problem(bad, 422, "invalid_input")["errors"]}
    assert fields == {"sale_id", "lines.0.quantity", "extra"}
    too_many = admin.post("/v1/sales", json={
        "outlet": OUTLET, "sale_id": new("S"),
        "lines": [{"sku": f"K{i}", "quantity": 1} for i in range(MAX_LINES + 1)]})
    assert is_problem(too_many, 422, "invalid_input")["errors"][0]["field"] == "lines"
    not_json = admin.post("/v1/sales", content=b"{", headers={"content-type": "application/json"})
    is_problem(not_json, 422, "invalid_input")
    huge = admin.post("/v1/counts", content=b"x" * (2 * 1024 * 1024),
                      headers={"content-type": "application/json"})
    is_problem(huge, 413, "payload_too_large")
    is_problem(admin.get(f"/v1/outlets/{OUTLET}/history", params={"limit": 100_000}),
               422, "invalid_input")
    is_problem(admin.get(f"/v1/outlets/{OUTLET}/stock", params={"wait": 31}),
               422, "invalid_input")
    beyond = admin.get(f"/v1/outlets/{OUTLET}/stock",
                       params={"after_position": before + 1000, "wait": 1})
    assert is_problem(beyond, 422, "invalid_input")["errors"][0]["field"] == "after_position"
    unknown = admin.post("/v1/refunds", json={"sale_id": new("S"), "refund_id": "R",
                                              "lines": [{"sku": "A", "quantity": 1}]})
    assert is_problem(unknown, 404, "unknown_sale")["sale_id"]
    assert head(admin) == before


def test_holds_corrections_and_discrepancies(server: Server) -> None:
    admin, store, till = server.client(), server.client("store"), server.client("till")
    sku = new("HOLD")
    receive(admin, sku, 10, batch="LOT-A", expires_on="2098-01-01")
    receive(admin, sku, 10, batch="LOT-B")
    held = ok(admin.post("/v1/holds", json={"sku": sku, "batch_id": "LOT-A",
                                            "reason": "recall"}))
    assert (held["held"], held["outlet"], held["reason"]) == (True, None, "recall")
    is_problem(admin.post("/v1/holds", json={"sku": sku, "batch_id": "LOT-A",
                                             "reason": "again"}), 409, "lot_already_held")
    is_problem(store.post("/v1/holds", json={"sku": sku, "batch_id": "LOT-A",
                                             "reason": "x"}), 403, "forbidden")
    is_problem(till.post("/v1/holds", json={"sku": sku, "batch_id": "LOT-B",
                                            "outlet": OUTLET, "reason": "x"}), 403, "forbidden")
    sale = ok(till.post("/v1/sales", json={"outlet": OUTLET, "sale_id": new("S"),
                                           "lines": [{"sku": sku, "quantity": 2}]}))
    assert sale["lines"][0]["takes"] == [{"batch_id": "LOT-B", "quantity": 2}]
    assert sale["lines"][0]["stock"]["held"] == 10
    batches = ok(admin.get(f"/v1/outlets/{OUTLET}/skus/{sku}/batches"))["batches"]
    assert {b["batch_id"]: b["on_hold"] for b in batches} == {"LOT-A": True, "LOT-B": False}
    stock = ok(admin.get(f"/v1/outlets/{OUTLET}/stock", params={"sku": sku}))["stock"]
    assert (stock[0]["available"], stock[0]["held"]) == (8, 10)
    is_problem(admin.post("/v1/hold-releases", json={
        "sku": sku, "batch_id": "LOT-A", "outlet": OUTLET, "reason": "x"}), 409, "lot_not_held")
    released = ok(admin.post("/v1/hold-releases", json={"sku": sku, "batch_id": "LOT-A",
                                                         "reason": "cleared"}))
    assert released["held"] is False

    fixed = ok(store.post("/v1/receipt-corrections", json={
        "outlet": OUTLET, "sku": sku, "receipt": "LOT-A", "quantity": 6, "reason": "typo"}))
    assert fixed["quantity"] == [10, 6] and fixed["stock"]["on_hand"] == 14
    is_problem(store.post("/v1/receipt-corrections", json={
        "outlet": OUTLET, "sku": sku, "receipt": "LOT-B", "quantity": 1, "reason": "typo"}),
        409, "correction_refused")
    is_problem(store.post("/v1/receipt-corrections", json={
        "outlet": OUTLET, "sku": sku, "receipt": "DN-0", "quantity": 1, "reason": "typo"}),
        404, "unknown_receipt")

    ok(admin.post("/v1/outlet-policies", json={"outlet": OTHER, "late_sales_window": "72h"}))
    receive(admin, sku, 1, outlet=OTHER)
    late_id = new("LATE")
    yesterday = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    late = ok(admin.post("/v1/sales", json={"outlet": OTHER, "sale_id": late_id,
                                            "lines": [{"sku": sku, "quantity": 4}],
                                            "occurred_at": yesterday}))
    assert late["lines"][0]["unallocated"] == 4  # received today: not on the shelf then
    listed = ok(admin.get("/v1/discrepancies", params={"outlet": OTHER}))["discrepancies"]
    assert [(d["sku"], d["shortfall"]) for d in listed if d["sku"] == sku] == [(sku, 4)]
    row = next(d for d in listed if d["sku"] == sku)
    assert [(x["sale_id"], x["short"], x["late"]) for x in row["sales"]] == [(late_id, 4, True)]
    is_problem(till.get("/v1/discrepancies", params={"outlet": OTHER}), 403, "forbidden")
