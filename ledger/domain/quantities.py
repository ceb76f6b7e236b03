"""Plain value types shared by the pure core and the events.

Quantities are integers in the SKU's base unit (tablets, millilitres, pieces): exact, and cheap to
add up. Money is `Decimal`. Neither is ever a binary float.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date
from typing import Literal

from pydantic import BaseModel, ConfigDict, computed_field

AllocationPolicy = Literal["fefo", "fifo"]

MAX_QUANTITY = 1_000_000_000
"""An upper bound on any one quantity: far above a real movement, far below int64 overflow."""


class BatchTake(BaseModel):
    """A quantity taken from (or returned to) one batch."""

    model_config = ConfigDict(frozen=True)

    batch_id: str
    quantity: int


class BatchIdentity(BaseModel):
    """What a batch keeps wherever it goes: its id, expiry, unit cost and a quantity."""

    model_config = ConfigDict(frozen=True)

    batch_id: str
    quantity: int
    expires_on: date | None = None
    unit_cost: str | None = None


class BatchCount(BaseModel):
    """One batch in a stock take: what the ledger expected and what was counted."""

    model_config = ConfigDict(frozen=True)

    batch_id: str
    expected: int
    counted: int

    @computed_field  # type: ignore[prop-decorator]
    @property
    def variance(self) -> int:
        return self.counted - self.expected


def shelved(
    batches: Iterable[BatchIdentity], shortfall_settled: int
) -> list[tuple[BatchIdentity, int]]:
    """How much of each arriving batch goes onto the shelf once `shortfall_settled` of the
    arrival has settled stock sold into negative (taken from the first batches first)."""
    remaining = shortfall_settled
    placed = []
    for batch in batches:
        settled = min(remaining, batch.quantity)
        remaining -= settled
        placed.append((batch, batch.quantity - settled))
    return placed
