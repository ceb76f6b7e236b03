"""The CRUD baselines the suite's one (`crud_baseline`) was chosen from, and the alternating
runs that chose it.

    python -m benchmarks.crud_variants [--variants a,b] [--repeats 4] [--seconds 3]
                                       [--cases distinct,hot] [--batches 100]

Every variant runs the old `deduct_stock()`'s statements in one transaction per sale, with
every live batch of the SKU at the outlet locked FOR UPDATE in FEFO order and updated in
place; they differ in how the rows are keyed and in how many round trips a sale takes:

* `text-keys`: the suite's baseline until 2026-12-04, batches, stock rows and movements keyed
  by the SKU's and the outlet's text; `BEGIN`, the locking `SELECT`, the batch `UPDATE`, the
  movement `INSERT`, the stock row's re-sum and `COMMIT`, one round trip each;
* `int-keys`: the same six round trips on the Django models' integer keys;
* `int-keys-pipelined`: the same statements in two round trips (psycopg's pipeline mode:
  `BEGIN` and the `SELECT`; then the writes and `COMMIT`), the least a client that decides
  the FEFO walk itself can make;
* `int-keys-function`: the same statements in a server-side function, one round trip
  (`crud_baseline.DEDUCT_STOCK`), called through psycopg;
* `int-keys-function-libpq`: the same call, prepared once per connection and sent straight
  over libpq, without psycopg's cursor and parameter adaptation (what stockledger's append
  does, `ledger/store/postgres/prepared.py`): the suite's baseline since 2026-12-04;
* `django-fks`: `int-keys-function` with the movement's foreign keys to its outlet and
  variation declared as Django declares them (deferrable, initially deferred).

Each repetition gives every variant a fresh database per case, seeded alike, then a
`CHECKPOINT` and a pause, in an order that rotates by repetition (`throughput.run_fresh`).
"""

from __future__ import annotations

import argparse
import os
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

import psycopg

from benchmarks import crud_baseline as base
from benchmarks.database import admin_url

# --- text keys: the suite's baseline until 2026-12-04 -----------------------------------------

TEXT_SCHEMA = """
CREATE TABLE IF NOT EXISTS batch (
    id bigserial PRIMARY KEY,
    variation text NOT NULL,
    outlet text NOT NULL,
    quantity integer NOT NULL CHECK (quantity >= 0),
    expiry_date date,
    received_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS batch_variation_outlet_expiry
    ON batch (variation, outlet, expiry_date);
CREATE TABLE IF NOT EXISTS location_stock (
    variation text NOT NULL,
    outlet text NOT NULL,
    quantity integer NOT NULL DEFAULT 0,
    PRIMARY KEY (variation, outlet)
);
CREATE TABLE IF NOT EXISTS stock_movement (
    id bigserial PRIMARY KEY,
    variation text NOT NULL,
    outlet text NOT NULL,
    batch_id bigint NOT NULL REFERENCES batch (id),
    movement_type text NOT NULL,
    quantity integer NOT NULL,
    reference text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS stock_movement_variation_outlet_created
    ON stock_movement (variation, outlet, created_at);
"""
TEXT_LOCK_LIVE_BATCHES = """
SELECT id, quantity FROM batch
WHERE variation = %s AND outlet = %s AND quantity > 0 AND expiry_date > %s
ORDER BY expiry_date, received_at, id
FOR UPDATE
"""
TEXT_INSERT_MOVEMENTS = """
INSERT INTO stock_movement (variation, outlet, batch_id, movement_type, quantity, reference)
SELECT %s, %s, t.id, 'sale', -t.taken, %s
FROM unnest(%s::bigint[], %s::integer[]) AS t(id, taken)
"""
TEXT_RESUM_STOCK = """
UPDATE location_stock SET quantity = (
    SELECT COALESCE(SUM(quantity), 0) FROM batch
    WHERE variation = %s AND outlet = %s AND quantity > 0 AND expiry_date > %s)
WHERE variation = %s AND outlet = %s
"""
TEXT_AVAILABLE = """
SELECT COALESCE(SUM(quantity), 0) FROM batch
WHERE variation = %s AND outlet = %s AND expiry_date > %s AND quantity > 0
"""


def _text_create_schema(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(TEXT_SCHEMA)


def _text_seed_batches(conn: psycopg.Connection[Any], outlet: str, sku: str, count: int,
                       quantity: int, first_expiry: date,
                       received_at: datetime | None = None) -> None:
    start = received_at or datetime.now().astimezone()
    with conn.transaction(), conn.cursor() as cur:
        with cur.copy("COPY batch (variation, outlet, quantity, expiry_date, received_at) "
                      "FROM STDIN") as copy:
            for i in range(count):
                copy.write_row((sku, outlet, quantity, first_expiry + timedelta(days=i // 10),
                                start + timedelta(microseconds=i)))
        cur.execute(
            "INSERT INTO location_stock (variation, outlet, quantity) VALUES (%s, %s, 0) "
            "ON CONFLICT DO NOTHING", (sku, outlet))
        cur.execute(TEXT_RESUM_STOCK, (sku, outlet, date.today(), sku, outlet))


def fefo_takes(rows: list[tuple[int, int]], quantity: int, what: str) -> tuple[list[int],
                                                                                 list[int]]:
    """The batch ids and quantities a sale of `quantity` takes from `rows` (id, quantity),
    in their order, as `deduct_stock()` walked them; InsufficientStock if they hold too
    little."""
    ids: list[int] = []
    takes: list[int] = []
    remaining = quantity
    for batch_id, batch_quantity in rows:
        if remaining == 0:
            break
        taken = min(batch_quantity, remaining)
        ids.append(batch_id)
        takes.append(taken)
        remaining -= taken
    if remaining:
        raise base.InsufficientStock(f"{what}: asked {quantity}, short {remaining}")
    return ids, takes


def _text_sell(conn: psycopg.Connection[Any], outlet: str, sku: str, quantity: int,
               reference: str) -> None:
    today = date.today()
    with conn.transaction(), conn.cursor() as cur:
        rows = cur.execute(TEXT_LOCK_LIVE_BATCHES, (sku, outlet, today)).fetchall()
        ids, takes = fefo_takes(rows, quantity, f"{outlet}/{sku}")
        cur.execute(base.UPDATE_BATCHES, (ids, takes))
        cur.execute(TEXT_INSERT_MOVEMENTS, (sku, outlet, reference, ids, takes))
        cur.execute(TEXT_RESUM_STOCK, (sku, outlet, today, sku, outlet))


def _text_available(conn: psycopg.Connection[Any], outlet: str, sku: str) -> int:
    row = conn.execute(TEXT_AVAILABLE, (sku, outlet, date.today())).fetchone()
    return int(row[0]) if row else 0


# --- integer keys, the statements sent from the client ---------------------------------------

def _known_ids(conn: psycopg.Connection[Any], outlet: str, sku: str) -> tuple[int, int]:
    found = base.ids(conn, outlet, sku)
    if found is None:
        raise base.InsufficientStock(f"{outlet}/{sku}: no such stock item")
    return found


def _int_sell(conn: psycopg.Connection[Any], outlet: str, sku: str, quantity: int,
              reference: str) -> None:
    outlet_id, variation_id = _known_ids(conn, outlet, sku)
    today = date.today()
    with conn.transaction(), conn.cursor() as cur:
        rows = cur.execute(base.LOCK_LIVE_BATCHES, (variation_id, outlet_id, today)).fetchall()
        ids, takes = fefo_takes(rows, quantity, f"{outlet}/{sku}")
        cur.execute(base.UPDATE_BATCHES, (ids, takes))
        cur.execute(base.INSERT_MOVEMENTS, (variation_id, outlet_id, reference, ids, takes))
        cur.execute(base.RESUM_STOCK, (variation_id, outlet_id, today, variation_id,
                                       outlet_id))


def _int_sell_pipelined(conn: psycopg.Connection[Any], outlet: str, sku: str, quantity: int,
                        reference: str) -> None:
    outlet_id, variation_id = _known_ids(conn, outlet, sku)
    today = date.today()
    with conn.pipeline(), conn.cursor() as cur:
        cur.execute("BEGIN")
        # Fetching forces the pipeline's first sync: BEGIN and the SELECT in one round trip.
        rows = cur.execute(base.LOCK_LIVE_BATCHES, (variation_id, outlet_id, today)).fetchall()
        try:
            ids, takes = fefo_takes(rows, quantity, f"{outlet}/{sku}")
        except base.InsufficientStock:
            cur.execute("ROLLBACK")
            raise
        cur.execute(base.UPDATE_BATCHES, (ids, takes))
        cur.execute(base.INSERT_MOVEMENTS, (variation_id, outlet_id, reference, ids, takes))
        cur.execute(base.RESUM_STOCK, (variation_id, outlet_id, today, variation_id,
                                       outlet_id))
        cur.execute("COMMIT")
        # The pipeline's exit sends the writes and COMMIT with the second sync.


# --- integer keys, the function called through psycopg's cursor -----------------------------

def _function_sell_psycopg(conn: psycopg.Connection[Any], outlet: str, sku: str,
                           quantity: int, reference: str) -> None:
    outlet_id, variation_id = _known_ids(conn, outlet, sku)
    try:
        conn.execute(base.CALL_DEDUCT_STOCK, (variation_id, outlet_id, quantity, reference,
                                              date.today()))
    except psycopg.Error as error:
        if error.sqlstate == base.INSUFFICIENT_STOCK_STATE:
            raise base.InsufficientStock(f"{outlet}/{sku}: {error.diag.message_primary}"
                                         ) from None
        raise


# --- Django's declared foreign keys -----------------------------------------------------------

DJANGO_FKS = """
ALTER TABLE stock_movement
    ADD FOREIGN KEY (variation_id) REFERENCES variation (id) DEFERRABLE INITIALLY DEFERRED,
    ADD FOREIGN KEY (outlet_id) REFERENCES outlet (id) DEFERRABLE INITIALLY DEFERRED
"""


def _django_create_schema(url: str) -> None:
    base.create_schema(url)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(DJANGO_FKS)


SellFn = Callable[[psycopg.Connection[Any], str, str, int, str], None]


@dataclass(frozen=True)
class Variant:
    """One way of keying the rows and sending a sale's statements."""

    create_schema: Callable[[str], None]
    seed_batches: Callable[..., None]
    sell: SellFn
    available: Callable[[psycopg.Connection[Any], str, str], int]


def _integer_keys(sell: SellFn) -> Variant:
    return Variant(base.create_schema, base.seed_batches, sell, base.available)


VARIANTS: dict[str, Variant] = {
    "text-keys": Variant(_text_create_schema, _text_seed_batches, _text_sell, _text_available),
    "int-keys": _integer_keys(_int_sell),
    "int-keys-pipelined": _integer_keys(_int_sell_pipelined),
    "int-keys-function": _integer_keys(_function_sell_psycopg),
    "int-keys-function-libpq": _integer_keys(base.sell),
    "django-fks": Variant(_django_create_schema, base.seed_batches, _function_sell_psycopg,
                          base.available),
}


def variant(name: str) -> Variant:
    """The variant named; `baseline` is the suite's (`crud_baseline`)."""
    if name == "baseline":
        return Variant(base.create_schema, base.seed_batches, base.sell, base.available)
    return VARIANTS[name]


def main(argv: list[str] | None = None) -> int:
    from benchmarks import throughput

    parser = argparse.ArgumentParser(prog="python -m benchmarks.crud_variants",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--cases", default="distinct,hot")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--batches", type=int, default=100,
                        help="live batches per SKU (default 100)")
    parser.add_argument("--settle", type=float, default=2.0,
                        help="seconds of pause after each case's CHECKPOINT")
    parser.add_argument("--postgres-url", default=None)
    options = parser.parse_args(argv)
    names = options.variants.split(",")
    cases = options.cases.split(",")
    server = admin_url(options.postgres_url)
    rates: dict[tuple[str, str], list[float]] = {}
    print("| repetition | case | variant | sales/s | p50 ms | p99 ms | failed | "
          "decrease == sold | load average |")
    print("| ---: | --- | --- | ---: | ---: | ---: | ---: | --- | --- |", flush=True)
    for repeat in range(options.repeats):
        order = names[repeat % len(names):] + names[:repeat % len(names)]
        for case in cases:
            for name in order:
                run = throughput.run_fresh(server, f"crud:{name}", case, options.clients,
                                           options.seconds, batches=options.batches,
                                           settle_seconds=options.settle)
                rates.setdefault((case, name), []).append(run["rate"])
                load = " ".join(f"{x:.1f}" for x in os.getloadavg())
                print(f"| {repeat + 1} | {case} | {name} | {run['rate']:,.0f} | "
                      f"{run['p50_ms']:.2f} | {run['p99_ms']:.2f} | {run['failed']} | "
                      f"{run['consistent']} | {load} |", flush=True)
    print()
    reference = names[0]
    print(f"| case | variant | sales/s median (runs) | ratio to {reference} per repetition |")
    print("| --- | --- | --- | --- |")
    for case in cases:
        for name in names:
            runs = rates[(case, name)]
            ratios = ", ".join(f"{r / b:.2f}" for r, b in zip(runs, rates[(case, reference)],
                                                              strict=True))
            print(f"| {case} | {name} | {statistics.median(runs):,.0f} "
                  f"({', '.join(f'{r:,.0f}' for r in runs)}) | {ratios} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
