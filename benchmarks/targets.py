"""The targets of issues 6 and 22, checked against figures measured in the same run."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any

from benchmarks.stats import Figure


@dataclass(frozen=True)
class Check:
    name: str
    target: str
    measured: str
    passed: bool | None  # None: could not be measured in this run

    @property
    def verdict(self) -> str:
        return "n/a" if self.passed is None else ("PASS" if self.passed else "FAIL")

    def as_json(self) -> dict[str, Any]:
        return {"target": self.target, "measured": self.measured, "verdict": self.verdict}


def _speedup(crud: Figure, ledger: Figure, need: float, name: str, target: str) -> Check:
    ratio = crud.median / ledger.median
    return Check(name, target,
                 f"{ledger.median:.3f} ms vs CRUD {crud.median:.3f} ms = {ratio:.2f}x",
                 ratio >= need)


def check(figures: dict[str, Figure], runs: dict[str, dict[str, Any]],
          projections: dict[str, Any], replays: dict[str, dict[str, Any]],
          history_events: int) -> list[Check]:
    f = figures
    checks = [
        _speedup(f["crud.sale.span1_of_100"], f["ledger.sale.span1_of_100"], 1.0,
                 "sale p50, 1-batch span", "no slower than CRUD (>=1.0x)"),
        _speedup(f["crud.sale.span100"], f["ledger.sale.span100"], 2.0,
                 "sale p50, 100-batch span", ">=2x faster than CRUD"),
        _speedup(f["crud.sale.10k_batches"], f["ledger.sale.10k_batches"], 5.0,
                 "sale p50, 10,000 live batches", ">=5x faster than CRUD"),
    ]
    base = f["ledger.sale.span1_of_100"].median
    for key, label in (("ledger.sale.10k_batches", "10,000 live batches"),
                       ("ledger.sale.history", f"{history_events:,}-event history")):
        ratio = f[key].median / base
        checks.append(Check(f"sale p50 flat: {label}", "within 1.5x of the 100-batch sale",
                            f"{f[key].median:.3f} ms = {ratio:.2f}x", ratio <= 1.5))
    checks.extend(throughput_checks(runs))
    crud_read = f["crud.read.10k_batches"]
    for key, label in (("ledger.read.write_model.10k_batches", "write model"),
                       ("ledger.read.projection.10k_batches", "projection")):
        ratio = crud_read.median / f[key].median
        checks.append(Check(f"available read, 10,000 batches ({label})",
                            ">=5x faster than CRUD SUM",
                            f"{f[key].median:.3f} ms vs {crud_read.median:.3f} ms "
                            f"= {ratio:.1f}x", ratio >= 5.0))
    rate = projections["catch_up_events_per_s"]
    checks.append(Check("projection catch-up", ">=20,000 events/s",
                        f"{rate:,.0f} events/s with {projections['workers']} workers "
                        f"(one process: {projections['catch_up_one_process_events_per_s']:,.0f})",
                        rate >= 20_000))
    seconds = projections["rebuild_seconds"]
    scaled = seconds * 1_000_000 / max(projections["rebuild_events"], 1)
    checks.append(Check("projection rebuild", "1,000,000 events < 60 s",
                        f"{projections['rebuild_events']:,} events in {seconds:.1f} s "
                        f"(~{scaled:.0f} s per 1M)", scaled < 60))
    first, caught_up = (projections["rss_after_first_events_mib"],
                        projections["rss_after_catch_up_mib"])
    checks.append(Check("catch-up memory flat", "peak RSS within 20% of the first 1,000 events",
                        f"{first:.0f} MiB -> {caught_up:.0f} MiB (largest process, "
                        f"{projections['catch_up_events']:,} events) = {caught_up / first:.2f}x",
                        caught_up / first <= 1.2))
    small, big = replays.get("small"), replays.get("big")
    if small and big:
        grow_small = small["rss_mib"]
        grow_big = big["rss_mib"]
        ratio = grow_big / grow_small
        checks.append(Check("replay memory flat", "peak RSS within 20% from 1,000 events",
                            f"{grow_small:.0f} MiB -> {grow_big:.0f} MiB "
                            f"({big['version']:,} events) = {ratio:.2f}x", ratio <= 1.2))
    return checks


def ratios(runs: dict[str, dict[str, Any]], label: str) -> list[float]:
    """stockledger's rate over CRUD's, repetition by repetition, in the case `label`."""
    ledger, crud = runs[f"ledger.{label}"]["rates"], runs[f"crud.{label}"]["rates"]
    return [a / b for a, b in zip(ledger, crud, strict=True)]


def throughput_checks(runs: dict[str, dict[str, Any]]) -> list[Check]:
    """The throughput targets: issue 6's rate, issue 22's ratios per repetition and hot-SKU
    p99, and no oversell or lost sale in any run."""
    dist, crud_dist = runs["ledger.distinct"], runs["crud.distinct"]
    checks = [Check("8 clients, distinct SKUs", ">=3,000 sales/s",
                    f"{dist['rate']:,.0f} sales/s", dist["rate"] >= 3000)]
    distinct = ratios(runs, "distinct")
    checks.append(Check("8 clients, distinct SKUs vs CRUD", ">=1.3x in every repetition",
                        f"{dist['rate']:,.0f} vs {crud_dist['rate']:,.0f} sales/s (medians); "
                        f"per repetition {_listed(distinct)}", min(distinct) >= 1.3))
    hot = ratios(runs, "hot")
    checks.append(Check("8 clients, one hot SKU vs CRUD", ">=1.0x (median of the repetitions)",
                        f"{statistics.median(hot):.2f}x; per repetition {_listed(hot)}",
                        statistics.median(hot) >= 1.0))
    ledger_hot, crud_hot = runs["ledger.hot"], runs["crud.hot"]
    checks.append(Check("8 clients, one hot SKU, p99", "<=15 ms",
                        f"{ledger_hot['p99_ms']:.1f} ms (CRUD {crud_hot['p99_ms']:.1f} ms), "
                        f"retries {ledger_hot['retries']:,}", ledger_hot["p99_ms"] <= 15.0))
    for key, run in runs.items():
        checks.append(Check(f"no oversell / lost sale: {key}",
                            "stock decrease == units sold, no failed sale",
                            f"decrease {run['stock_decrease']:,} vs sold {run['sold']:,}, "
                            f"failed {run['failed']}, retries {run['retries']:,}",
                            run["consistent"] and run["failed"] == 0))
    return checks


def _listed(values: list[float]) -> str:
    return ", ".join(f"{v:.2f}" for v in values)
