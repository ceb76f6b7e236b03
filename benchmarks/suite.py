"""One run of the whole suite: seed, measure every path, check the targets."""

from __future__ import annotations

import os
import statistics
import sys
import time
from typing import Any

from benchmarks import (
    append_ceiling,
    crud_workloads,
    ledger_workloads,
    machine,
    projections_bench,
    raw_ceiling,
    throughput,
)
from benchmarks import replay as replay_bench
from benchmarks import scenarios as s
from benchmarks.database import server_settings, throwaway_database
from benchmarks.stats import Figure
from benchmarks.targets import Check, check, throughput_checks
from ledger import Ledger

SYSTEMS = ("crud", "ledger")


def _progress(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


THROUGHPUT_CASES = (("distinct", "distinct", None), ("hot", "hot", None),
                    ("single", "distinct", 1))
"""Each throughput case: its label, `throughput.run_fresh`'s case and its clients (None: the
run's `Sizes.clients`)."""
LABELS = [label for label, _, _ in THROUGHPUT_CASES]
CLIENTS = {label: clients for label, _, clients in THROUGHPUT_CASES}


def _throughput(admin_url: str, sizes: s.Sizes, sample_waits: bool = False
                ) -> dict[str, dict[str, Any]]:
    """Every system's throughput cases, taking turns: within a repetition the two systems
    run each case one after the other, and which goes first alternates from case to case and
    from repetition to repetition, so that the machine's drift from minute to minute falls
    on both alike. Every case runs on a fresh database after a checkpoint and a pause
    (`throughput.run_fresh`)."""
    by_label: dict[str, list[dict[str, Any]]] = {}
    for repeat in range(sizes.throughput_repeats):
        for index, (label, case, clients) in enumerate(THROUGHPUT_CASES):
            systems = SYSTEMS if (repeat + index) % 2 == 0 else SYSTEMS[::-1]
            for system in systems:
                key = f"{system}.{label}"
                _progress(f"throughput {key} ({repeat + 1}/{sizes.throughput_repeats})")
                by_label.setdefault(key, []).append(throughput.run_fresh(
                    admin_url, system, case, clients or sizes.clients,
                    sizes.throughput_seconds, settle_seconds=sizes.settle_seconds,
                    sample_waits=sample_waits))
    results: dict[str, dict[str, Any]] = {}
    for key, runs in sorted(by_label.items(), key=lambda kv: _label_order(kv[0])):
        label = key.split(".", 1)[1]
        clients = CLIENTS[label] or sizes.clients
        latencies = Figure("sale", "ms", tuple(x for r in runs for x in r.pop("latencies_ms")))
        results[key] = {
            "clients": clients,
            "rate": statistics.median(r["rate"] for r in runs),
            "rates": [r["rate"] for r in runs],
            "sold": sum(r["sold"] for r in runs),
            "failed": sum(r["failed"] for r in runs),
            "retries": sum(r["retries"] for r in runs),
            "retries_per_run": [r["retries"] for r in runs],
            "stock_decrease": sum(r["stock_decrease"] for r in runs),
            "consistent": all(r["consistent"] for r in runs),
            "errors": throughput.merge([r["errors"] for r in runs]),
            "rss_mib": max(r["rss_mib"] for r in runs),
            "p50_ms": latencies.median,
            "p99_ms": latencies.p99,
            "p99_ms_per_run": [r["p99_ms"] for r in runs],
            "seconds_per_run": sizes.throughput_seconds,
            "load_average_per_run": [r["load_average"] for r in runs],
            "waits": [r["waits"] for r in runs if "waits" in r],
        }
    return results


def _label_order(key: str) -> tuple[int, int]:
    system, label = key.split(".", 1)
    return LABELS.index(label), SYSTEMS.index(system)


def _crud(url: str, sizes: s.Sizes) -> dict[str, Figure]:
    _progress("CRUD baseline: seed")
    crud_workloads.seed(url, sizes)
    _progress("CRUD baseline: sale latency")
    figures = crud_workloads.sale_latencies(url, sizes)
    figures.update(crud_workloads.read_latencies(url, sizes))
    return figures


def _ledger(url: str, sizes: s.Sizes) -> tuple[dict[str, Figure], dict[str, Any]]:
    extras: dict[str, Any] = {}
    with Ledger.open(url, create_tables=True) as ledger:
        _progress(f"stockledger: seed ({sizes.history_events:,}-event history)")
        seeded = ledger_workloads.seed(ledger, sizes)
        extras["seed seconds"] = {k: round(v, 2) for k, v in seeded.items()}
        _progress("stockledger: sale latency")
        figures = ledger_workloads.sale_latencies(ledger, sizes)
        _progress("stockledger: projections")
        projections = projections_bench.measure(url)
        extras["projections"] = projections
        _progress("stockledger: reads")
        figures.update(ledger_workloads.read_latencies(ledger, sizes))
        extras["head position (events in store)"] = ledger.head_position()
    _progress("stockledger: cold replay in fresh processes")
    replays = {
        "small": replay_bench.measure(url, s.SKU_SMALL_HISTORY),
        "many batches": replay_bench.measure(url, s.SKU_MANY),
        "big": replay_bench.measure(url, s.SKU_HISTORY),
    }
    extras["replays"] = replays
    return figures, extras


def run(admin_url: str, quick: bool, *, sample_waits: bool = False,
        throughput_only: bool = False) -> dict[str, Any]:
    """The whole suite (or its throughput cases only); `sample_waits` samples the server's
    wait events and the processes' CPU during every throughput case (`waits`)."""
    began = time.perf_counter()
    sizes = s.QUICK if quick else s.FULL
    meta: dict[str, Any] = {"mode": "quick" if quick else "full", "machine": machine.describe(),
                            "postgres": server_settings(admin_url), "sizes": vars(sizes),
                            "load_average_at_start": os.getloadavg()}
    if throughput_only:
        runs = _throughput(admin_url, sizes, sample_waits)
        meta["seconds"] = time.perf_counter() - began
        return {"meta": meta, "figures": {}, "raw": {}, "runs": runs, "extras": {},
                "checks": throughput_checks(runs)}
    with throwaway_database(admin_url, "raw") as url:
        _progress("raw psycopg ceiling")
        raw_list, raw_rss = raw_ceiling.measure(url, sizes.raw_seconds, sizes.raw_repeats)
    raw = dict(zip(("raw.insert.1", "raw.insert.8", "raw.copy.100"), raw_list, strict=True))
    with throwaway_database(admin_url, "append") as url:
        _progress("stockledger append statement alone")
        append_list = append_ceiling.measure(url, sizes.raw_seconds, sizes.raw_repeats)
    raw.update(zip(("append.1", "append.8"), append_list, strict=True))
    runs = _throughput(admin_url, sizes, sample_waits)
    with throwaway_database(admin_url, "crud") as crud_url:
        crud_figures = _crud(crud_url, sizes)
    with throwaway_database(admin_url, "ledger") as url:
        ledger_figures, extras = _ledger(url, sizes)
    figures = {**_ordered(crud_figures, ledger_figures)}
    replays = extras["replays"]
    extras["peak RSS"] = {
        "suite (main) process": f"{machine.peak_rss_mib():.0f} MiB",
        "raw insert worker": f"{raw_rss.get('raw insert worker', 0):.0f} MiB",
        **{f"{k} client": f"{v['rss_mib']:.0f} MiB" for k, v in runs.items()},
        "projection processes, largest (after 1,000 events / after catch-up / after rebuild)": (
            f"{extras['projections']['rss_after_first_events_mib']:.0f} / "
            f"{extras['projections']['rss_after_catch_up_mib']:.0f} / "
            f"{extras['projections']['rss_after_rebuild_mib']:.0f} MiB"),
        **{f"replay process ({k}, {v['version']:,} events)": f"{v['rss_mib']:.0f} MiB"
           for k, v in replays.items()},
    }
    checks: list[Check] = check(figures, runs, extras["projections"], replays,
                                sizes.history_events)
    meta["seconds"] = time.perf_counter() - began
    return {"meta": meta, "figures": figures, "raw": raw, "runs": runs, "extras": extras,
            "checks": checks}


def _ordered(crud: dict[str, Figure], ledger: dict[str, Figure]) -> dict[str, Figure]:
    """Interleave so each stockledger figure sits next to its CRUD counterpart."""
    order = ["crud.sale.span1_of_100", "ledger.sale.span1_of_100", "crud.sale.span100",
             "ledger.sale.span100", "crud.sale.10k_batches", "ledger.sale.10k_batches",
             "ledger.sale.history", "crud.read.1_batch", "ledger.read.write_model.1_batch",
             "ledger.read.projection.1_batch", "crud.read.10k_batches",
             "ledger.read.write_model.10k_batches", "ledger.read.projection.10k_batches"]
    both = {**crud, **ledger}
    return {k: both[k] for k in order if k in both} | both
