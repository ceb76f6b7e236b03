"""Reads by lot and by period on PostgreSQL: `trace` of one lot, `expiring` across 100
outlets and a one-month `report movements` for one outlet, on a store of 1,000,000 movements
against the same on a store of 10,000 (issue 20: each under 100 ms, and within 2x).

`python3 -m benchmarks.lot_reads [--movements N] [--small N] [--repeats 20] [--quick]
[--json]` builds two throwaway stores, each with the same catalogue (100 outlets, 20 SKUs
each) and the same recall lot, and a history as long as its size asks: the small one a
month of sales, the large one ten months, with a lot received about every 25 days per stock
item, sales of one to three units, expiry sweeps, write-offs and counts, every movement
dated in the business past. Movements are decided by the stock item aggregate, as the API
decides them, and appended in large chunks (as `benchmarks.ledger_seed` does); then the
projections catch up. The shelves as they stand at the end are alike in both stores (earlier
lots have been sold or swept; the latest lot of each stock item expires from tomorrow to a
year ahead), so `expiring` answers with about as many rows in both, and the recall lot has
the same 140-odd movements in both: what differs is only the history around them.

Each read is timed as the service answers it: catch-up check, then the query, on an open
connection; `--repeats` runs after 3 warm-ups, median and spread. `--quick`: 100,000
movements against 10,000.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

from benchmarks.database import admin_url, throwaway_database
from benchmarks.machine import describe
from ledger import Ledger
from ledger.domain import identity
from ledger.domain.errors import Refusal
from ledger.domain.quantities import BatchIdentity
from ledger.domain.stock_item import MovementContext, StockItem
from projections.lot_queries import LotReads
from projections.runner import ReadModels, create_read_models

OUTLETS = 100
SKUS_PER_OUTLET = 20
CHUNK = 5_000
TARGET_MS = 100.0
TARGET_RATIO = 2.0
RECALL_SKU = "RECALL-AMOX"
RECALL_LOT = "RC-2026-07"
NOW = datetime.now(UTC)
TODAY = NOW.date()


def outlet_name(number: int) -> str:
    return f"OUTLET-{number:03d}"


def _spread(key: int, size: int) -> int:
    """A fixed pseudo-random number in 0..size-1 (the same every run)."""
    return (key * 2654435761) % 4294967296 % size


def _item(ledger: Ledger, outlet: str, sku: str) -> StockItem:
    item = ledger.application.load(identity.stock_item_id(outlet, sku))
    assert isinstance(item, StockItem)
    return item


def seed_item(ledger: Ledger, outlet_number: int, sku_number: int, events: int,
              days: int) -> int:
    """One stock item's history of about `events` movements over `days` days: lots, sales,
    sweeps, write-offs and counts, decided by the aggregate. Returns the events recorded."""
    outlet, sku = outlet_name(outlet_number), f"SKU-{sku_number:04d}"
    key = outlet_number * 1000 + sku_number
    start = NOW - timedelta(days=days)
    lots = max(1, events // 40)
    sales = max(1, events - 2 - lots - lots // 3 - 2 * (events // 100))
    per_lot_days = days / lots
    units_per_lot = int(sales * 2 / lots * 1.1) + 5
    moments = sorted(
        [(start + timedelta(days=per_lot_days * n, hours=1), "receive", n)
         for n in range(lots)]
        + [(start + timedelta(days=days * (n + 0.5) / sales), "sell", n)
           for n in range(sales)]
        + [(start + timedelta(days=days * (n + 0.7) / max(1, events // 100)), "write-off", n)
           for n in range(events // 100)]
        + [(start + timedelta(days=days * (n + 0.3) / max(1, events // 100)), "count", n)
           for n in range(events // 100)])
    first = moments[0]
    assert first[1] == "receive"
    expiry = _expiry(key, 0, lots, first[0], per_lot_days)
    ledger.receive(outlet=outlet, sku=sku, batch_id=f"L{sku_number}-0",
                   quantity=units_per_lot, expires_on=expiry, occurred_at=first[0],
                   actor="bench-seed")
    item = _item(ledger, outlet, sku)
    recorded = 2
    swept = first[0].date()
    for at, what, n in moments[1:]:
        context = MovementContext(at, "bench-seed", f"{what}-{key}-{n}",
                                  f"seed:{what}:{key}:{n}")
        if at.date() > swept:
            # The nightly expiry sweep, as an outlet runs `ledger expire`.
            swept = at.date()
            item.expire(swept, MovementContext(at, "bench-seed", f"sweep-{swept}",
                                               f"seed:sweep:{key}:{swept}"))
        try:
            if what == "receive":
                item.receive(BatchIdentity(
                    batch_id=f"L{sku_number}-{n}", quantity=units_per_lot,
                    expires_on=_expiry(key, n, lots, at, per_lot_days)), context)
            elif what == "sell":
                item.sell(f"S{key}-{n}", 1 + _spread(key + n, 3), "fefo", False, context)
            elif what == "write-off":
                item.write_off(1, None, "damaged", "fefo", context)
            else:
                quantities = item.batch_quantities()
                if not quantities:
                    continue
                batch_id = max(quantities, key=lambda b: quantities[b])
                item.count({batch_id: max(0, quantities[batch_id] - 1)}, False, context)
        except Refusal:
            continue  # out of stock then: the till would have been refused too
        if len(item.pending_events) >= CHUNK:
            recorded += len(item.pending_events)
            ledger.application.save(item)
    recorded += len(item.pending_events)
    if item.pending_events:
        ledger.application.save(item)
    return recorded


def _expiry(key: int, lot: int, lots: int, received: datetime, per_lot_days: float) -> date:
    """Earlier lots are short-dated: they expire five days after the next lot arrives, and
    the nightly sweep writes off what is left of them. The latest lot expires from tomorrow
    to a year ahead, alike in every store, so the shelves at the end are alike too."""
    if lot == lots - 1:
        return TODAY + timedelta(days=1 + _spread(key, 365))
    return received.date() + timedelta(days=int(per_lot_days) + 5)


def seed_recall(ledger: Ledger) -> int:
    """The recall lot: to a warehouse, on to ten outlets (one delivery still on the road),
    sold there, some refunded, one damaged: the same movements in every store."""
    warehouse = outlet_name(0)
    start = NOW - timedelta(days=20)
    ledger.receive(outlet=warehouse, sku=RECALL_SKU, batch_id=RECALL_LOT, quantity=1000,
                   expires_on=TODAY + timedelta(days=25), occurred_at=start)
    for n in range(1, 11):
        ledger.transfer(from_outlet=warehouse, to_outlet=outlet_name(n), sku=RECALL_SKU,
                        quantity=60, transfer_id=f"RT-{n}", in_transit=n == 10,
                        occurred_at=start + timedelta(hours=n))
    for n in range(1, 10):
        for sale in range(12):
            ledger.sell(outlet=outlet_name(n), sale_id=f"RS-{n}-{sale}",
                        lines=[(RECALL_SKU, 2)],
                        occurred_at=start + timedelta(days=1 + sale, hours=n))
        ledger.refund(sale_id=f"RS-{n}-0", refund_id=f"RR-{n}", lines=[(RECALL_SKU, 1)])
    ledger.write_off(outlet=warehouse, sku=RECALL_SKU, quantity=5, reason="damaged",
                     batch_id=RECALL_LOT)
    return ledger.application.recorder.max_notification_id() or 0


def build(url: str, movements: int) -> dict[str, Any]:
    """A store of about `movements` movements; how long it took to build and project."""
    items = OUTLETS * SKUS_PER_OUTLET
    per_item = max(4, movements // items + 1)
    days = min(300, max(30, per_item * 3 // 5))
    began = time.perf_counter()
    with Ledger.open(url, create_tables=True) as ledger:
        create_read_models(ledger.application)
        seed_recall(ledger)
        for outlet in range(OUTLETS):
            for sku in range(SKUS_PER_OUTLET):
                seed_item(ledger, outlet, (outlet * 7 + sku) % (SKUS_PER_OUTLET * 5), per_item,
                          days)
            if (outlet + 1) % 10 == 0:
                print(f"  seeded {outlet + 1}/{OUTLETS} outlets, "
                      f"{time.perf_counter() - began:.0f} s", file=sys.stderr)
        seeded = time.perf_counter()
        head = ledger.application.recorder.max_notification_id() or 0
        models = ReadModels(ledger.application)
        models.catch_up()
        projected = time.perf_counter()
        # What autovacuum would soon do after a bulk load: the planner's statistics.
        with models.transaction() as cursor:
            cursor.execute("ANALYZE")
    return {"events": head, "days": days, "seed_s": round(seeded - began, 1),
            "project_s": round(projected - seeded, 1)}


def time_reads(url: str, repeats: int) -> dict[str, Any]:
    """Median and spread (ms) of each read, as the service answers it."""
    month_end = TODAY - timedelta(days=1)
    month_start = month_end - timedelta(days=29)
    with Ledger.open(url) as ledger:
        models = ReadModels(ledger.application)
        reads = LotReads(models)

        def answered(query: Callable[[], object]) -> Callable[[], object]:
            def read() -> object:
                models.catch_up_if_permitted(workers=1)
                return query()
            return read

        cases = {
            "trace": answered(lambda: reads.trace(RECALL_SKU, RECALL_LOT)),
            "expiring": answered(lambda: reads.expiring(timedelta(days=30))),
            "report": answered(lambda: reads.movements(month_start, month_end,
                                                       outlet_name(42))),
        }
        sizes = {"trace": reads.trace(RECALL_SKU, RECALL_LOT)["movements"],
                 "expiring": len(reads.expiring(timedelta(days=30))),
                 "report": len(reads.movements(month_start, month_end, outlet_name(42)))}
        figures: dict[str, Any] = {}
        for name, read in cases.items():
            for _ in range(3):
                read()
            samples = []
            for _ in range(repeats):
                began = time.perf_counter()
                read()
                samples.append((time.perf_counter() - began) * 1000)
            ordered = sorted(samples)
            figures[name] = {"median_ms": round(statistics.median(samples), 2),
                             "min_ms": round(ordered[0], 2), "max_ms": round(ordered[-1], 2),
                             "p90_ms": round(ordered[int(0.9 * (len(ordered) - 1))], 2),
                             "rows": sizes[name], "repeats": repeats}
        figures["plans"] = plans(models, reads, month_start, month_end)
    return figures


def plans(models: ReadModels, reads: LotReads, first: date, last: date) -> dict[str, str]:
    """The first line of each read's plan on PostgreSQL (which index answers it)."""
    from projections import lot_queries as q

    statements = {
        "trace": (q.TRACE, [RECALL_SKU, RECALL_LOT]),
        "expiring": (q.EXPIRING + " ORDER BY expires_on, sku, batch_id, outlet LIMIT 10000",
                     [TODAY + timedelta(days=30)]),
        "report_opening": (q.OPENING + " AND i.outlet = %s", ["business", first,
                                                              outlet_name(42)]),
        "report_period": (q.PERIOD + " AND i.outlet = %s GROUP BY i.outlet, i.sku",
                          ["business", first, last, outlet_name(42)]),
    }
    found = {}
    with models.transaction() as cursor:
        for name, (statement, params) in statements.items():
            cursor.execute("EXPLAIN " + reads.sql(statement), params)
            lines = [str(next(iter(dict(row).values()))) for row in cursor.fetchall()]
            found[name] = " | ".join(line.strip() for line in lines
                                     if "Index" in line or "Scan" in line)[:300]
    return found


def rebuild_each(url: str) -> dict[str, float]:
    """Seconds to rebuild each projection alone (what each read model costs to keep)."""
    seconds = {}
    with Ledger.open(url) as ledger:
        models = ReadModels(ledger.application)
        for name in ("stock", "journal", "lots", "periods"):
            began = time.perf_counter()
            models.rebuild([name])
            seconds[name] = round(time.perf_counter() - began, 1)
    return seconds


def verdicts(large: dict[str, Any], small: dict[str, Any]) -> list[tuple[str, bool, str]]:
    result = []
    for name in ("trace", "expiring", "report"):
        big, little = large[name]["median_ms"], small[name]["median_ms"]
        result.append((f"{name} under {TARGET_MS:.0f} ms at {large['events']:,} movements",
                       big < TARGET_MS, f"{big} ms"))
        result.append((f"{name} within {TARGET_RATIO:.0f}x of {small['events']:,} movements",
                       big <= TARGET_RATIO * little, f"{big} / {little} ms = "
                                                     f"{big / little:.2f}x"))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m benchmarks.lot_reads",
                                     description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--movements", type=int, default=1_000_000)
    parser.add_argument("--small", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="100,000 against 10,000")
    parser.add_argument("--url", help="PostgreSQL admin URL (default: $LEDGER_BENCH_POSTGRES_URL)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--rebuild-each", action="store_true",
                        help="also time a rebuild of each projection alone, large store")
    options = parser.parse_args(argv)
    if options.quick:
        options.movements = 100_000
    admin = admin_url(options.url)
    results: dict[str, Any] = {"machine": describe(), "started": NOW.isoformat()}
    for label, movements in (("small", options.small), ("large", options.movements)):
        with throwaway_database(admin, f"lotreads_{label}") as url:
            print(f"building {movements:,} movements ...", file=sys.stderr)
            built = build(url, movements)
            print(f"  {built}", file=sys.stderr)
            results[label] = {**built, **time_reads(url, options.repeats)}
            if options.rebuild_each and label == "large":
                results[label]["rebuild_s"] = rebuild_each(url)
    checks = verdicts(results["large"], results["small"])
    results["verdicts"] = [{"check": c, "pass": ok, "figure": f} for c, ok, f in checks]
    if options.json:
        print(json.dumps(results, indent=2, default=str))
    else:
        for label in ("small", "large"):
            figures = results[label]
            print(f"{label}: {figures['events']:,} events over {figures['days']} days "
                  f"(seeded in {figures['seed_s']} s, projected in {figures['project_s']} s)")
            for name in ("trace", "expiring", "report"):
                f = figures[name]
                print(f"  {name:<9} median {f['median_ms']:>7} ms  p90 {f['p90_ms']:>7}  "
                      f"min {f['min_ms']:>7}  max {f['max_ms']:>7}  ({f['rows']} rows, "
                      f"{f['repeats']} runs)")
            for name, plan in figures["plans"].items():
                print(f"  plan {name}: {plan}")
            if "rebuild_s" in figures:
                print(f"  rebuild alone (s): {figures['rebuild_s']}")
        for check, ok, figure in checks:
            print(f"{'PASS' if ok else 'FAIL'}  {check}: {figure}")
    return 0 if all(ok for _, ok, _ in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
