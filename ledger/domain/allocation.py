"""Which batches a sale, transfer or write-off takes from: pure functions over plain data."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date

from ledger.domain.quantities import AllocationPolicy, BatchTake


@dataclass(frozen=True, slots=True)
class BatchStock:
    """The allocation-relevant view of one batch at one outlet."""

    batch_id: str
    quantity: int
    expires_on: date | None
    received_seq: int


@dataclass(frozen=True, slots=True)
class Allocation:
    """The outcome of allocating a quantity: the takes, and what no batch could cover."""

    takes: tuple[BatchTake, ...]
    unallocated: int

    @property
    def allocated(self) -> int:
        return sum(take.quantity for take in self.takes)


def is_sellable(expires_on: date | None, on_date: date) -> bool:
    """A batch is not available on or after its expiry date (the old system allowed the day)."""
    return expires_on is None or on_date < expires_on


def fefo_key(batch: BatchStock) -> tuple[date, int]:
    """First-expiry-first-out; batches without expiry go last, ties by received order."""
    return (batch.expires_on or date.max, batch.received_seq)


def fifo_key(batch: BatchStock) -> tuple[int]:
    return (batch.received_seq,)


def allocate_in_order(batches: Iterable[BatchStock], quantity: int, on_date: date) -> Allocation:
    """Take `quantity` from `batches` in the order given, skipping empty and expired batches.

    Stops as soon as the quantity is covered, so a caller that keeps its batches in policy order
    pays for the batches it touches, not for every live batch.
    """
    if quantity <= 0:
        raise ValueError(f"quantity to allocate must be positive, got {quantity}")
    remaining = quantity
    takes: list[BatchTake] = []
    for batch in batches:
        if batch.quantity <= 0 or not is_sellable(batch.expires_on, on_date):
            continue
        taken = min(batch.quantity, remaining)
        takes.append(BatchTake(batch_id=batch.batch_id, quantity=taken))
        remaining -= taken
        if remaining == 0:
            break
    return Allocation(takes=tuple(takes), unallocated=remaining)


def allocate_fefo(batches: Iterable[BatchStock], quantity: int, on_date: date) -> Allocation:
    return allocate_in_order(sorted(batches, key=fefo_key), quantity, on_date)


def allocate_fifo(batches: Iterable[BatchStock], quantity: int, on_date: date) -> Allocation:
    return allocate_in_order(sorted(batches, key=fifo_key), quantity, on_date)


def allocate(
    batches: Iterable[BatchStock], quantity: int, on_date: date, policy: AllocationPolicy
) -> Allocation:
    """Allocate by the outlet's policy."""
    if policy == "fefo":
        return allocate_fefo(batches, quantity, on_date)
    return allocate_fifo(batches, quantity, on_date)


def available_quantity(batches: Iterable[BatchStock], on_date: date) -> int:
    """Stock that may be sold on `on_date`: positive batches whose expiry date has not come."""
    return sum(
        batch.quantity
        for batch in batches
        if batch.quantity > 0 and is_sellable(batch.expires_on, on_date)
    )
