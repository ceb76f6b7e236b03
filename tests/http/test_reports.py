"""`GET /v1/reports/valuation` and `GET /v1/reports/cogs` through a real `ledger serve`: the
same figures as `ledger report`, a sale's result carrying its cost, and who may read them."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from tests.http.server import OTHER, OUTLET, Server
from tests.http.test_api import is_problem, ok


def test_valuation_and_cogs_over_http(server: Server) -> None:
    admin = server.client()
    sku = f"VAL-{uuid.uuid4().hex[:8]}"
    for batch, quantity, cost, delivery in (("B1", 8, "10", "PO-1"), ("B1", 4, "16", "PO-2")):
        ok(admin.post("/v1/receipts", json={
            "outlet": OUTLET, "sku": sku, "batch_id": batch, "quantity": quantity,
            "unit_cost": cost, "reference": delivery}))
    sale_id = f"S-{uuid.uuid4().hex[:8]}"
    sold = ok(admin.post("/v1/sales", json={
        "outlet": OUTLET, "sale_id": sale_id, "lines": [{"sku": sku, "quantity": 10}]}))
    assert sold["lines"][0]["cost"] == "112"  # Odoo's FIFO example: 8 x 10 + 2 x 16

    report = ok(admin.get("/v1/reports/valuation", params={"outlet": OUTLET}))
    [row] = [row for row in report["items"] if row["sku"] == sku]
    assert (row["quantity"], row["value"], row["unvalued"]) == (2, "32", 0)

    today = datetime.now(UTC).date().isoformat()
    cogs = ok(admin.get("/v1/reports/cogs", params={"from": today, "to": today}))
    [line] = [line for line in cogs["lines"] if line["sale_id"] == sale_id]
    assert (line["batches"], line["quantity"], line["cost"]) == ("B1:8@10;B1:2@16", 10, "112")
    assert [day["date"] for day in cogs["days"]] == [today]

    store, till = server.client("store"), server.client("till")
    ok(store.get("/v1/reports/valuation", params={"outlet": OUTLET}))
    is_problem(store.get("/v1/reports/valuation", params={"outlet": OTHER}), 403, "forbidden")
    is_problem(store.get("/v1/reports/valuation"), 403, "forbidden")
    is_problem(till.get("/v1/reports/cogs", params={"from": today, "to": today}), 403,
               "forbidden")
    ok(server.client("auditor").get("/v1/reports/cogs", params={"from": today, "to": today}))
    is_problem(admin.get("/v1/reports/cogs", params={"from": today, "to": "2000-01-01"}), 422,
               "invalid_input")
