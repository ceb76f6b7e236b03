"""Sales per second from spawned client processes, on distinct SKUs and on one hot SKU.

Each client opens its own connection (CRUD) or its own `Ledger` and makes one warm-up sale
before the common start; then it sells one unit per sale until the deadline, and reports its
sales, each sale's latency, its refusals, its conflict retries (those of the timed sales
only) and its peak RSS. After each run the stock decrease is checked against the units the
clients were told were sold: no oversell, no lost sale.

`run_fresh` runs one case on a database of its own: created, seeded with the case's stock
items only, vacuumed and analysed, then a `CHECKPOINT` and a pause, so that no case pays for
the dirty pages or the autovacuum of the one before it, then dropped.
"""

from __future__ import annotations

import os
import re
import time
import uuid
from collections.abc import Callable
from datetime import date
from typing import Any
from urllib.parse import urlparse

import psycopg

from benchmarks import crud_variants
from benchmarks import scenarios as s
from benchmarks.database import throwaway_database
from benchmarks.machine import peak_rss_mib
from benchmarks.stats import Figure
from benchmarks.waits import WaitSampler
from benchmarks.workers import ObserveFn, run_parallel

CASES = ("distinct", "hot")
LINGER_SECONDS = 0.5
"""Each client keeps its connection this long after the deadline, so that an observer
(`waits.WaitSampler`) reads every backend's CPU before any has exited (a backend that has
exited takes its CPU time with it)."""


def _prepare_ledger(index: int, args: Any) -> dict[str, Any]:
    """Import, connect and warm the caches with one sale, before the clock starts."""
    from ledger import Ledger

    url, sku, tag = args[:3]
    ledger = Ledger.open(url)
    ledger.sell(outlet=s.OUTLET, sale_id=f"{tag}-{index}-warm", lines=[(sku, 1)])
    return {"ledger": ledger, "sku": sku, "tag": tag, "retries_before": ledger.conflict_retries}


def sell_until(index: int, deadline: float, sell: Callable[[int], object]) -> dict[str, Any]:
    """Call `sell(n)` for the n-th sale until the deadline; count sales, failures by kind,
    each sale's milliseconds and the client's CPU time."""
    sold = failed = 0
    errors: dict[str, int] = {}
    latencies: list[float] = []
    clock = time.perf_counter
    began, cpu = clock(), time.process_time()
    now = began
    while now < deadline:
        try:
            sell(sold + failed)
            sold += 1
        except Exception as error:
            failed += 1
            kind = _error_kind(error)
            errors[kind] = errors.get(kind, 0) + 1
        then, now = now, clock()
        latencies.append((now - then) * 1000.0)
    return {"sold": sold, "failed": failed, "errors": errors, "latencies_ms": latencies,
            "seconds": clock() - began, "cpu": time.process_time() - cpu}


def ledger_sale(index: int, state: dict[str, Any]) -> Callable[[int], object]:
    ledger, sku, tag = state["ledger"], state["sku"], state["tag"]
    return lambda n: ledger.sell(outlet=s.OUTLET, sale_id=f"{tag}-{index}-{n}",
                                 lines=[(sku, 1)])


def crud_sale(index: int, state: dict[str, Any]) -> Callable[[int], object]:
    conn, sku, tag, sell = state["conn"], state["sku"], state["tag"], state["sell"]
    return lambda n: sell(conn, s.OUTLET, sku, 1, f"{tag}-{index}-{n}")


def _ledger_client(index: int, state: dict[str, Any], start: float,
                   deadline: float) -> dict[str, Any]:
    try:
        outcome = sell_until(index, deadline, ledger_sale(index, state))
        retries = state["ledger"].conflict_retries - state["retries_before"]
        _linger(deadline)
    finally:
        state["ledger"].close()
    return {**outcome, "warm": 1, "retries": retries, "rss_mib": peak_rss_mib()}


def _prepare_crud(index: int, args: Any) -> dict[str, Any]:
    url, sku, tag = args[:3]
    variant = crud_variants.variant(args[3] if len(args) > 3 else "baseline")
    conn = psycopg.connect(url, autocommit=True)
    variant.sell(conn, s.OUTLET, sku, 1, f"{tag}-{index}-warm")
    return {"conn": conn, "sku": sku, "tag": tag, "sell": variant.sell}


def _crud_client(index: int, state: dict[str, Any], start: float,
                 deadline: float) -> dict[str, Any]:
    with state["conn"]:
        outcome = sell_until(index, deadline, crud_sale(index, state))
        _linger(deadline)
    # Row locks make a contended sale wait, never retry.
    return {**outcome, "warm": 1, "retries": 0, "rss_mib": peak_rss_mib()}


def _linger(deadline: float) -> None:
    time.sleep(max(0.0, deadline + LINGER_SECONDS - time.perf_counter()))


def _ledger_available(url: str, skus: list[str]) -> int:
    from ledger import Ledger

    with Ledger.open(url) as ledger:
        return sum(ledger.stock_item(s.OUTLET, sku).available(date.today()) for sku in skus)


def _crud_variant(system: str) -> str:
    """`crud` is the suite's baseline; `crud:NAME` one of `crud_variants.VARIANTS`."""
    return system.partition(":")[2] or "baseline"


def skus_of(hot: bool, clients: int) -> list[str]:
    """Each client's SKU: all the same one when `hot`, else one each."""
    return [s.SKU_HOT] * clients if hot else [s.distinct_sku(i) for i in range(clients)]


def run(system: str, url: str, hot: bool, clients: int, seconds: float,
        observe: ObserveFn | None = None) -> dict[str, Any]:
    """One timed run on a seeded database; returns the rate, the latencies (every sale's, and
    their p50 and p99), the integrity check and the load average at the start. `system` is
    `ledger`, `crud` or `crud:VARIANT`."""
    skus = skus_of(hot, clients)
    distinct = sorted(set(skus))
    tag = f"{system.replace(':', '-')}-{'hot' if hot else 'dist'}-{uuid.uuid4().hex[:6]}"
    if system == "ledger":
        read: Callable[[str, list[str]], int] = _ledger_available
        prepare, client = _prepare_ledger, _ledger_client
        args: list[tuple[str, ...]] = [(url, sku, tag) for sku in skus]
    else:
        name = _crud_variant(system)
        available = crud_variants.variant(name).available

        def read(url: str, skus: list[str]) -> int:
            with psycopg.connect(url, autocommit=True) as conn:
                return sum(available(conn, s.OUTLET, sku) for sku in skus)

        prepare, client = _prepare_crud, _crud_client
        args = [(url, sku, tag, name) for sku in skus]
    before = read(url, distinct)
    load = os.getloadavg()
    outcomes = run_parallel(prepare, client, args, seconds, observe)
    after = read(url, distinct)
    sold = sum(o["sold"] for o in outcomes)
    warm = sum(o["warm"] for o in outcomes)
    elapsed = max(o["seconds"] for o in outcomes)
    latencies = Figure("sale", "ms", tuple(x for o in outcomes for x in o["latencies_ms"]))
    return {
        "rate": sold / elapsed,
        "sold": sold + warm,
        "failed": sum(o["failed"] for o in outcomes),
        "retries": sum(o["retries"] for o in outcomes),
        "stock_decrease": before - after,
        "consistent": before - after == sold + warm,
        "errors": merge([o["errors"] for o in outcomes]),
        "rss_mib": max(o["rss_mib"] for o in outcomes),
        "p50_ms": latencies.median if latencies.n else 0.0,
        "p99_ms": latencies.p99 if latencies.n else 0.0,
        "client_cpu_seconds": sum(o["cpu"] for o in outcomes),
        "load_average": load,
        "latencies_ms": latencies.samples,
    }


def seed_ledger(url: str, clients: int, batches: int = s.THROUGHPUT_BATCHES,
                skus: list[str] | None = None) -> None:
    """`batches` live batches for each of `skus` (default: the hot SKU and every client's)."""
    from benchmarks.ledger_seed import seed_batches
    from ledger import Ledger

    with Ledger.open(url) as ledger:
        for sku in skus or _all_skus(clients):
            seed_batches(ledger, s.OUTLET, sku, batches, s.BIG, s.first_expiry())


def seed_crud(url: str, clients: int, batches: int = s.THROUGHPUT_BATCHES,
              skus: list[str] | None = None, variant: str = "baseline") -> None:
    """`batches` live batches for each of `skus` (default: the hot SKU and every client's)."""
    seed = crud_variants.variant(variant).seed_batches
    with psycopg.connect(url, autocommit=True) as conn:
        for sku in skus or _all_skus(clients):
            seed(conn, s.OUTLET, sku, batches, s.BIG, s.first_expiry())


def _all_skus(clients: int) -> list[str]:
    return [s.SKU_HOT, *(s.distinct_sku(i) for i in range(clients))]


def settle(admin_url: str, seconds: float) -> None:
    """Write every dirty page out and let the server go quiet before a case."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute("CHECKPOINT")
    time.sleep(seconds)


def run_fresh(admin_url: str, system: str, case: str, clients: int, seconds: float, *,
              batches: int = s.THROUGHPUT_BATCHES, settle_seconds: float = s.SETTLE_SECONDS,
              sample_waits: bool = False) -> dict[str, Any]:
    """One case (`distinct` or `hot`) of `system` on a fresh database, after a checkpoint and
    a pause; with `sample_waits`, its `waits.WaitSampler` result under `waits`."""
    if case not in CASES:
        raise ValueError(f"case must be one of {CASES}, not {case!r}")
    hot = case == "hot"
    skus = sorted(set(skus_of(hot, clients)))
    label = "ledger" if system == "ledger" else "crud"
    with throwaway_database(admin_url, label) as url:
        if system == "ledger":
            from ledger import Ledger

            Ledger.open(url, create_tables=True).close()
            seed_ledger(url, clients, batches, skus)
        else:
            name = _crud_variant(system)
            crud_variants.variant(name).create_schema(url)
            seed_crud(url, clients, batches, skus, name)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE")
        settle(admin_url, settle_seconds)
        sampler = WaitSampler(admin_url, urlparse(url).path.lstrip("/")) if sample_waits else None
        result = run(system, url, hot, clients, seconds, sampler)
        if sampler is not None:
            result["waits"] = sampler.result
        return result


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
