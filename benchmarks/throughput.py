"""Sales per second from 8 spawned client processes, on distinct SKUs and on one hot SKU.

Each client opens its own connection (CRUD) or its own `Ledger` and makes one warm-up sale
before the common start; then it sells one unit per sale until
the deadline, and reports its sales, refusals, conflict retries and peak RSS. After each run the
stock decrease is checked against the units the clients were told were sold: no oversell, no
lost sale.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable
from datetime import date
from typing import Any

import psycopg

from benchmarks import crud_baseline as crud
from benchmarks import scenarios as s
from benchmarks.machine import peak_rss_mib
from benchmarks.workers import run_parallel


def _prepare_ledger(index: int, args: Any) -> dict[str, Any]:
    """Import, connect and warm the caches with one sale, before the clock starts."""
    from ledger import Ledger

    url, sku, tag = args
    ledger = Ledger.open(url)
    ledger.sell(outlet=s.OUTLET, sale_id=f"{tag}-{index}-warm", lines=[(sku, 1)])
    return {"ledger": ledger, "sku": sku, "tag": tag}


def sell_until(index: int, deadline: float, sell: Callable[[int], object]) -> dict[str, Any]:
    """Call `sell(n)` for the n-th sale until the deadline; count sales, failures by kind and
    the client's CPU time."""
    sold = failed = 0
    errors: dict[str, int] = {}
    began, cpu = time.perf_counter(), time.process_time()
    while time.perf_counter() < deadline:
        try:
            sell(sold + failed)
            sold += 1
        except Exception as error:
            failed += 1
            kind = _error_kind(error)
            errors[kind] = errors.get(kind, 0) + 1
    return {"sold": sold, "failed": failed, "errors": errors,
            "seconds": time.perf_counter() - began, "cpu": time.process_time() - cpu}


def ledger_sale(index: int, state: dict[str, Any]) -> Callable[[int], object]:
    ledger, sku, tag = state["ledger"], state["sku"], state["tag"]
    return lambda n: ledger.sell(outlet=s.OUTLET, sale_id=f"{tag}-{index}-{n}",
                                 lines=[(sku, 1)])


def crud_sale(index: int, state: dict[str, Any]) -> Callable[[int], object]:
    conn, sku, tag = state["conn"], state["sku"], state["tag"]
    return lambda n: crud.sell(conn, s.OUTLET, sku, 1, f"{tag}-{index}-{n}")


def _ledger_client(index: int, state: dict[str, Any], start: float,
                   deadline: float) -> dict[str, Any]:
    try:
        outcome = sell_until(index, deadline, ledger_sale(index, state))
        retries = state["ledger"].conflict_retries
    finally:
        state["ledger"].close()
    return {**outcome, "warm": 1, "retries": retries, "rss_mib": peak_rss_mib()}


def _prepare_crud(index: int, args: Any) -> dict[str, Any]:
    url, sku, tag = args
    conn = psycopg.connect(url, autocommit=True)
    crud.sell(conn, s.OUTLET, sku, 1, f"{tag}-{index}-warm")
    return {"conn": conn, "sku": sku, "tag": tag}


def _crud_client(index: int, state: dict[str, Any], start: float,
                 deadline: float) -> dict[str, Any]:
    with state["conn"]:
        outcome = sell_until(index, deadline, crud_sale(index, state))
    return {**outcome, "warm": 1, "retries": 0, "rss_mib": peak_rss_mib()}


def _ledger_available(url: str, skus: list[str]) -> int:
    from ledger import Ledger

    with Ledger.open(url) as ledger:
        return sum(ledger.stock_item(s.OUTLET, sku).available(date.today()) for sku in skus)


def _crud_available(url: str, skus: list[str]) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        return sum(crud.available(conn, s.OUTLET, sku) for sku in skus)


def run(system: str, url: str, hot: bool, clients: int, seconds: float) -> dict[str, Any]:
    """One timed run; returns the rate and the integrity check."""
    skus = [s.SKU_HOT] * clients if hot else [s.distinct_sku(i) for i in range(clients)]
    distinct = sorted(set(skus))
    tag = f"{system}-{'hot' if hot else 'dist'}-{uuid.uuid4().hex[:6]}"
    read = _ledger_available if system == "ledger" else _crud_available
    prepare, client = ((_prepare_ledger, _ledger_client) if system == "ledger"
                       else (_prepare_crud, _crud_client))
    before = read(url, distinct)
    outcomes = run_parallel(prepare, client, [(url, sku, tag) for sku in skus], seconds)
    after = read(url, distinct)
    sold = sum(o["sold"] for o in outcomes)
    warm = sum(o["warm"] for o in outcomes)
    elapsed = max(o["seconds"] for o in outcomes)
    return {
        "rate": sold / elapsed,
        "sold": sold + warm,
        "failed": sum(o["failed"] for o in outcomes),
        "retries": sum(o["retries"] for o in outcomes),
        "stock_decrease": before - after,
        "consistent": before - after == sold + warm,
        "errors": merge([o["errors"] for o in outcomes]),
        "rss_mib": max(o["rss_mib"] for o in outcomes),
    }


def seed_ledger(url: str, clients: int) -> None:
    from benchmarks.ledger_seed import seed_batches
    from ledger import Ledger

    with Ledger.open(url) as ledger:
        for sku in [s.SKU_HOT, *(s.distinct_sku(i) for i in range(clients))]:
            seed_batches(ledger, s.OUTLET, sku, 10, s.BIG, s.first_expiry())


def seed_crud(url: str, clients: int) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        for sku in [s.SKU_HOT, *(s.distinct_sku(i) for i in range(clients))]:
            crud.seed_batches(conn, s.OUTLET, sku, 10, s.BIG, s.first_expiry())


def merge(counts: list[dict[str, int]]) -> dict[str, int]:
    merged: dict[str, int] = {}
    for count in counts:
        for kind, n in count.items():
            merged[kind] = merged.get(kind, 0) + n
    return merged


def _error_kind(error: Exception) -> str:
    """The error's type and message with quoted ids blanked, so like errors count together."""
    message = re.sub(r"'[^']*'", "'...'", str(error))[:120]
    return f"{type(error).__name__}: {message}"
