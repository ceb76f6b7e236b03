"""The change feed through a real client against a real `ledger serve`, on both stores: pages
in position order with a cursor to resume from, long-polling, server-sent events resumed with
Last-Event-ID, who may read it, and (PostgreSQL) that it never passes an append in flight."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import psycopg
import pytest

from ledger.app.service import Ledger
from ledger.domain.quantities import BatchIdentity
from ledger.domain.stock_item import MovementContext, StockItem
from tests.appending import append_in
from tests.databases import fresh_database
from tests.http.feed_client import keys, page, read_all, recorded_movements, sse_events
from tests.http.server import OTHER, OUTLET, Server, running_server
from tests.http.test_api import head, is_problem, new, ok, receive


def sell(client: httpx.Client, sku: str, quantity: int = 1, outlet: str = OUTLET) -> str:
    """Sell and return the sale's id (the reference of its movements)."""
    sale_id = new("S")
    ok(client.post("/v1/sales", json={
        "outlet": outlet, "sale_id": sale_id, "lines": [{"sku": sku, "quantity": quantity}]}))
    return sale_id


def positions_of(rows: list[dict[str, Any]], reference: str) -> list[int]:
    return [row["position"] for row in rows if row["reference"] == reference]


def test_pages_give_every_movement_once_in_order_and_never_split_an_event(
        server: Server) -> None:
    admin = server.client()
    start = head(admin)
    sku = new("FEED")
    receive(admin, sku, 3, batch="B1", expires_on="2098-01-01")
    receive(admin, sku, 3, batch="B2", expires_on="2099-01-01")
    for _ in range(2):
        sell(admin, sku)
    two_batch_sale = sell(admin, sku, 2)  # one from B1, one from B2: one event, two movements
    receive(admin, sku, 4, outlet=OTHER)

    expected = recorded_movements(server.store_url, start)
    two_batches = positions_of(expected, two_batch_sale)[0]
    assert positions_of(expected, two_batch_sale) == [two_batches] * 2
    whole, cursor = read_all(admin, start)
    assert keys(whole) == keys(expected)
    assert [(r["kind"], r["outlet"], r["sku"], r["batch_id"], r["quantity"], r["actor"],
             r["cost"]) for r in whole] == [(r["kind"], r["outlet"], r["sku"], r["batch_id"],
                                            r["quantity"], r["actor"], r["cost"])
                                           for r in expected]
    assert any(r["cost"] is not None for r in whole)
    assert cursor >= expected[-1]["position"]

    # A page of one movement at a time: resuming from each `next`, nothing is seen twice or
    # missed, and the sale's two movements come in one page, never split.
    seen: list[dict[str, Any]] = []
    after = start
    while after < cursor:
        body = page(admin, after, limit=1)
        positions = {row["position"] for row in body["movements"]}
        assert len(positions) <= 1
        if two_batches in positions:
            assert len(body["movements"]) == 2
        else:
            assert len(body["movements"]) <= 1
        seen += body["movements"]
        after = body["next"]
    assert keys(seen) == keys(expected)
    # Once the cursor has reached the journal's position, a page is empty and stays put.
    assert page(admin, cursor) == {"after": cursor, "next": cursor, "position": cursor,
                                   "more": False, "movements": [], "stuck": None}


def test_a_long_poll_answers_as_soon_as_a_movement_arrives(server: Server) -> None:
    admin = server.client()
    sku = new("POLL")
    receive(admin, sku, 5)
    cursor = read_all(admin, 0)[1]
    sold: list[str] = []

    def sell_soon() -> None:
        time.sleep(0.6)
        sold.append(sell(server.client("till"), sku))

    seller = threading.Thread(target=sell_soon)
    started = time.monotonic()
    seller.start()
    body = page(admin, cursor, wait=20)
    waited = time.monotonic() - started
    seller.join()
    assert 0.5 < waited < 10, waited
    assert [row["reference"] for row in body["movements"]] == sold
    assert body["movements"][0]["actor"] == "till-7"


def test_a_long_poll_with_nothing_new_times_out_cleanly(server: Server) -> None:
    admin = server.client()
    cursor = read_all(admin, 0)[1]
    started = time.monotonic()
    body = page(admin, cursor, wait=1.5)
    waited = time.monotonic() - started
    assert 1.4 < waited < 6, waited
    assert body["movements"] == [] and body["next"] == cursor and body["more"] is False


@contextlib.contextmanager
def stream_lines(client: httpx.Client, **options: Any) -> Iterator[Iterator[str]]:
    with client.stream("GET", "/v1/feed/stream", **options) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        yield response.iter_lines()


def movement_events(lines: Iterator[str], count: int) -> list[dict[str, Any]]:
    found = []
    for message in sse_events(lines):
        if message.get("event") == "movements":
            found.append(message)
            if len(found) == count:
                break
    return found


def test_the_stream_resumes_after_its_last_event_id(server: Server) -> None:
    admin = server.client()
    start = head(admin)
    sku = new("SSE")
    receive(admin, sku, 10)
    sales = [sell(admin, sku) for _ in range(4)]
    expected = recorded_movements(server.store_url, start)
    positions = [positions_of(expected, sale)[0] for sale in sales]

    with server.client() as client, stream_lines(client, params={"after": start}) as lines:
        first = movement_events(lines, 3)
    assert [int(m["id"]) for m in first] == [row["position"] for row in expected[:3]]
    for message in first:
        assert message["data"]["position"] == int(message["id"])
        assert keys(message["data"]["movements"]) == [
            (row["position"], row["seq"]) for row in expected
            if row["position"] == int(message["id"])]

    # Reconnecting as an EventSource does: the same URL, with Last-Event-ID, which wins.
    with server.client() as client, stream_lines(
            client, params={"after": start}, headers={"Last-Event-ID": first[-1]["id"]}) as lines:
        rest = movement_events(lines, 2)
        assert [int(m["id"]) for m in rest] == positions[2:]
        # Still open, it sends what is recorded from now on.
        later = sell(admin, sku)
        [event] = movement_events(lines, 1)
        assert [m["reference"] for m in event["data"]["movements"]] == [later]
        assert event["data"]["position"] == int(event["id"]) > positions[-1]


def test_who_may_read_the_feed(server: Server) -> None:
    admin = server.client()
    start = head(admin)
    sku = new("ROLE")
    receive(admin, sku, 5)
    receive(admin, sku, 5, outlet=OTHER)
    sell(admin, sku)
    sell(admin, sku, outlet=OTHER)
    everything = recorded_movements(server.store_url, start)
    here = [row for row in everything if row["outlet"] == OUTLET]
    there = [row for row in everything if row["outlet"] == OTHER]
    assert here and there

    for role in ("admin", "auditor"):
        assert keys(read_all(server.client(role), start)[0]) == keys(everything)
    assert keys(read_all(admin, start, outlet=OTHER)[0]) == keys(there)
    # Tills and stores read their own outlets' movements only, filtered for them.
    for role in ("till", "store"):
        client = server.client(role)
        assert keys(read_all(client, start)[0]) == keys(here)
        assert keys(read_all(client, start, outlet=OUTLET)[0]) == keys(here)
        is_problem(client.get("/v1/feed", params={"after": start, "outlet": OTHER}),
                   403, "forbidden")
        is_problem(client.get("/v1/feed/stream", params={"outlet": OTHER}), 403, "forbidden")
        with client.stream("GET", "/v1/feed/stream", params={"after": start}) as response:
            events = movement_events(response.iter_lines(), len({r["position"] for r in here}))
        assert [(m["position"], m["seq"]) for e in events for m in e["data"]["movements"]] \
            == keys(here)
    for client in (server.client(None), server.client("revoked")):
        is_problem(client.get("/v1/feed"), 401, "unauthenticated")
        is_problem(client.get("/v1/feed/stream"), 401, "unauthenticated")

    # Bounds: the limit, the wait, and a cursor no page was ever answered with.
    for params in ({"limit": 0}, {"limit": 1001}, {"wait": 31}, {"after": -1},
                   {"after": head(admin) + 1000}):
        is_problem(admin.get("/v1/feed", params=params), 422, "invalid_input")
    is_problem(admin.get("/v1/feed/stream", headers={"Last-Event-ID": "x1"}),
               422, "invalid_input")


# --------------------------------------------------------------------------- the horizon


@pytest.fixture(scope="module")
def postgres_server() -> Iterator[Server]:
    with fresh_database() as url, running_server(url, webhooks=False) as started:
        yield started


@pytest.mark.postgres
def test_the_feed_never_passes_an_append_still_in_flight(postgres_server: Server) -> None:
    """An append holds its position while a later one commits: the feed stops below it,
    and once it commits the consumer gets both, in position order, each once."""
    server = postgres_server
    admin = server.client()
    sku = new("HELD")
    receive(admin, sku, 5)
    cursor = read_all(admin, 0)[1]
    with Ledger.open(server.store_url) as ledger, \
            psycopg.connect(server.store_url, autocommit=True) as connection:
        item = StockItem.open(OUTLET, new("HELD-ITEM"))
        context = MovementContext(datetime.now(UTC), "holder", "held", "held:receipt")
        item.receive(BatchIdentity(batch_id="H1", quantity=7), context)
        events = [ledger.application.mapper.to_stored_event(e) for e in item.collect_events()]
        with connection.transaction():
            held = append_in(connection, ledger.application, events)
            sale = new("S")  # commits above the held append's positions
            sold = ok(admin.post("/v1/sales", json={
                "outlet": OUTLET, "sale_id": sale, "lines": [{"sku": sku, "quantity": 1}]}))
            assert sold["position"] > max(held)
            stopped = page(admin, cursor, wait=1)
            assert stopped["movements"] == [] and stopped["next"] < min(held)
            assert stopped["position"] < min(held)
            waiting: list[dict[str, Any]] = []
            poller = threading.Thread(
                target=lambda: waiting.append(page(server.client(), cursor, wait=20)))
            poller.start()
            time.sleep(0.5)
            assert not waiting  # still waiting for the held append
        poller.join()
    got = waiting[0]["movements"] + read_all(admin, waiting[0]["next"])[0]
    assert [(row["actor"], row["reference"]) for row in got] == [
        ("holder", "held"), ("admin-1", sale)]
    assert got[0]["position"] in held and max(held) < got[1]["position"] <= sold["position"]
