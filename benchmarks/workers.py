"""Run one function in N spawned processes that start together and run for a fixed time."""

from __future__ import annotations

import multiprocessing as mp
import time
from collections.abc import Callable
from typing import Any

# prepare(index, args) -> state runs before the start barrier (imports, connections, warm-up);
# work(index, state, start, deadline) -> dict runs after it, and only it is timed.
PrepareFn = Callable[[int, Any], Any]
WorkFn = Callable[[int, Any, float, float], dict[str, Any]]


def _run(prepare: PrepareFn, work: WorkFn, index: int, args: Any, barrier: Any,
         duration: float, results: Any) -> None:
    try:
        state = prepare(index, args)
        barrier.wait(timeout=300)
        start = time.perf_counter()
        outcome = work(index, state, start, start + duration)
    except BaseException as error:  # report, do not hang the parent
        barrier.abort()
        outcome = {"error": f"{type(error).__name__}: {error}"}
    results.put((index, outcome))


def run_parallel(prepare: PrepareFn, work: WorkFn, args: list[Any],
                 duration: float) -> list[dict[str, Any]]:
    """Start one spawned process per element of `args`; gather what each returns."""
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(len(args))
    results = ctx.Queue()
    processes = [ctx.Process(target=_run,
                             args=(prepare, work, i, a, barrier, duration, results))
                 for i, a in enumerate(args)]
    for process in processes:
        process.start()
    gathered: dict[int, dict[str, Any]] = {}
    for _ in processes:
        index, outcome = results.get(timeout=duration + 600)
        gathered[index] = outcome
    for process in processes:
        process.join(timeout=30)
    errors = [o["error"] for o in gathered.values() if "error" in o]
    if errors:
        raise RuntimeError(f"worker failed: {errors[0]}")
    return [gathered[i] for i in range(len(args))]


def same_args(index: int, args: Any) -> Any:
    """A `prepare` that has nothing to prepare."""
    return args


def rate(outcomes: list[dict[str, Any]], counted: str) -> float:
    """Processes' `counted` things per second, over the slowest process's time."""
    count: int = sum(o[counted] for o in outcomes)
    seconds: float = max(o["seconds"] for o in outcomes)
    return count / seconds
