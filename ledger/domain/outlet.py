"""An outlet, its stock policy, and how late a sale it accepts."""

from __future__ import annotations

import re
from datetime import datetime, timedelta

from eventsourcing.domain import Aggregate

from ledger import events
from ledger.domain.errors import LateSaleOutsideWindow
from ledger.domain.identity import outlet_id
from ledger.domain.quantities import AllocationPolicy

UNITS = {"d": 86_400, "h": 3_600, "m": 60, "s": 1}
"""The units a late-sales window is written in, largest first."""
MIN_WINDOW_SECONDS = 60
MAX_WINDOW_SECONDS = 366 * 86_400
"""A window from a minute to a year and a day: a till offline for longer than a year is not
submitting late sales but history, which a count or a correction records."""
_WINDOW = re.compile(r"(\d{1,9})([dhms])")


def parse_window(text: str) -> int | None:
    """A late-sales window as text (`72h`, `3d`, `90m`; `none` for no window) in seconds
    (None for no window); ValueError saying what is wrong."""
    if text.strip().lower() == "none":
        return None
    written = _WINDOW.fullmatch(text.strip().lower())
    if written is None:
        raise ValueError(f"expected a whole number of d, h, m or s (72h, 3d) or none, "
                         f"not {text!r}")
    seconds = int(written.group(1)) * UNITS[written.group(2)]
    if not MIN_WINDOW_SECONDS <= seconds <= MAX_WINDOW_SECONDS:
        raise ValueError(f"{text} lies outside 1m..366d")
    return seconds


def describe_window(seconds: int) -> str:
    """Seconds as the largest unit that divides them (`259200` is `3d`, `90` is `90s`)."""
    for unit, size in UNITS.items():
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    raise AssertionError("every whole number of seconds is a whole number of seconds")


class Outlet(Aggregate):
    """A store or warehouse; it comes into being with its first receipt or policy."""

    def __init__(
        self, outlet: str, allocation_policy: AllocationPolicy, allow_negative: bool
    ) -> None:
        self.outlet = outlet
        self.allocation_policy: AllocationPolicy = allocation_policy
        self.allow_negative = allow_negative
        self.late_sales_window: int | None = None
        """Seconds before the ledger's clock that a sale may be dated; None, any age."""

    @classmethod
    def open(
        cls,
        outlet: str,
        actor: str,
        allocation_policy: AllocationPolicy = "fefo",
        allow_negative: bool = False,
    ) -> Outlet:
        return cls._create(
            events.OutletOpened,
            id=outlet_id(outlet),
            outlet=outlet,
            allocation_policy=allocation_policy,
            allow_negative=allow_negative,
            actor=actor,
        )

    def set_policy(self, allocation_policy: AllocationPolicy | None,
                   allow_negative: bool | None, actor: str) -> None:
        """Change the allocation policy, the negative-stock rule or both; None keeps one as
        it is. The event carries both as they stand after the change."""
        policy = self.allocation_policy if allocation_policy is None else allocation_policy
        negative = self.allow_negative if allow_negative is None else allow_negative
        if (policy, negative) == (self.allocation_policy, self.allow_negative):
            return
        self.trigger_event(
            events.OutletPolicySet,
            allocation_policy=policy,
            allow_negative=negative,
            actor=actor,
        )

    def set_late_sales_window(self, seconds: int | None, actor: str) -> None:
        """Accept sales dated at most `seconds` before the ledger's clock (None: any age)."""
        if seconds == self.late_sales_window:
            return
        self.trigger_event(events.LateSalesWindowSet, seconds=seconds, actor=actor)

    def check_sale_time(self, sale_id: str, occurred_at: datetime, now: datetime) -> None:
        """Refuse a sale dated further back than the outlet's late-sales window."""
        window = self.late_sales_window
        if window is None or occurred_at >= now - timedelta(seconds=window):
            return
        raise LateSaleOutsideWindow(sale_id, self.outlet, occurred_at, now,
                                    describe_window(window))
