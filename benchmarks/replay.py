"""Cold replay of a stock item in a fresh process: time to rebuild it and the process's RSS.

A fresh process has an empty aggregate cache, so loading the stock item reads and applies its
whole history; its peak RSS against an item of 1,000 events shows whether memory stays flat.
"""

from __future__ import annotations

import time
from typing import Any

from benchmarks import scenarios as s
from benchmarks.machine import peak_rss_mib
from benchmarks.workers import run_parallel, same_args


def _replay(index: int, args: Any, start: float, deadline: float) -> dict[str, Any]:
    from ledger import Ledger

    url, sku = args
    with Ledger.open(url) as ledger:
        ledger.stock_item(s.OUTLET, s.SKU_ONE)  # connect and warm the code paths first
        rss_before = peak_rss_mib()
        began = time.perf_counter()
        item = ledger.stock_item(s.OUTLET, sku)
        seconds = time.perf_counter() - began
        return {"seconds": seconds, "version": item.version, "rss_before_mib": rss_before,
                "rss_mib": peak_rss_mib()}


def measure(url: str, sku: str) -> dict[str, Any]:
    return run_parallel(same_args, _replay, [(url, sku)], duration=0.0)[0]
