"""What checking a snapshot costs a load: `python -m benchmarks.snapshot_check`.

On each store, two stock items past several snapshot intervals: ONE (one batch, 1,010 events:
a snapshot at version 1,000 and 10 events after it) and MANY (1,000 batches, 1,010 events).
Medians, in microseconds, of:

* cold load, checked: the item evicted from the cache, then loaded as a command loads it (its
  latest snapshot, the MAC checked under the till's key, the events from the snapshot's
  version with their positions, the first one's checked);
* cold load, unchecked: the same through the library's repository, which takes the snapshot on
  its word (the ledger before snapshots were signed); both also as the client's CPU time;
* the MAC check alone;
* cold replay: the load a refused snapshot falls back to, every event from the first;
* warm sale: one unit sold from the cached item, with the number of snapshot reads and
  position lookups the warm sales made (none: a cached item is fast-forwarded, no snapshot is
  read).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from eventsourcing.application import Repository, project_aggregate

from benchmarks.database import admin_url, throwaway_database
from ledger.app.service import Ledger
from ledger.domain import identity
from ledger.store.snapshot_keys import SNAPSHOT_KEY_VARIABLE

OUTLET = "BENCH-1"
EVENTS = 1010
ROUNDS = 200


def _median_us(samples: list[int]) -> float:
    return round(statistics.median(samples) / 1000, 1)


def _timed(action: Callable[[], object]) -> int:
    began = time.perf_counter_ns()
    action()
    return time.perf_counter_ns() - began


def _cpu(action: Callable[[], object]) -> int:
    """The client's CPU time: less disturbed than the wall clock by a busy machine."""
    began = time.thread_time_ns()
    action()
    return time.thread_time_ns() - began


def _seed(ledger: Ledger) -> None:
    ledger.receive(outlet=OUTLET, sku="ONE", batch_id="B1", quantity=10 * EVENTS)
    for n in range(EVENTS - 2):
        ledger.sell(outlet=OUTLET, sale_id=f"ONE-{n}", lines=[("ONE", 1)])
    for n in range(EVENTS - 10):
        ledger.receive(outlet=OUTLET, sku="MANY", batch_id=f"M{n:04}", quantity=100,
                       expires_on=f"2030-{1 + n % 12:02}-28")
    for n in range(9):
        ledger.sell(outlet=OUTLET, sale_id=f"MANY-{n}", lines=[("MANY", 1)])


def _item(ledger: Ledger, sku: str) -> dict[str, Any]:
    app = ledger.application
    stream = identity.stock_item_id(OUTLET, sku)
    snapshot = app.checked_repository.signed_snapshots([stream])[stream]
    key = app.snapshot_keys.for_loading()
    plain = Repository(app.events, snapshot_store=app.snapshots)
    no_snapshots = Repository(app.events)
    project: Any = project_aggregate

    def cold_checked() -> None:
        app.evict(stream)
        app.load_many([stream])

    def cold_unchecked() -> None:
        plain._reconstruct_aggregate(stream, None, project)

    def mac() -> None:
        assert snapshot.signature_problem(key) is None

    def replay() -> None:
        no_snapshots._reconstruct_aggregate(stream, None, project)

    samples: dict[str, list[int]] = {name: [] for name in (
        "cold_load_checked_us", "cold_load_unchecked_us", "cold_load_checked_cpu_us",
        "cold_load_unchecked_cpu_us", "mac_check_us", "cold_replay_us")}
    for _ in range(ROUNDS):  # alternating, so that drift on a shared machine hits both alike
        samples["cold_load_checked_us"].append(_timed(cold_checked))
        samples["cold_load_unchecked_us"].append(_timed(cold_unchecked))
        samples["cold_load_checked_cpu_us"].append(_cpu(cold_checked))
        samples["cold_load_unchecked_cpu_us"].append(_cpu(cold_unchecked))
        samples["mac_check_us"].append(_timed(mac))
    for _ in range(max(ROUNDS // 10, 5)):
        samples["cold_replay_us"].append(_timed(replay))
    result: dict[str, Any] = {name: _median_us(values) for name, values in samples.items()}
    result.update(version=app.load(stream).version,  # type: ignore[union-attr]
                  snapshot_version=snapshot.originator_version,
                  batches=len(snapshot.state["batches"]))
    return result


def _warm_sales(ledger: Ledger) -> dict[str, Any]:
    app = ledger.application
    ledger.sell(outlet=OUTLET, sale_id="WARM-UP", lines=[("ONE", 1)])  # the outlet cached too
    assert app.snapshots is not None
    snapshot_recorder = app.snapshots.recorder
    counts = {"snapshot_reads": 0, "cold_event_reads": 0}
    select, events_from = snapshot_recorder.select_events, app.events_from

    def counted_select(*args: Any, **kwargs: Any) -> Any:
        counts["snapshot_reads"] += 1
        return select(*args, **kwargs)

    def counted_events(starts: Any, lte: int | None = None) -> Any:
        counts["cold_event_reads"] += 1
        return events_from(starts, lte)

    snapshot_recorder.select_events = counted_select  # type: ignore[method-assign]
    app.events_from = counted_events  # type: ignore[method-assign]

    def sale(n: int) -> Callable[[], object]:
        return lambda: ledger.sell(outlet=OUTLET, sale_id=f"WARM-{n}", lines=[("ONE", 1)])

    # Fewer than an interval: no sale here crosses one and writes a snapshot.
    times = [_timed(sale(n)) for n in range(150)]
    return {"warm_sale_us": _median_us(times), **counts}


def measure(url: str) -> dict[str, Any]:
    with Ledger.open(url, create_tables=True) as seeding:
        _seed(seeding)
    with Ledger.open(url) as ledger:
        result = {sku: _item(ledger, sku) for sku in ("ONE", "MANY")}
        result["warm"] = _warm_sales(ledger)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.snapshot_check",
                                     description=__doc__)
    parser.add_argument("--postgres-url", default=None)
    args = parser.parse_args(argv)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as directory:
        # A key of the run's own, not the user's.
        os.environ[SNAPSHOT_KEY_VARIABLE] = str(Path(directory) / "snapshot.key")
        results["sqlite"] = measure(f"sqlite:///{Path(directory) / 'bench.sqlite3'}")
        with throwaway_database(admin_url(args.postgres_url), "snapshots") as url:
            results["postgres"] = measure(url)
    print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

