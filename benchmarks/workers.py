"""Run one function in N spawned processes that start together and run for a fixed time."""

from __future__ import annotations

import multiprocessing as mp
import threading
import time
from collections.abc import Callable
from typing import Any

# prepare(index, args) -> state runs before the start barrier (imports, connections, warm-up);
# work(index, state, start, deadline) -> dict runs after it, and only it is timed.
PrepareFn = Callable[[int, Any], Any]
WorkFn = Callable[[int, Any, float, float], dict[str, Any]]
# observe(pids, start, deadline) runs in the parent from the common start to the deadline
# (a `waits.WaitSampler`), with the workers' process ids.
ObserveFn = Callable[[list[int], float, float], None]


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


def run_parallel(prepare: PrepareFn, work: WorkFn, args: list[Any], duration: float,
                 observe: ObserveFn | None = None) -> list[dict[str, Any]]:
    """Start one spawned process per element of `args`; gather what each returns. With
    `observe`, the parent waits at the start barrier too and observes the timed part."""
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(len(args) + (1 if observe else 0))
    results = ctx.Queue()
    processes = [ctx.Process(target=_run,
                             args=(prepare, work, i, a, barrier, duration, results))
                 for i, a in enumerate(args)]
    for process in processes:
        process.start()
    observed: BaseException | None = None
    if observe is not None:
        try:
            barrier.wait(timeout=300)
            start = time.perf_counter()
            observe([p.pid for p in processes if p.pid is not None], start, start + duration)
        except threading.BrokenBarrierError:
            pass  # a worker failed before the start: its error is gathered below
        except Exception as error:  # gather the workers first, or they would hang
            observed = error
    gathered: dict[int, dict[str, Any]] = {}
    for _ in processes:
        index, outcome = results.get(timeout=duration + 600)
        gathered[index] = outcome
    for process in processes:
        process.join(timeout=30)
    errors = [o["error"] for o in gathered.values() if "error" in o]
    if errors:
        raise RuntimeError(f"worker failed: {errors[0]}")
    if observed is not None:
        raise observed
    return [gathered[i] for i in range(len(args))]


def same_args(index: int, args: Any) -> Any:
    """A `prepare` that has nothing to prepare."""
    return args


def rate(outcomes: list[dict[str, Any]], counted: str) -> float:
    """Processes' `counted` things per second, over the slowest process's time."""
    count: int = sum(o[counted] for o in outcomes)
    seconds: float = max(o["seconds"] for o in outcomes)
    return count / seconds
