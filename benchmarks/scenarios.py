"""The shapes the suite measures, shared by stockledger and the CRUD baseline."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

OUTLET = "BENCH-1"
BIG = 100_000  # units per batch: a run never exhausts it, and 10,000 of them fit int4 sums


@dataclass(frozen=True)
class Sizes:
    """How much work one run does: `--quick` keeps the whole suite under two minutes."""

    latency_repeats: int
    span_repeats: int
    read_repeats: int
    many_batches: int
    history_events: int
    throughput_seconds: float
    throughput_repeats: int
    raw_seconds: float
    raw_repeats: int
    settle_seconds: float
    clients: int = 8


QUICK = Sizes(latency_repeats=300, span_repeats=100, read_repeats=300, many_batches=10_000,
              history_events=20_000, throughput_seconds=3.0, throughput_repeats=1,
              raw_seconds=2.0, raw_repeats=1, settle_seconds=1.0)
FULL = Sizes(latency_repeats=2_000, span_repeats=300, read_repeats=2_000, many_batches=10_000,
             history_events=1_000_000, throughput_seconds=10.0, throughput_repeats=5,
             raw_seconds=5.0, raw_repeats=3, settle_seconds=3.0)

THROUGHPUT_BATCHES = 100
"""Live batches per SKU in the throughput cases, as in the old module's own benchmark
(`deduct_stock` over 100 batches) and in issue 22's measurements (10 until 2026-12-04)."""
SETTLE_SECONDS = 2.0
"""The pause after the checkpoint before a throughput case, unless a run's sizes say."""


def first_expiry() -> date:
    return date.today() + timedelta(days=400)


# SKU names per scenario
SKU_100 = "SKU-100-BATCHES"  # 100 live batches, 1-unit sales span 1 batch
SKU_SPAN = "SKU-SPAN-100"  # batches of 1 unit, 100-unit sales span 100 batches
SKU_MANY = "SKU-10K-BATCHES"  # 10,000 live batches
SKU_ONE = "SKU-1-BATCH"  # 1 live batch, for reads
SKU_HISTORY = "SKU-HISTORY"  # many past events
SKU_SMALL_HISTORY = "SKU-HISTORY-1K"  # 1,000 past events, the memory baseline
SKU_HOT = "SKU-HOT"


def distinct_sku(index: int) -> str:
    return f"SKU-CLIENT-{index}"
