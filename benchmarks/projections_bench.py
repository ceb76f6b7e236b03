"""Projection catch-up rate, rebuild time and memory, in a fresh process.

The process catches the read models up from nothing: the first 1,000 events and then a fifth of
the rest in this one process, the remainder with worker processes (`projections.parallel`, as
`ledger projections catch-up` does when far behind), noting peak RSS after the first 1,000
events and, for this process and each worker, at the end: memory must stay flat however many
events there are. Then it rebuilds the read models with workers.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from benchmarks.machine import peak_rss_mib
from benchmarks.workers import run_parallel, same_args

FIRST_EVENTS = 1_000


def _timed(step: Callable[[], int]) -> tuple[int, float]:
    began = time.perf_counter()
    events = step()
    return events, time.perf_counter() - began


def _measure(index: int, url: Any, start: float, deadline: float) -> dict[str, Any]:
    from ledger import Ledger
    from projections.parallel import ParallelRun, default_workers
    from projections.runner import ReadModels

    def workers_peak(run: ParallelRun | None) -> float:
        return max((w.peak_rss_mib for w in run.workers), default=0.0) if run else 0.0

    workers = default_workers()
    with Ledger.open(url) as ledger:
        models = ReadModels(ledger.application)
        models.create()
        first, first_seconds = _timed(lambda: models.catch_up(until=FIRST_EVENTS, workers=1))
        rss_first = peak_rss_mib()
        one_until = FIRST_EVENTS + (models.head() - FIRST_EVENTS) // 5
        one, one_seconds = _timed(lambda: models.catch_up(until=one_until, workers=1))
        rest, rest_seconds = _timed(lambda: models.catch_up(workers=workers))
        catch_up_workers_rss = workers_peak(models.last_parallel_run)
        rss_all = peak_rss_mib()
        rebuilt, rebuild_seconds = _timed(
            lambda: models.rebuild(list(models.generations()), workers=workers))
        return {
            "workers": workers,
            "catch_up_events": first + one + rest,
            "catch_up_seconds": first_seconds + one_seconds + rest_seconds,
            "catch_up_one_process_events": one,
            "catch_up_one_process_events_per_s": one / one_seconds if one_seconds else 0.0,
            "catch_up_workers_events": rest,
            "catch_up_events_per_s": rest / rest_seconds if rest_seconds else 0.0,
            "rebuild_events": rebuilt,
            "rebuild_seconds": rebuild_seconds,
            "rss_after_first_events_mib": rss_first,
            "rss_after_catch_up_mib": max(rss_all, catch_up_workers_rss),
            "rss_after_rebuild_mib": max(peak_rss_mib(),
                                         workers_peak(models.last_parallel_run)),
            "rss_catch_up_workers_mib": catch_up_workers_rss,
        }


def measure(url: str) -> dict[str, Any]:
    """The figures of one fresh process over the store at `url`."""
    return run_parallel(same_args, _measure, [url], duration=0.0)[0]
