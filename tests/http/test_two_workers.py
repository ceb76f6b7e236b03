"""`ledger serve --workers 2`, on both stores: two worker processes, each with its own ledger,
appending at once. A consumer following the feed while 8 writers append sees every movement
exactly once, in order, resuming from its cursor with fresh connections; and one sale sent by
many clients at once is recorded once, whichever process each lands on."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from ledger.app.service import Ledger
from ledger.domain.quantities import BatchIdentity
from ledger.domain.stock_item import MovementContext, StockItem
from tests.appending import append_in
from tests.databases import fresh_database
from tests.http.feed_client import keys, page, recorded_movements
from tests.http.server import OTHER, OUTLET, Server, running_server
from tests.http.test_api import head, movements, new, ok, receive

WRITERS = 8
OPERATIONS = 12
"""Per writer: about a hundred appends in all, a minute at most on the 2-core machine."""


@pytest.fixture(scope="module",
                params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def server(request: pytest.FixtureRequest,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('workers') / 'ledger.sqlite3'}"
        with running_server(url, workers=2, webhooks=False) as started:
            yield started
    else:
        with fresh_database() as url, running_server(url, workers=2,
                                                     webhooks=False) as started:
            yield started


def worker_processes(server: Server) -> list[int]:
    """The pids of the server's worker processes: the supervisor's children that run
    Python (uvicorn also spawns a resource tracker, which imports no app)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            command = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue  # ended meanwhile
        if int(fields[1]) == server.process.pid and b"multiprocessing" in command \
                and b"resource_tracker" not in command:
            found.append(int(stat.parent.name))
    return found


def test_two_worker_processes_serve(server: Server) -> None:
    assert len(worker_processes(server)) == 2


def hold_appends(store_url: str, stop: threading.Event, held: list[int]) -> None:
    """PostgreSQL: appends through the store's own protocol kept open for a while before they
    commit, so that later appends commit first, below which the feed must stop."""
    with Ledger.open(store_url) as ledger, \
            psycopg.connect(store_url, autocommit=True) as connection:
        k = 0
        while not stop.wait(random.uniform(0.1, 0.4)):
            item = StockItem.open(OUTLET, new("HELD"))
            context = MovementContext(datetime.now(UTC), "holder", f"held-{k}", f"held-{k}")
            item.receive(BatchIdentity(batch_id="H", quantity=3), context)
            events = [ledger.application.mapper.to_stored_event(e)
                      for e in item.collect_events()]
            with connection.transaction():
                held.extend(append_in(connection, ledger.application, events))
                time.sleep(random.uniform(0.2, 0.8))
            k += 1


def test_a_consumer_following_the_feed_sees_every_movement_once_in_order_while_8_writers_append(
        server: Server) -> None:
    admin = server.client()
    start = head(admin)
    shared = new("SHARED")
    receive(admin, shared, 40)
    stop_consumer = threading.Event()
    consumed: list[dict[str, Any]] = []
    cursors: list[int] = []
    errors: list[str] = []

    def consume() -> None:
        # A fresh connection every few pages: a consumer that resumes from its last cursor.
        after, pages = start, 0
        client = server.client()
        try:
            while True:
                writers_done = stop_consumer.is_set()
                body = page(client, after, limit=7, wait=1)
                consumed.extend(body["movements"])
                after = body["next"]
                cursors.append(after)
                pages += 1
                if pages % 5 == 0:
                    client.close()
                    client = server.client()
                if writers_done and not body["more"] and not body["movements"]:
                    return
        except Exception as error:  # reported by the test, not lost in the thread
            errors.append(repr(error))

    def write(n: int) -> None:
        own = f"{shared}-{n}"
        other = server.client()  # the store's token may not receive at the other outlet
        with server.client("store") as client:
            for i in range(OPERATIONS):
                outlet = OUTLET if i % 3 else OTHER
                if i % 4 == 0:
                    response = client.post("/v1/receipts", json={
                        "outlet": OUTLET, "sku": own, "batch_id": f"B{i}", "quantity": 5})
                elif i % 4 == 1:
                    response = client.post("/v1/sales", json={
                        "outlet": OUTLET, "sale_id": f"{own}-{i}",
                        "lines": [{"sku": shared, "quantity": 1}]})
                elif outlet == OTHER:
                    response = other.post("/v1/receipts", json={
                        "outlet": OTHER, "sku": own, "batch_id": f"O{i}", "quantity": 2})
                else:
                    response = client.post("/v1/sales", json={
                        "outlet": OUTLET, "sale_id": f"{own}-{i}",
                        "lines": [{"sku": own, "quantity": 1}]})
                if response.status_code != 200:
                    errors.append(f"writer {n}: {response.status_code} {response.text}")

    held: list[int] = []
    stop_holder = threading.Event()
    holder = threading.Thread(target=hold_appends, args=(server.store_url, stop_holder, held))
    consumer = threading.Thread(target=consume)
    consumer.start()
    if server.store_url.startswith("postgresql"):
        holder.start()
    with ThreadPoolExecutor(WRITERS) as pool:
        list(pool.map(write, range(WRITERS)))
    stop_holder.set()
    if holder.ident is not None:
        holder.join()
    # Everything is committed now: the consumer's last pages reach the end and it stops.
    stop_consumer.set()
    consumer.join(timeout=120)
    assert not consumer.is_alive() and errors == []

    expected = recorded_movements(server.store_url, start)
    assert len(expected) >= WRITERS * OPERATIONS
    # Every movement exactly once, in position order, as the events say.
    assert keys(consumed) == keys(expected)
    assert [(r["outlet"], r["sku"], r["quantity"], r["reference"]) for r in consumed] == [
        (r["outlet"], r["sku"], r["quantity"], r["reference"]) for r in expected]
    assert cursors == sorted(cursors)
    if server.store_url.startswith("postgresql"):
        assert held, "no append was held open"
        held_receipts = {row["position"] for row in consumed if row["actor"] == "holder"}
        assert held_receipts and held_receipts <= set(held)


def test_the_same_sale_sent_at_once_to_two_worker_processes_is_recorded_once(
        server: Server) -> None:
    sku = new("TWO")
    receive(server.client(), sku, 100)
    clients = 8
    sales = [new("S") for _ in range(5)]
    barrier = threading.Barrier(clients)

    def send(_: int) -> list[httpx.Response]:
        answers = []
        for sale_id in sales:
            # A new connection for each sale, so that each may land on either process.
            with server.client("till") as client:
                barrier.wait()
                answers.append(client.post("/v1/sales", json={
                    "outlet": OUTLET, "sale_id": sale_id,
                    "lines": [{"sku": sku, "quantity": 3}]},
                    headers={"Idempotency-Key": f"key-{sale_id}"}))
        return answers

    with ThreadPoolExecutor(clients) as pool:
        answers = list(pool.map(send, range(clients)))
    admin = server.client()
    for index, sale_id in enumerate(sales):
        responses = [client_answers[index] for client_answers in answers]
        assert {r.status_code for r in responses} == {200}, [r.text for r in responses]
        assert len({r.content for r in responses}) == 1
        assert Counter(r.headers.get("Idempotent-Replayed") for r in responses) == {
            "true": clients - 1, None: 1}
        assert len(movements(admin, sale_id)) == 1
    stock = ok(admin.get(f"/v1/outlets/{OUTLET}/stock", params={"sku": sku}))["stock"][0]
    assert stock["on_hand"] == 100 - 3 * len(sales)
