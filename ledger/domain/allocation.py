"""Which batches a sale, transfer or write-off takes from: pure functions over plain data."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date
from typing import Any, Protocol

from ledger.domain.costing import CostPiece
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
    costs: tuple[CostPiece, ...] = ()
    """What the takes cost, once a stock item has costed them (`StockItem.sell`)."""

    @property
    def allocated(self) -> int:
        return sum(take.quantity for take in self.takes)


class Batched(Protocol):
    """What the allocation keys read of a batch: the plain `BatchStock` and the stock item's
    own batch state both have it, so that the order production keeps is the order tested."""

    @property
    def batch_id(self) -> str: ...
    @property
    def expires_on(self) -> date | None: ...
    @property
    def received_seq(self) -> int: ...


NO_EXPIRY = date.max.toordinal()
"""The FEFO key of a batch without expiry: after every dated one."""


def is_sellable(expires_on: date | None, on_date: date) -> bool:
    """The one availability rule: a batch is not available on or after its expiry date (the
    old system allowed the day). Allocation, availability, refunds and the read models'
    `available` column all follow it."""
    return expires_on is None or on_date < expires_on


def fefo_key(batch: Batched) -> tuple[int, int, str]:
    """First-expiry-first-out; batches without expiry go last, ties by received order."""
    expiry = batch.expires_on.toordinal() if batch.expires_on else NO_EXPIRY
    return (expiry, batch.received_seq, batch.batch_id)


def fifo_key(batch: Batched) -> tuple[int, str]:
    """First-in-first-out: received order, whatever the expiry."""
    return (batch.received_seq, batch.batch_id)


POLICY_KEYS: dict[AllocationPolicy, Callable[[Batched], tuple[Any, ...]]] = {
    "fefo": fefo_key,
    "fifo": fifo_key,
}
"""One sort key per allocation policy; `allocate_in_order` is the one walker for all of them."""


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


def allocate(
    batches: Iterable[BatchStock], quantity: int, on_date: date, policy: AllocationPolicy
) -> Allocation:
    """Allocate by the outlet's policy: the batches in its key's order, then the walker.

    A stock item keeps its live batches sorted by the same keys as they change, and hands
    them to `allocate_in_order` directly, so that a sale does not sort."""
    return allocate_in_order(sorted(batches, key=POLICY_KEYS[policy]), quantity, on_date)


def allocate_fefo(batches: Iterable[BatchStock], quantity: int, on_date: date) -> Allocation:
    return allocate(batches, quantity, on_date, "fefo")


def allocate_fifo(batches: Iterable[BatchStock], quantity: int, on_date: date) -> Allocation:
    return allocate(batches, quantity, on_date, "fifo")


def available_quantity(batches: Iterable[BatchStock], on_date: date) -> int:
    """Stock that may be sold on `on_date`: positive batches whose expiry date has not come."""
    return sum(
        batch.quantity
        for batch in batches
        if batch.quantity > 0 and is_sellable(batch.expires_on, on_date)
    )
