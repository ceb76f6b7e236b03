"""One run of the HTTP benchmark: the service against the direct Python API and the CRUD
baseline, case by case in turns, each case checked against the journal."""

from __future__ import annotations

import os
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from typing import Any

import psycopg
from eventsourcing.utils import get_topic

from benchmarks import crud_baseline as crud
from benchmarks import machine, throughput
from benchmarks import scenarios as s
from benchmarks.database import server_settings, throwaway_database
from benchmarks.http import wrk
from benchmarks.http.server import MemorySampler, Server, serving
from benchmarks.stats import Figure, latency
from benchmarks.targets import Check
from cli.context import set_up_store
from cli.http.tokens import TokenStore
from ledger import Ledger
from ledger.domain import identity
from ledger.events import SaleRecorded
from projections.runner import ReadModels

SETTLE_SECONDS = 1.0
"""After the CHECKPOINT between cases, so that one case's writes are not flushed in the next."""
QUIET_SECONDS = 1.0
"""How long the store must record nothing before a case's requests count as all answered."""


@dataclass(frozen=True)
class Sizes:
    """How much one run does: `--quick` takes about three minutes, a full run about ten."""

    seconds: float
    """Each throughput case."""
    repeats: int
    latency_sales: int
    """Direct one-client sales per latency round."""
    latency_seconds: float
    """The one-connection HTTP run per latency round."""
    latency_rounds: int
    memory_seconds: float
    clients: int = 8


QUICK = Sizes(seconds=5.0, repeats=1, latency_sales=500, latency_seconds=5.0,
              latency_rounds=1, memory_seconds=20.0)
FULL = Sizes(seconds=10.0, repeats=3, latency_sales=2_000, latency_seconds=10.0,
             latency_rounds=2, memory_seconds=60.0)


def _progress(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def settle(admin_url: str) -> None:
    """Let the server write out what the last case dirtied before the next case starts."""
    with psycopg.connect(admin_url, autocommit=True) as connection:
        connection.execute("CHECKPOINT")
    time.sleep(SETTLE_SECONDS)


def _available(ledger: Ledger, skus: list[str]) -> int:
    today = date.today()
    return sum(ledger.stock_item(s.OUTLET, sku).available(today) for sku in skus)


def _wait_until_recorded(ledger: Ledger, timeout: float = 120.0) -> None:
    """Wait until the server has finished the requests wrk sent last: when wrk stops it
    leaves one request per connection in flight, which the server still records."""
    deadline = time.monotonic() + timeout
    head = ledger.head_position()
    while time.monotonic() < deadline:
        time.sleep(QUIET_SECONDS)
        now = ledger.head_position()
        if now == head:
            return
        head = now
    raise RuntimeError(f"the store kept recording for {timeout:.0f} s after wrk stopped")


def _journal_sold(ledger: Ledger, tag: str) -> tuple[int, int]:
    """Sales and units sold that the movement journal holds under the case's sale ids."""
    models = ReadModels(ledger.application)
    models.catch_up(workers=1)
    view = models.views("journal")["journal"]
    rows = models.query(models.dialect.sql(
        f"SELECT COUNT(DISTINCT reference) AS sales, COALESCE(SUM(ABS(quantity)), 0) AS units "
        f"FROM {view} WHERE kind = 'sold' AND reference LIKE %s"), [f"{tag}-%"])
    return int(rows[0]["sales"]), int(rows[0]["units"])


def _sales_per_transaction(ledger: Ledger, after: int, upto: int) -> dict[str, float]:
    """How many sales each transaction between two positions recorded (rows of one
    transaction share their `xmin`): the batching, seen from the store."""
    recorder: Any = ledger.application.recorder
    table = f'"{recorder.datastore.schema}"."{recorder.events_table_name}"'
    with recorder.datastore.transaction(commit=False) as cursor:
        cursor.execute(
            f"SELECT count(*) AS sales FROM {table} WHERE notification_id > %s "
            "AND notification_id <= %s AND topic = %s GROUP BY xmin::text",
            (after, upto, get_topic(SaleRecorded)))
        sizes = [int(row["sales"]) for row in cursor.fetchall()]
    if not sizes:
        return {"transactions": 0, "mean": 0.0, "max": 0, "alone": 0.0}
    return {"transactions": len(sizes), "mean": sum(sizes) / len(sizes), "max": max(sizes),
            "alone": sum(1 for n in sizes if n == 1) / len(sizes)}


def http_case(server: Server, ledger: Ledger, token: str, hot: bool, connections: int,
              seconds: float, label: str) -> dict[str, Any]:
    """One wrk run of one-unit sales, then the check: the stock decrease, the journal's
    sales and units, and the 2xx answers (plus the sales recorded whose answer wrk never
    read, the last in flight when it stopped) are one and the same number. A sale that was
    refused (4xx) or failed is never counted as sold."""
    tag = f"{label}-{uuid.uuid4().hex[:6]}"
    skus = [s.SKU_HOT] if hot else [s.distinct_sku(i) for i in range(connections)]
    before = _available(ledger, skus)
    first = ledger.head_position()
    run = wrk.run(server.base_url, token, tag, s.OUTLET, s.SKU_HOT if hot else "SKU-CLIENT-",
                  "hot" if hot else "distinct", connections, seconds)
    _wait_until_recorded(ledger)
    recorded_unanswered = [sale for sale in run.unanswered
                           if ledger.application.load(identity.sale_id(sale)) is not None]
    after = _available(ledger, skus)
    journal_sales, journal_units = _journal_sold(ledger, tag)
    grouped = _sales_per_transaction(ledger, first, ledger.head_position())
    sold = run.sold + len(recorded_unanswered)
    consistent = (before - after == sold == journal_sales == journal_units
                  and run.replayed == 0 and after >= 0)
    return {
        "rate": run.rate, "sold": run.sold, "seconds": run.seconds, "sent": run.sent,
        "p50_ms": run.p(50), "p90_ms": run.p(90), "p99_ms": run.p(99),
        "p999_ms": run.p(99.9), "max_ms": run.p(100),
        "non_2xx": run.not_ok, "socket_errors": {k: v for k, v in run.errors.items()
                                                 if k != "status" and v},
        "unanswered": len(run.unanswered), "recorded_unanswered": len(recorded_unanswered),
        "stock_decrease": before - after, "journal_sales": journal_sales,
        "journal_units": journal_units, "consistent": consistent,
        "sales_per_transaction": grouped,
    }


def _summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Repeats of one case: the median rate, the latency of the median-rate run, sums."""
    by_rate = sorted(runs, key=lambda r: r["rate"])
    middle = by_rate[len(by_rate) // 2]
    summary = {key: middle[key] for key in middle
               if key.endswith("_ms") or key == "sales_per_transaction"}
    summary.update({
        "rate": statistics.median(r["rate"] for r in runs),
        "rates": [r["rate"] for r in runs],
        "sold": sum(r["sold"] for r in runs),
        "failed": sum(r.get("failed", 0) + sum(r.get("non_2xx", {}).values()) for r in runs),
        "consistent": all(r["consistent"] for r in runs),
        "runs": runs,
    })
    return summary


def _throughput(admin_url: str, url: str, crud_url: str, server: Server, ledger: Ledger,
                token: str, sizes: Sizes) -> dict[str, dict[str, Any]]:
    """Every case of every repeat, taking turns, with a CHECKPOINT before each."""
    by_case: dict[str, list[dict[str, Any]]] = {}
    n = sizes.clients
    for repeat in range(sizes.repeats):
        cases: list[tuple[str, Callable[[], dict[str, Any]]]] = [
            ("direct.distinct", lambda: throughput.run("ledger", url, False, n, sizes.seconds)),
            ("http.distinct", lambda: http_case(server, ledger, token, False, n,
                                                sizes.seconds, "distinct")),
            ("crud.hot", lambda: throughput.run("crud", crud_url, True, n, sizes.seconds)),
            ("direct.hot", lambda: throughput.run("ledger", url, True, n, sizes.seconds)),
            ("http.hot", lambda: http_case(server, ledger, token, True, n, sizes.seconds,
                                           "hot")),
        ]
        for label, case in cases:
            settle(admin_url)
            _progress(f"{label} ({repeat + 1}/{sizes.repeats})")
            by_case.setdefault(label, []).append(case())
    return {label: _summary(runs) for label, runs in by_case.items()}


def _latency(admin_url: str, server: Server, ledger: Ledger, token: str,
             sizes: Sizes) -> dict[str, Any]:
    """One client: the direct call's p50 in this process, then one wrk connection's, in
    rounds taking turns."""
    counter = iter(range(10**9))
    sku = s.distinct_sku(0)
    direct: list[Figure] = []
    http: list[dict[str, Any]] = []
    for round_ in range(sizes.latency_rounds):
        settle(admin_url)
        _progress(f"one client: direct call ({round_ + 1}/{sizes.latency_rounds})")
        direct.append(latency(
            "direct sale, one client", lambda: ledger.sell(
                outlet=s.OUTLET, sale_id=f"lat-{next(counter)}", lines=[(sku, 1)]),
            sizes.latency_sales))
        settle(admin_url)
        _progress(f"one client: one HTTP connection ({round_ + 1}/{sizes.latency_rounds})")
        http.append(http_case(server, ledger, token, False, 1, sizes.latency_seconds,
                              "one"))
    direct_p50 = statistics.median(f.median for f in direct)
    http_p50 = statistics.median(h["p50_ms"] for h in http)
    return {"direct_p50_ms": direct_p50, "direct_p99_ms": statistics.median(
                f.p99 for f in direct),
            "http_p50_ms": http_p50, "http_p99_ms": statistics.median(
                h["p99_ms"] for h in http),
            "difference_ms": http_p50 - direct_p50, "http_runs": http,
            "direct_samples": sum(f.n for f in direct),
            "consistent": all(h["consistent"] for h in http)}


def _memory(admin_url: str, server: Server, ledger: Ledger, token: str,
            sizes: Sizes) -> dict[str, Any]:
    settle(admin_url)
    _progress(f"server memory over a {sizes.memory_seconds:.0f} s run (distinct SKUs)")
    sampler = MemorySampler(server)
    with sampler.sampling():
        case = http_case(server, ledger, token, False, sizes.clients, sizes.memory_seconds,
                         "memory")
    values = [rss for _, rss in sampler.samples]
    return {"start_mib": values[0], "end_mib": values[-1], "max_mib": max(values),
            "samples": len(values), "seconds": sizes.memory_seconds, "case": case}


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def run(admin_url: str, quick: bool, workers: int) -> dict[str, Any]:
    began = time.perf_counter()
    sizes = QUICK if quick else FULL
    meta: dict[str, Any] = {
        "mode": "quick" if quick else "full", "machine": machine.describe(),
        "postgres": server_settings(admin_url), "sizes": vars(sizes), "workers": workers,
        "load average at start": load_average()}
    with throwaway_database(admin_url, "crud") as crud_url, \
            throwaway_database(admin_url, "http") as url:
        _progress("seed: CRUD baseline and stockledger stock")
        crud.create_schema(crud_url)
        throughput.seed_crud(crud_url, sizes.clients)
        set_up_store(url)
        throughput.seed_ledger(url, sizes.clients)
        with Ledger.open(url) as ledger:
            tokens = TokenStore(ledger.application)
            tokens.create_table()
            token = tokens.create("bench-till", "till", [s.OUTLET])
            _progress(f"ledger serve --workers {workers}")
            with serving(url, workers) as server:
                runs = _throughput(admin_url, url, crud_url, server, ledger, token, sizes)
                one_client = _latency(admin_url, server, ledger, token, sizes)
                memory = _memory(admin_url, server, ledger, token, sizes)
    meta["load average at end"] = load_average()
    meta["seconds"] = time.perf_counter() - began
    return {"meta": meta, "runs": runs, "one_client": one_client, "memory": memory,
            "checks": checks(runs, one_client, memory)}


HTTP_SHARE_OF_DIRECT = 0.60
ONE_CLIENT_MS = 0.5
HOT_OVER_CRUD = 1.5
HOT_P99_MS = 15.0
MEMORY_GROWTH = 0.10


def checks(runs: dict[str, dict[str, Any]], one_client: dict[str, Any],
           memory: dict[str, Any]) -> list[Check]:
    found: list[Check] = []
    for case in ("distinct", "hot"):
        http, direct = runs[f"http.{case}"]["rate"], runs[f"direct.{case}"]["rate"]
        share = http / direct if direct else 0.0
        found.append(Check(
            f"HTTP sales/s, 8 connections, {case} SKUs", f">= {HTTP_SHARE_OF_DIRECT:.0%} of "
            "the direct API's 8 processes", f"{http:,.0f} vs {direct:,.0f} = {share:.0%}",
            share >= HTTP_SHARE_OF_DIRECT))
    difference = one_client["difference_ms"]
    found.append(Check(
        "one-client sale latency, HTTP against the direct call (p50)",
        f"within {ONE_CLIENT_MS} ms", f"{one_client['http_p50_ms']:.3f} vs "
        f"{one_client['direct_p50_ms']:.3f} ms = {difference:+.3f} ms",
        difference <= ONE_CLIENT_MS))
    start, end, peak = memory["start_mib"], memory["end_mib"], memory["max_mib"]
    found.append(Check(
        f"server memory over a {memory['seconds']:.0f} s run", "flat: end and max within "
        f"{MEMORY_GROWTH:.0%} of start", f"{start:.0f} -> {end:.0f} MiB, max {peak:.0f} MiB",
        end <= start * (1 + MEMORY_GROWTH) and peak <= start * (1 + MEMORY_GROWTH)))
    hot, crud_hot = runs["http.hot"], runs["crud.hot"]["rate"]
    ratio = hot["rate"] / crud_hot if crud_hot else 0.0
    found.append(Check(
        "hot SKU: HTTP (batched) against CRUD's direct 8 clients",
        f">= {HOT_OVER_CRUD}x", f"{hot['rate']:,.0f} vs {crud_hot:,.0f} = {ratio:.2f}x",
        ratio >= HOT_OVER_CRUD))
    found.append(Check("hot SKU: HTTP p99", f"<= {HOT_P99_MS:.0f} ms",
                       f"{hot['p99_ms']:.1f} ms", hot["p99_ms"] <= HOT_P99_MS))
    cases: dict[str, dict[str, Any]] = {
        **runs, "one client": {"consistent": one_client["consistent"], "failed": sum(
            sum(r["non_2xx"].values()) for r in one_client["http_runs"])},
        "memory run": {"consistent": memory["case"]["consistent"],
                       "failed": sum(memory["case"]["non_2xx"].values())}}
    for label, outcome in cases.items():
        found.append(Check(
            f"every sale accounted for: {label}", "units sold == stock decrease (== journal "
            "for HTTP), no failed sale", f"consistent {outcome['consistent']}, failed "
            f"{outcome['failed']}", bool(outcome["consistent"]) and outcome["failed"] == 0))
    return found
