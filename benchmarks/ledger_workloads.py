"""stockledger's side of each workload, through the public `Ledger` API."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import date

from benchmarks import scenarios as s
from benchmarks.ledger_seed import add_batches, seed_batches, seed_history
from benchmarks.stats import Figure, latency, span_samples
from ledger import Ledger
from projections.queries import available_stock


def seed(ledger: Ledger, sizes: s.Sizes) -> dict[str, float]:
    """Seed every scenario; returns seconds spent per seed, for the report."""
    expiry = s.first_expiry()
    spent: dict[str, float] = {}
    steps: list[tuple[str, Callable[[], None]]] = [
        ("100 batches", lambda: seed_batches(ledger, s.OUTLET, s.SKU_100, 100, s.BIG, expiry)),
        ("many batches", lambda: seed_batches(ledger, s.OUTLET, s.SKU_MANY, sizes.many_batches,
                                              s.BIG, expiry)),
        ("1 batch", lambda: seed_batches(ledger, s.OUTLET, s.SKU_ONE, 1, s.BIG, expiry)),
        ("span batches", lambda: seed_batches(ledger, s.OUTLET, s.SKU_SPAN, 100, 1, expiry)),
        ("1k history", lambda: seed_history(ledger, s.OUTLET, s.SKU_SMALL_HISTORY, 1_000,
                                            expiry)),
        ("history", lambda: seed_history(ledger, s.OUTLET, s.SKU_HISTORY, sizes.history_events,
                                         expiry)),
    ]
    for label, step in steps:
        start = time.perf_counter()
        step()
        spent[label] = time.perf_counter() - start
    return spent


def sale_latencies(ledger: Ledger, sizes: s.Sizes) -> dict[str, Figure]:
    counter = iter(range(10**9))

    def sale(sku: str, quantity: int = 1) -> None:
        ledger.sell(outlet=s.OUTLET, sale_id=f"lat-{next(counter)}", lines=[(sku, quantity)])

    replenished = iter(range(0, 10**9, 100))
    figures = {
        "ledger.sale.span1_of_100": latency(
            "stockledger sale, 1-batch span, 100 live batches", lambda: sale(s.SKU_100),
            sizes.latency_repeats),
        "ledger.sale.span100": Figure(
            "stockledger sale, 100-batch span", "ms",
            span_samples(sizes.span_repeats, sale,
                         lambda: add_batches(ledger, s.OUTLET, s.SKU_SPAN, next(replenished),
                                             100, 1, s.first_expiry()), s.SKU_SPAN)),
        "ledger.sale.10k_batches": latency(
            f"stockledger sale, 1-batch span, {sizes.many_batches:,} live batches",
            lambda: sale(s.SKU_MANY), sizes.latency_repeats),
        "ledger.sale.history": latency(
            f"stockledger sale, {sizes.history_events:,}-event history (warm cache)",
            lambda: sale(s.SKU_HISTORY), sizes.latency_repeats),
    }
    return figures


def read_latencies(ledger: Ledger, sizes: s.Sizes) -> dict[str, Figure]:
    today = date.today()
    figures = {
        "ledger.read.write_model.1_batch": latency(
            "stockledger available (write model), 1 batch",
            lambda: ledger.stock_item(s.OUTLET, s.SKU_ONE).available(today), sizes.read_repeats),
        "ledger.read.write_model.10k_batches": latency(
            f"stockledger available (write model), {sizes.many_batches:,} batches",
            lambda: ledger.stock_item(s.OUTLET, s.SKU_MANY).available(today),
            sizes.read_repeats),
    }
    app = ledger.application
    figures["ledger.read.projection.1_batch"] = latency(
        "stockledger available (projection), 1 batch",
        lambda: available_stock(app, s.OUTLET, s.SKU_ONE), sizes.read_repeats)
    figures["ledger.read.projection.10k_batches"] = latency(
        f"stockledger available (projection), {sizes.many_batches:,} batches",
        lambda: available_stock(app, s.OUTLET, s.SKU_MANY), sizes.read_repeats)
    return figures
