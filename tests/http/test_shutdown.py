"""Graceful shutdown: on SIGTERM the server finishes what it accepted; every sale it answered
is recorded, and nothing is half-recorded (the chain and the read models verify)."""

from __future__ import annotations

import signal
import threading
import time

import httpx

from ledger.app import audit
from ledger.app.service import Ledger
from tests.http.server import OUTLET, running_server


def test_sigterm_lets_requests_in_flight_finish(store_url: str) -> None:
    answered: list[str] = []
    broken: list[str] = []
    with running_server(store_url) as server:
        admin = server.client()
        assert admin.post("/v1/receipts", json={
            "outlet": OUTLET, "sku": "A", "batch_id": "B", "quantity": 10_000}).status_code == 200
        started = threading.Event()

        def till(n: int) -> None:
            with server.client("till") as client:
                for i in range(10_000):
                    sale_id = f"S-{n}-{i}"
                    try:
                        response = client.post("/v1/sales", json={
                            "outlet": OUTLET, "sale_id": sale_id,
                            "lines": [{"sku": "A", "quantity": 1}]})
                    except httpx.TransportError:
                        return  # refused or closed between requests: the server has stopped
                    started.set()
                    if response.status_code == 200:
                        answered.append(sale_id)
                    else:
                        broken.append(f"{sale_id}: {response.status_code} {response.text}")

        threads = [threading.Thread(target=till, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        assert started.wait(30)
        time.sleep(0.5)
        server.process.send_signal(signal.SIGTERM)
        # uvicorn re-raises the signal once it has shut down gracefully.
        assert server.process.wait(timeout=40) in (0, -signal.SIGTERM)
        for thread in threads:
            thread.join(timeout=30)
    assert broken == [] and answered
    with Ledger.open(store_url) as ledger:
        assert audit.verify_chain(ledger.application).findings == []
        # Every sale recorded was answered, and every one answered is recorded.
        assert ledger.stock_level(OUTLET, "A").on_hand == 10_000 - len(answered)


def test_sigterm_ends_event_streams_and_long_polls_at_once(store_url: str) -> None:
    """Without being told, a stream (minutes long) and a long-poll (30 s) would hold a
    graceful stop until its timeout; told, they answer what they have and end."""
    with running_server(store_url) as server:
        cursor = server.client().get("/v1/health").json()["head"]
        polled: list[httpx.Response] = []
        streamed: list[str] = []
        started = threading.Event()

        def poll() -> None:
            polled.append(server.client().get("/v1/feed", params={"after": cursor,
                                                                  "wait": 30}))

        def stream() -> None:
            with server.client().stream("GET", "/v1/feed/stream",
                                        params={"after": cursor}) as response:
                for line in response.iter_lines():
                    streamed.append(line)
                    started.set()

        threads = [threading.Thread(target=poll), threading.Thread(target=stream)]
        for thread in threads:
            thread.start()
        assert started.wait(30)
        time.sleep(0.5)  # the long-poll is waiting by now
        stopping = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=40) in (0, -signal.SIGTERM)
        for thread in threads:
            thread.join(timeout=10)
        took = time.monotonic() - stopping
    assert took < 10, took
    assert [r.status_code for r in polled] == [200]
    assert polled[0].json()["movements"] == [] and polled[0].json()["next"] == cursor
    assert streamed[0] == "retry: 1000"
