"""Hot-SKU batching through a real `ledger serve`, on both stores: sales of one stock item that
arrive together are decided together and appended in one transaction, and still every sale
is all or nothing, recorded once, answered with its own position, and never oversold; with
two worker processes and another process selling the same item, optimistic concurrency keeps
it so."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import psycopg
import pytest

from ledger.app.service import Ledger
from ledger.domain import identity
from ledger.domain.errors import InsufficientStock
from tests.databases import fresh_database
from tests.http.server import OUTLET, Server, running_server
from tests.http.test_api import is_problem, new, ok, receive

CLIENTS = 8


def journal_sales(server: Server, sku: str) -> Counter[str]:
    journal = ok(server.client().get(f"/v1/outlets/{OUTLET}/history",
                                     params={"sku": sku, "limit": 1000}))["movements"]
    return Counter(m["reference"] for m in journal if m["kind"] == "sold")


def sales_per_transaction(store_url: str, sale_ids: list[str]) -> list[int]:
    """PostgreSQL: how many of the sales each transaction recorded (rows of one transaction
    share their `xmin`)."""
    with Ledger.open(store_url) as ledger:
        recorder: Any = ledger.application.recorder
        table = f'"{recorder.datastore.schema}"."{recorder.events_table_name}"'
    with psycopg.connect(store_url, autocommit=True) as connection:
        rows = connection.execute(
            f"SELECT xmin::text, count(*) FROM {table} WHERE originator_id = ANY(%s) "
            "GROUP BY 1", ([identity.sale_id(s) for s in sale_ids],)).fetchall()
    return sorted(int(count) for _, count in rows)


def sell_at_once(server: Server, bodies: Callable[[int], list[dict[str, Any]]],
                 headers: Callable[[dict[str, Any]], dict[str, str]] | None = None,
                 clients: int = CLIENTS, started: threading.Event | None = None,
                 ) -> list[tuple[dict[str, Any], httpx.Response]]:
    """Each client sends its bodies one after another, all clients starting together (and
    setting `started` as they do)."""
    barrier = threading.Barrier(clients, action=started.set if started else None)

    def till(n: int) -> list[tuple[dict[str, Any], httpx.Response]]:
        done = []
        with server.client("till") as client:
            barrier.wait()
            for body in bodies(n):
                done.append((body, client.post("/v1/sales", json=body,
                                               headers=headers(body) if headers else None)))
        return done

    with ThreadPoolExecutor(clients) as pool:
        return [pair for batch in pool.map(till, range(clients)) for pair in batch]


def one_unit(sku: str, sale_id: str) -> dict[str, Any]:
    return {"outlet": OUTLET, "sale_id": sale_id, "lines": [{"sku": sku, "quantity": 1}]}


def check_sold_exactly(server: Server, sku: str, stock: int,
                       results: list[tuple[dict[str, Any], httpx.Response]],
                       elsewhere: list[str] = ()) -> list[str]:  # type: ignore[assignment]
    """Units sold equal the stock, every 2xx sale (and every one made `elsewhere`) is in the
    journal once and no other is, and every refusal is a clean problem document."""
    sold = [body["sale_id"] for body, response in results if response.status_code == 200]
    for body, response in results:
        if response.status_code == 200:
            answer = response.json()
            assert answer["sale_id"] == body["sale_id"] and answer["position"] > 0
            assert int(response.headers["Ledger-Position"]) == answer["position"]
        else:
            problem = is_problem(response, 409, "insufficient_stock")
            assert (problem["sku"], problem["asked"], problem["available"]) == (sku, 1, 0)
    assert len(sold) + len(elsewhere) == stock
    assert journal_sales(server, sku) == Counter([*sold, *elsewhere])
    positions = [r.json()["position"] for _, r in results if r.status_code == 200]
    assert len(set(positions)) == len(positions)  # each answer its own position
    level = ok(server.client().get(f"/v1/outlets/{OUTLET}/stock", params={"sku": sku}))
    assert level["stock"][0]["on_hand"] == 0
    return sold


def test_sales_of_one_sku_that_arrive_together_share_transactions(server: Server) -> None:
    sku, stock = new("HOT"), 40
    receive(server.client(), sku, stock)
    results = sell_at_once(server, lambda n: [one_unit(sku, f"{sku}-{n}-{i}")
                                              for i in range(8)])
    sold = check_sold_exactly(server, sku, stock, results)
    if server.store_url.startswith("postgresql"):
        # Eight clients at once on one worker: some sales waited in the lane and went
        # together (the rows of one transaction share their xmin).
        grouped = sales_per_transaction(server.store_url, sold)
        assert sum(grouped) == stock and max(grouped) >= 2, grouped


def test_the_same_sale_several_times_in_one_burst_is_recorded_once(server: Server) -> None:
    sku = new("DUP")
    receive(server.client(), sku, 100)
    sale_ids = [new("S") for _ in range(4)]
    other = {"outlet": OUTLET, "sale_id": sale_ids[0], "lines": [{"sku": sku, "quantity": 2}]}
    # Clients 0-3 send sale n, clients 4-7 the same again; and client 0 then a different
    # body under sale 0's key.
    results = sell_at_once(
        server, lambda n: [one_unit(sku, sale_ids[n % 4])] + ([other] if n == 0 else []),
        headers=lambda body: {"Idempotency-Key": body["sale_id"]})
    by_sale: dict[str, list[httpx.Response]] = {}
    for body, response in results:
        if body is not other:
            by_sale.setdefault(body["sale_id"], []).append(response)
    for responses in by_sale.values():
        assert [r.status_code for r in responses] == [200, 200]
        assert responses[0].content == responses[1].content
        assert sorted(r.headers.get("Idempotent-Replayed", "") for r in responses) == [
            "", "true"]
    different = [r for body, r in results if body is other]
    is_problem(different[0], 422, "idempotency_key_reused")
    assert journal_sales(server, sku) == Counter(sale_ids)
    level = ok(server.client().get(f"/v1/outlets/{OUTLET}/stock", params={"sku": sku}))
    assert level["stock"][0]["on_hand"] == 96


@pytest.fixture(scope="module",
                params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def two_workers(request: pytest.FixtureRequest,
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('batching') / 'ledger.sqlite3'}"
        with running_server(url, workers=2, webhooks=False) as started:
            yield started
    else:
        with fresh_database() as url, running_server(url, workers=2,
                                                     webhooks=False) as started:
            yield started


def test_two_workers_and_another_process_selling_one_sku_sell_exactly_the_stock(
        two_workers: Server) -> None:
    """Each worker's groups race the other's and a direct till's: the losers are decided
    again on fresh state."""
    server = two_workers
    sku, stock = new("RACE"), 80
    receive(server.client(), sku, stock)
    elsewhere: list[str] = []
    started, stop = threading.Event(), threading.Event()

    def direct_till() -> None:
        with Ledger.open(server.store_url) as ledger:
            started.wait(60)
            n = 0
            while not stop.wait(0.005):
                sale_id = f"{sku}-direct-{n}"
                n += 1
                try:
                    ledger.sell(outlet=OUTLET, sale_id=sale_id, lines=[(sku, 1)])
                except InsufficientStock:
                    return
                elsewhere.append(sale_id)

    till = threading.Thread(target=direct_till)
    till.start()
    try:
        results = sell_at_once(server, lambda n: [one_unit(sku, f"{sku}-{n}-{i}")
                                                  for i in range(12)], started=started)
    finally:
        stop.set()
        till.join(60)
    sold = check_sold_exactly(server, sku, stock, results, elsewhere)
    assert sold and elsewhere  # both sides sold: they raced
