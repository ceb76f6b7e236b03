"""The CRUD baseline's side of each workload: seed, sale latency and available-stock reads."""

from __future__ import annotations

import psycopg

from benchmarks import crud_baseline as crud
from benchmarks import scenarios as s
from benchmarks.stats import Figure, latency, span_samples


def seed(url: str, sizes: s.Sizes) -> None:
    crud.create_schema(url)
    expiry = s.first_expiry()
    with psycopg.connect(url, autocommit=True) as conn:
        crud.seed_batches(conn, s.OUTLET, s.SKU_100, 100, s.BIG, expiry)
        crud.seed_batches(conn, s.OUTLET, s.SKU_MANY, sizes.many_batches, s.BIG, expiry)
        crud.seed_batches(conn, s.OUTLET, s.SKU_ONE, 1, s.BIG, expiry)
        crud.seed_batches(conn, s.OUTLET, s.SKU_SPAN, 100, 1, expiry)
        conn.execute("VACUUM ANALYZE batch")


def sale_latencies(url: str, sizes: s.Sizes) -> dict[str, Figure]:
    figures: dict[str, Figure] = {}
    counter = iter(range(10**9))
    with psycopg.connect(url, autocommit=True) as conn:
        def sale(sku: str, quantity: int = 1) -> None:
            crud.sell(conn, s.OUTLET, sku, quantity, f"crud-{next(counter)}")

        figures["crud.sale.span1_of_100"] = latency(
            "CRUD sale, 1-batch span, 100 live batches", lambda: sale(s.SKU_100),
            sizes.latency_repeats)
        figures["crud.sale.span100"] = Figure(
            "CRUD sale, 100-batch span", "ms", span_samples(
                sizes.span_repeats, sale,
                lambda: crud.seed_batches(conn, s.OUTLET, s.SKU_SPAN, 100, 1, s.first_expiry()),
                s.SKU_SPAN))
        figures["crud.sale.10k_batches"] = latency(
            f"CRUD sale, 1-batch span, {sizes.many_batches:,} live batches",
            lambda: sale(s.SKU_MANY), sizes.latency_repeats)
    return figures


def read_latencies(url: str, sizes: s.Sizes) -> dict[str, Figure]:
    with psycopg.connect(url, autocommit=True) as conn:
        return {
            "crud.read.1_batch": latency("CRUD available (SUM), 1 batch",
                                         lambda: crud.available(conn, s.OUTLET, s.SKU_ONE),
                                         sizes.read_repeats),
            "crud.read.10k_batches": latency(
                f"CRUD available (SUM), {sizes.many_batches:,} batches",
                lambda: crud.available(conn, s.OUTLET, s.SKU_MANY), sizes.read_repeats),
        }
