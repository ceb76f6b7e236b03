"""The append path's own ceiling: stockledger's append statement for a sale, with no Python
deciding anything, from 1 and 8 processes.

Each process sends the one statement a warm sale sends (the stock item's event on its own
stream, the sale's and the command record's events on new streams, the outlet's version as a
read check, the stream's gate probe), prepared as the recorder prepares it, over its own
connection, as fast as the server answers.
What it reaches is what the append function (its locks, the NOTIFY) and the commit's flush
allow, whatever the client's Python costs: the distance between it and the sales/s of
the throughput runs is the client's share.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import psycopg
from eventsourcing.persistence import StoredEvent

from benchmarks import scenarios as s
from benchmarks.machine import peak_rss_mib
from benchmarks.stats import Figure
from benchmarks.workers import rate, run_parallel
from ledger import Ledger
from ledger.domain import identity
from ledger.store.postgres.recorder import ChainedPostgresRecorder
from ledger.store.postgres.values import stream_key

LINGER_SECONDS = 0.5


def _sale_shape(url: str) -> dict[str, Any]:
    """The stored events of one real sale, and the outlet it read."""
    with Ledger.open(url, create_tables=True) as ledger:
        ledger.receive(outlet=s.OUTLET, sku="CEILING", batch_id="B1", quantity=s.BIG)
        ledger.sell(outlet=s.OUTLET, sale_id="CEILING-1", lines=[("CEILING", 1)])
        recorder = ledger.application.recorder
        head = ledger.head_position()
        sale = recorder.select_notifications(head - 2, 3)
        outlet = identity.outlet_id(s.OUTLET)
        outlet_version = ledger.application.load(outlet).version  # type: ignore[union-attr]
    return {"url": url, "events": [(n.topic, n.state) for n in sale],
            "outlet": (outlet, outlet_version)}


def _connect(index: int, shape: dict[str, Any]) -> dict[str, Any]:
    """Before the clock starts: the recorder (for the statement) and this process's session."""
    ledger = Ledger.open(shape["url"])
    return {**shape, "ledger": ledger,
            "connection": psycopg.connect(shape["url"], autocommit=True)}


def _append_loop(index: int, state: dict[str, Any], start: float,
                 deadline: float) -> dict[str, Any]:
    ledger, connection = state["ledger"], state["connection"]
    with ledger, connection:
        recorder = ledger.application.recorder
        assert isinstance(recorder, ChainedPostgresRecorder)
        (item_topic, item_state), *others = state["events"]
        item, version, count = uuid.uuid4(), 0, 0
        while time.perf_counter() < deadline:
            version += 1
            events = [StoredEvent(item, version, item_topic, item_state),
                      *(StoredEvent(uuid.uuid4(), 1, topic, payload) for topic, payload in others)]
            gated = [stream_key(item)] if version > 1 else []
            recorder.append(connection, events, [state["outlet"]], gated)
            count += 1
        elapsed = time.perf_counter() - start
        # Connected a little longer, for an observer's last reading (`waits`).
        time.sleep(max(0.0, deadline + LINGER_SECONDS - time.perf_counter()))
    return {"appends": count, "seconds": elapsed, "rss_mib": peak_rss_mib()}


def sampled(url: str, duration: float, admin_url: str,
            settle_seconds: float) -> tuple[float, dict[str, Any]]:
    """Appends/s from 8 processes, after a checkpoint and a pause, with a
    `waits.WaitSampler` observing them."""
    from benchmarks.throughput import settle
    from benchmarks.waits import WaitSampler

    shape = _sale_shape(url)
    settle(admin_url, settle_seconds)
    sampler = WaitSampler(admin_url, url.rsplit("/", 1)[1])
    outcomes = run_parallel(_connect, _append_loop, [shape] * 8, duration, sampler)
    return rate(outcomes, "appends"), sampler.result


def measure(url: str, duration: float, repeats: int) -> list[Figure]:
    """Appends/s of the sale-shaped append statement from 1 and from 8 processes."""
    shape = _sale_shape(url)
    one: list[float] = []
    eight: list[float] = []
    for _ in range(repeats):
        one.append(rate(run_parallel(_connect, _append_loop, [shape], duration), "appends"))
        eight.append(rate(run_parallel(_connect, _append_loop, [shape] * 8, duration),
                          "appends"))
    return [
        Figure("stockledger append statement alone (a sale's 3 events), 1 process",
               "appends/s", tuple(one)),
        Figure("stockledger append statement alone (a sale's 3 events), 8 processes",
               "appends/s", tuple(eight)),
    ]
