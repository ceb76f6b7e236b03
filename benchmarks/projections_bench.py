"""Projection catch-up rate, rebuild time and memory, in a fresh process.

The process catches the read models up from nothing, noting its peak RSS after the first
1,000 events and after all of them (memory must stay flat however many events there are),
then rebuilds them.
"""

from __future__ import annotations

import time
from typing import Any

from benchmarks.machine import peak_rss_mib
from benchmarks.workers import run_parallel, same_args

FIRST_EVENTS = 1_000


def _measure(index: int, url: Any, start: float, deadline: float) -> dict[str, Any]:
    from ledger import Ledger
    from projections.runner import ReadModels

    with Ledger.open(url) as ledger:
        models = ReadModels(ledger.application)
        models.create()
        began = time.perf_counter()
        caught_up = models.catch_up(until=FIRST_EVENTS)
        rss_first = peak_rss_mib()
        caught_up += models.catch_up()
        catch_up_seconds = time.perf_counter() - began
        rss_all = peak_rss_mib()
        began = time.perf_counter()
        rebuilt = models.rebuild(list(models.generations()))
        rebuild_seconds = time.perf_counter() - began
        return {
            "catch_up_events": caught_up,
            "catch_up_seconds": catch_up_seconds,
            "catch_up_events_per_s": caught_up / catch_up_seconds if catch_up_seconds else 0.0,
            "rebuild_events": rebuilt,
            "rebuild_seconds": rebuild_seconds,
            "rss_after_first_events_mib": rss_first,
            "rss_after_catch_up_mib": rss_all,
            "rss_after_rebuild_mib": peak_rss_mib(),
        }


def measure(url: str) -> dict[str, Any]:
    """The figures of one fresh process over the store at `url`."""
    return run_parallel(same_args, _measure, [url], duration=0.0)[0]
