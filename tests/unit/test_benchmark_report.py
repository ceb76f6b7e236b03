"""The benchmark report shows every repetition's ratio, and the throughput targets judge the
ratios repetition by repetition; the CRUD baseline's FEFO walk takes what the old one took."""

from __future__ import annotations

from typing import Any

import pytest

from benchmarks.crud_baseline import InsufficientStock
from benchmarks.crud_variants import fefo_takes
from benchmarks.report import run_rows
from benchmarks.targets import throughput_checks
from benchmarks.waits import allocation_lock_keys, render
from ledger.store.postgres.lock_keys import ALLOCATION_LOCK


def _run(rates: list[float], *, p99: float = 5.0, consistent: bool = True,
         failed: int = 0, clients: int = 8) -> dict[str, Any]:
    return {"clients": clients, "rate": sorted(rates)[len(rates) // 2], "rates": rates,
            "sold": 100, "failed": failed, "retries": 3, "retries_per_run": [1, 2],
            "stock_decrease": 100, "consistent": consistent, "rss_mib": 50.0, "p50_ms": 1.0,
            "p99_ms": p99, "p99_ms_per_run": [p99, p99], "load_average_per_run": []}


def _runs(distinct: tuple[list[float], list[float]], hot: tuple[list[float], list[float]],
          hot_p99: float = 5.0) -> dict[str, dict[str, Any]]:
    return {"crud.distinct": _run(distinct[0]), "ledger.distinct": _run(distinct[1]),
            "crud.hot": _run(hot[0]), "ledger.hot": _run(hot[1], p99=hot_p99)}


def _verdicts(runs: dict[str, dict[str, Any]]) -> dict[str, bool | None]:
    return {c.name: c.passed for c in throughput_checks(runs)}


def test_the_report_prints_each_repetitions_ratio_and_their_median() -> None:
    rows = "\n".join(run_rows(_runs(([1000, 2000], [1500, 2200]), ([100, 100], [50, 80])), {}))
    assert "| 8 clients, distinct SKUs | 2,200 (1,500, 2,200) | 2,000 (1,000, 2,000) | " \
           "1.50, 1.10 | 1.30x |" in rows
    assert "| 8 clients, one hot SKU | 80 (50, 80) | 100 (100, 100) | 0.50, 0.80 | 0.65x |" \
        in rows


def test_the_distinct_sku_target_needs_every_repetition_at_1_3x() -> None:
    passing = _verdicts(_runs(([1000, 1000], [1300, 1400]), ([1, 1], [1, 1])))
    failing = _verdicts(_runs(([1000, 1000], [2000, 1290]), ([1, 1], [1, 1])))
    assert passing["8 clients, distinct SKUs vs CRUD"] is True
    assert failing["8 clients, distinct SKUs vs CRUD"] is False


def test_the_hot_sku_target_takes_the_median_ratio_and_the_p99() -> None:
    checks = _verdicts(_runs(([1, 1], [1, 1]), ([100, 100, 100], [90, 100, 130])))
    assert checks["8 clients, one hot SKU vs CRUD"] is True
    assert checks["8 clients, one hot SKU, p99"] is True
    slow = _verdicts(_runs(([1, 1], [1, 1]), ([100, 100, 100], [90, 99, 130]), hot_p99=15.1))
    assert slow["8 clients, one hot SKU vs CRUD"] is False
    assert slow["8 clients, one hot SKU, p99"] is False


def test_an_oversold_or_failed_run_fails_its_integrity_check() -> None:
    runs = _runs(([1, 1], [1, 1]), ([1, 1], [1, 1]))
    runs["crud.hot"] = _run([1, 1], consistent=False)
    runs["ledger.distinct"] = _run([1, 1], failed=1)
    checks = _verdicts(runs)
    assert checks["no oversell / lost sale: crud.hot"] is False
    assert checks["no oversell / lost sale: ledger.distinct"] is False
    assert checks["no oversell / lost sale: ledger.hot"] is True


def test_a_sale_takes_its_batches_in_order_and_stops_when_served() -> None:
    assert fefo_takes([(7, 2), (8, 3), (9, 5)], 4, "S") == ([7, 8], [2, 2])
    assert fefo_takes([(7, 2), (8, 3)], 2, "S") == ([7], [2])
    with pytest.raises(InsufficientStock, match="asked 6, short 1"):
        fefo_takes([(7, 2), (8, 3)], 6, "NAIROBI-1/AMOX-500")


def test_the_allocation_lock_is_recognised_as_pg_locks_shows_it() -> None:
    oid = 16_384
    key = (ALLOCATION_LOCK ^ oid) & 0xFFFF_FFFF_FFFF_FFFF
    assert allocation_lock_keys([oid]) == {(key >> 32, key & 0xFFFF_FFFF)}
    # The high and low halves rebuild the signed key the append function locks.
    rebuilt = ((key >> 32) << 32) | (key & 0xFFFF_FFFF)
    assert rebuilt - (1 << 64 if rebuilt >= 1 << 63 else 0) == ALLOCATION_LOCK ^ oid


def test_the_wait_report_gives_each_state_its_share_and_cpu_per_sale() -> None:
    result = {"window_seconds": 2.0, "load_average": (3.0, 2.0, 1.0), "backends": 2,
              "samples": 100, "waits": {"active: on CPU or runnable": 150,
                                        "idle: Client/ClientRead": 50},
              "advisory": {}, "lock_holder_states": {},
              "cpu_seconds": {"clients": 1.0, "backends": 0.5},
              "run_queue_seconds": {"clients": 0.2, "backends": 0.1}}
    lines = "\n".join(render("ledger.distinct", result, sales=1000))
    assert "| active: on CPU or runnable | 75.0% |" in lines
    assert "| idle: Client/ClientRead | 25.0% |" in lines
    assert "| clients | 0.50 | 1.000 |" in lines
    assert "| backends: runnable, waiting for a core | 0.05 | 0.100 |" in lines
