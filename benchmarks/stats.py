"""Timing figures: a named sample with median, p99, spread and repeat count."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Figure:
    """One measured figure. `samples` are in `unit`; rates have one sample per repeat."""

    name: str
    unit: str
    samples: tuple[float, ...]
    note: str = ""

    @property
    def n(self) -> int:
        return len(self.samples)

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def p99(self) -> float:
        ordered = sorted(self.samples)
        return ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]

    @property
    def low(self) -> float:
        return min(self.samples)

    @property
    def high(self) -> float:
        return max(self.samples)

    def as_json(self) -> dict[str, Any]:
        return {
            "unit": self.unit, "median": round(self.median, 4), "p99": round(self.p99, 4),
            "min": round(self.low, 4), "max": round(self.high, 4), "n": self.n,
            "note": self.note,
        }


def time_ms(action: Callable[[], object], repeats: int, warmup: int = 3) -> tuple[float, ...]:
    """Wall-clock milliseconds of `action`, once per repeat, after `warmup` untimed calls."""
    for _ in range(warmup):
        action()
    samples: list[float] = []
    for _ in range(repeats):
        start = time.perf_counter()
        action()
        samples.append((time.perf_counter() - start) * 1000.0)
    return tuple(samples)


def latency(name: str, action: Callable[[], object], repeats: int, warmup: int = 3,
            note: str = "") -> Figure:
    return Figure(name, "ms", time_ms(action, repeats, warmup), note)


def span_samples(repeats: int, sale: Callable[[str, int], object],
                 replenish: Callable[[], object], sku: str) -> tuple[float, ...]:
    """Each repeat: `replenish` 100 one-unit batches (untimed), then a 100-unit sale of `sku`
    (timed, in ms); the first three are warm-up."""
    samples: list[float] = []
    for i in range(repeats + 3):
        if i:
            replenish()
        start = time.perf_counter()
        sale(sku, 100)
        if i >= 3:
            samples.append((time.perf_counter() - start) * 1000.0)
    return tuple(samples)
