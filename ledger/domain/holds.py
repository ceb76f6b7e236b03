"""Holds on lots: which batches a movement may not take. Pure functions over plain data.

A hold names a lot (a SKU's batch id, the same at every outlet) and a scope: one outlet, or
every outlet (`outlet` None), including outlets and stock items opened later and stock in
transit that arrives later. It lasts from its business time until its release. A movement
dated `at` may not take from a batch held at `at`; "now" reads (available stock, the stock
and batches lists) ask about the holds not yet released.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from ledger.domain.errors import LotAlreadyHeld, LotNotHeld


@dataclass(frozen=True, slots=True)
class Hold:
    """One hold of a lot, as recorded: released once `released_at` is set."""

    batch_id: str
    outlet: str | None
    """The outlet it applies at; None: every outlet."""
    held_at: datetime
    reason: str
    actor: str
    released_at: datetime | None = None
    release_reason: str | None = None

    @property
    def active(self) -> bool:
        return self.released_at is None


def covers(hold: Hold, outlet: str) -> bool:
    """Whether the hold's scope includes `outlet`."""
    return hold.outlet is None or hold.outlet == outlet


def hold_applies(hold: Hold, outlet: str, at: datetime | None) -> bool:
    """Whether `hold` keeps a movement at `outlet` dated `at` from its batch; `at` None asks
    about now: whether the hold is not yet released."""
    if not covers(hold, outlet):
        return False
    if at is None:
        return hold.active
    return hold.held_at <= at and (hold.released_at is None or at < hold.released_at)


def held_batches(holds: Iterable[Hold], outlet: str, at: datetime | None = None) -> frozenset[str]:
    """The batch ids a movement at `outlet` dated `at` (None: now) may not take."""
    return frozenset(h.batch_id for h in holds if hold_applies(h, outlet, at))


def check_can_hold(holds: Iterable[Hold], sku: str, batch_id: str, outlet: str | None) -> None:
    """Refuse a second hold of the same lot in the same scope while the first is on."""
    for hold in holds:
        if hold.active and hold.batch_id == batch_id and hold.outlet == outlet:
            raise LotAlreadyHeld(sku, batch_id, outlet, hold.reason)


def check_can_release(holds: Iterable[Hold], sku: str, batch_id: str,
                      outlet: str | None) -> Hold:
    """The hold a release of `batch_id` in scope `outlet` ends; refused if there is none.

    A release names the scope of its hold: a lot held everywhere is released everywhere, not
    at one outlet (which would leave it held there all the same)."""
    active = [h for h in holds if h.active and h.batch_id == batch_id]
    for hold in active:
        if hold.outlet == outlet:
            return hold
    raise LotNotHeld(sku, batch_id, outlet, tuple(h.outlet for h in active))
