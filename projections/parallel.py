"""Catch-up and rebuild in several processes, committing in order.

Reading, decoding and folding events is Python work: one process keeps one core busy while the
database mostly waits. Here each worker process takes every n-th range of positions, reads and
prepares it while the others prepare theirs, then waits for its turn: ranges commit strictly in
order, each in one transaction with the projections' new position, checked against the position
the range starts from. So the tables and positions move exactly as one process would move them,
a crash at any point leaves a committed prefix, and another runner that got ahead makes a
worker's check fail, which stops them all and leaves the rest to the caller.

Ranges are of positions, not events, and end at or below the head as it was when the run began:
no event can appear there later (the head is read at or below the recorder's horizon, below
every append still in flight), so a range with gaps, or with no event at all, is still
complete.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import multiprocessing.connection
import os
import resource
import sys
import types
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from ledger.store.application import LedgerApplication, open_application
from projections.batch import BatchRunner, Progress, ProjectionsMoved

logger = logging.getLogger(__name__)

MIN_EVENTS = 100_000
"""Below this lag one process is quicker: starting a worker costs about a second."""


@dataclass
class WorkerReport:
    """What one worker process did."""

    events: int
    peak_rss_mib: float
    exitcode: int | None


@dataclass
class ParallelRun:
    """How far a parallel run got: the position every projection reached, and the workers."""

    reached: int
    events: int
    workers: list[WorkerReport] = field(default_factory=list)


def position_ranges(after: int, target: int, span: int) -> list[tuple[int, int]]:
    """The ranges `(first, last)` of at most `span` positions from `after + 1` to `target`."""
    return [(first, min(first + span - 1, target)) for first in range(after + 1, target + 1, span)]


def default_workers() -> int:
    return max(1, min(os.cpu_count() or 1, 4))


def workers_for(dialect: str, positions: Mapping[str, int], target: int,
                workers: int | None) -> int:
    """How many processes should apply the events after `positions` up to `target`: fewer
    than 2 if it is not worth it here (or, with `workers` given, not possible)."""
    after = min(positions.values())
    if workers is None:
        workers = default_workers() if target - after >= MIN_EVENTS else 1
    # Workers need a server to share (SQLite has one writer) and projections that stand at
    # one position (a rebuild of one of them may have left them apart).
    if dialect != "postgres" or max(positions.values()) != after:
        return 1
    return workers


class _Board:
    """What workers share, in plain shared memory with no lock.

    No process holds anything another must wait for: a lock held by a worker (or runner)
    that is killed would stop the others for ever. The turn to commit passes round a ring
    of pipes instead, and only the worker holding it writes `committed` and `applied`.
    """

    def __init__(self, context: Any, workers: int) -> None:
        self.committed = context.Value("q", 0, lock=False)  # ranges committed, in order
        self.applied = context.Value("q", 0, lock=False)  # events in those ranges
        self.stopped = context.Value("b", 0, lock=False)
        self.events = context.Array("q", workers, lock=False)
        self.peak_rss_mib = context.Array("d", workers, lock=False)


OpenRunner = Callable[[LedgerApplication], BatchRunner]
"""How a worker makes its own runner over its own connection to the store."""


def apply_in_parallel(models: BatchRunner, open_runner: OpenRunner,
                      generations: Mapping[str, int], after: int, target: int, *, live: bool,
                      workers: int, progress: Progress | None = None) -> ParallelRun:
    """Apply the events after `after` up to `target` to projections that all stand at `after`,
    in `workers` processes that each open a runner with `open_runner` (which must pickle).

    Returns the position reached: `target`, or less if a worker stopped (another runner moved
    the positions first, or an error); the caller reads the positions again and goes on.
    """
    ranges = position_ranges(after, target, models.batch_size)
    context = multiprocessing.get_context("spawn")
    board = _Board(context, workers)
    # Worker k receives the turn from worker k-1 on pipe k and passes it on pipe k+1.
    pipes = [context.Pipe(duplex=False) for _ in range(workers)]
    processes = [
        context.Process(
            target=_work, name=f"ledger-projections-{index}",
            args=(open_runner, models.store.app.config.url, dict(generations), live, ranges,
                  index, workers, board, pipes[index][0], pipes[(index + 1) % workers][1],
                  os.getpid()))
        for index in range(workers)
    ]
    try:
        with _main_module_left_out():
            for process in processes:
                process.start()
        pipes[0][1].send(0)  # range 0 commits first
        for receiver, sender in pipes:
            # Only workers hold the ends now, so a worker that dies closes its own and the
            # next one sees the pipe end instead of waiting for a turn that never comes.
            receiver.close()
            sender.close()
        waiting = [process.sentinel for process in processes]
        while waiting:
            for ended in multiprocessing.connection.wait(waiting, timeout=0.25):
                waiting.remove(ended)  # type: ignore[arg-type]
            if progress is not None:
                progress(board.applied.value, target - after)
    finally:
        for process in processes:
            if process.pid is None:
                continue  # never started
            if process.is_alive():
                process.kill()
            process.join()
    reports = [WorkerReport(board.events[i], board.peak_rss_mib[i], process.exitcode)
               for i, process in enumerate(processes)]
    for index, report in enumerate(reports):
        if report.exitcode:
            logger.warning("projection worker %d exited with code %s", index, report.exitcode)
    committed = board.committed.value
    reached = ranges[committed - 1][1] if committed else after
    return ParallelRun(reached, board.applied.value, reports)


@contextlib.contextmanager
def _main_module_left_out() -> Iterator[None]:
    """Start workers without running the caller's main script in them again.

    A spawned process normally re-imports `__main__` so that it can unpickle functions
    defined there; ours need nothing from it, and a script that calls `catch_up` without an
    `if __name__ == "__main__"` guard would otherwise start catching up in each worker.
    """
    main = sys.modules["__main__"]
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        sys.modules["__main__"] = main


def _work(open_runner: OpenRunner, url: str, generations: dict[str, int], live: bool,
          ranges: list[tuple[int, int]], index: int, workers: int, board: _Board,
          turn_in: Any, turn_out: Any, parent: int) -> None:
    """One worker: prepare each of its ranges, then commit it when its turn comes."""
    app = open_application(url)
    try:
        models = open_runner(app)
        for number in range(index, len(ranges), workers):
            first, last = ranges[number]
            before = dict.fromkeys(generations, first - 1)
            batch = models.read(first, stop=last)
            assert batch is not None
            prepared = models.changes(batch, before)
            if not _wait_for_turn(number, turn_in, board, parent):
                return
            models.commit(generations, before, batch, prepared, live=live)
            board.applied.value += batch.count
            board.events[index] += batch.count
            if batch.stuck is not None:
                # The range stopped before an event that cannot be read, and so does the
                # run: the caller goes on alone from the positions recorded, meets the same
                # event and records why it stopped.
                board.stopped.value = 1
                return
            board.committed.value = number + 1
            if number + 1 < len(ranges):
                turn_out.send(number + 1)
            # Or the next range is read while this one is still held: two ranges' peak.
            del batch, prepared
    except ProjectionsMoved:
        board.stopped.value = 1  # another runner got there first; the caller takes over
    except BaseException:
        board.stopped.value = 1
        raise
    finally:
        board.peak_rss_mib[index] = peak_rss_mib()
        app.close()


def _wait_for_turn(number: int, turn_in: Any, board: _Board, parent: int) -> bool:
    """Wait until range `number` is next to commit; False if the run stopped meanwhile."""
    while not turn_in.poll(0.5):
        if _stopped(board, parent):
            return False
    try:
        turn = turn_in.recv()
    except EOFError:  # the worker before us died
        return False
    assert turn == number, (turn, number)
    return not _stopped(board, parent)


def _stopped(board: _Board, parent: int) -> bool:
    """Whether another worker stopped, or the runner that started us is gone (killed), so
    that we stop too, as one process would have."""
    return bool(board.stopped.value) or os.getppid() != parent


def peak_rss_mib() -> float:
    """Peak resident set size of this process's own memory so far.

    `VmHWM` starts afresh when a process execs; `ru_maxrss` does not: a spawned worker would
    report its parent's size at the fork as its own peak."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
