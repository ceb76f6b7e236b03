"""Late sales from tills that were offline, and the shortfalls they leave. Pure functions.

A sale is *late* when its outlet has a late-sales window (`ledger outlet --late-sales 72h`)
and its business time lies more than `LATE_AFTER` before the ledger's clock (older than the
window it is refused before this, `Outlet.check_sale_time`). A late sale is decided against
the shelf as it was at its business time, and since its goods have already left the shop, one
that finds too little there is recorded with its shortfall whatever the outlet's negative-stock
policy. An outlet without a window takes sales of any date as ordinary sales.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

LATE_AFTER = timedelta(minutes=5)
"""A sale dated further back than this is late: the clock skew a till is allowed ahead of the
ledger (`ledger.app.commands.CLOCK_SKEW`), the other way."""


def is_late_sale(occurred_at: datetime, now: datetime, window_seconds: int | None) -> bool:
    """Whether a sale dated `occurred_at`, decided at `now`, is late at an outlet whose
    late-sales window is `window_seconds` (None: the outlet has none)."""
    return window_seconds is not None and occurred_at < now - LATE_AFTER


def records_shortfall(late: bool, allow_negative: bool) -> bool:
    """Whether a sale short of stock is recorded with its shortfall rather than refused."""
    return late or allow_negative


def restocks_shortfall(write_off: bool, shortfall: int, returned: int) -> bool:
    """Whether units a refund returns that had been sold short of stock (from no batch) go
    back against the stock item's shortfall. Only while the shortfall still covers them: once
    a receipt or count has settled it, the ledger cannot tell which batch they belong to, and
    restocking them would put units on hand that are in no batch; they are written off on
    return instead (a count brings them back in, naming their batch)."""
    return not write_off and returned <= max(shortfall, 0)


@dataclass(frozen=True, slots=True)
class ShortSale:
    """A sale line that left a shortfall: what it could not take from any batch."""

    sale_id: str
    occurred_at: datetime
    recorded_at: datetime
    shortfall: int

    @property
    def late(self) -> bool:
        return self.occurred_at < self.recorded_at - LATE_AFTER


def unsettled(shortfall: int, newest_first: Sequence[ShortSale]) -> list[tuple[ShortSale, int]]:
    """The short sales behind a stock item's unsettled `shortfall`, newest first, each with
    the part of it still open: receipts and counts settle the oldest shortfall first, so the
    open part is the newest sales' (the last one listed partly, if the sum passes it)."""
    left = shortfall
    open_sales: list[tuple[ShortSale, int]] = []
    for sale in newest_first:
        if left <= 0:
            break
        part = min(sale.shortfall, left)
        open_sales.append((sale, part))
        left -= part
    return open_sales
