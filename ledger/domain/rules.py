"""The ledger's decisions other than allocation: refund limits, expiry, counts, shortfalls.

Pure functions over plain data; they raise typed refusals and never touch storage.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date

from ledger.domain.errors import RefundExceedsSale
from ledger.domain.quantities import BatchCount, BatchTake


def refundable_by_batch(
    sold: Sequence[BatchTake], refunded: Mapping[str, int]
) -> list[BatchTake]:
    """What may still come back to each batch: sold minus already refunded, in sale order."""
    sold_by_batch: dict[str, int] = {}
    for take in sold:
        sold_by_batch[take.batch_id] = sold_by_batch.get(take.batch_id, 0) + take.quantity
    remaining = []
    for batch_id, quantity in sold_by_batch.items():
        left = quantity - refunded.get(batch_id, 0)
        if left < 0:
            raise ValueError(f"batch {batch_id} refunded {-left} more than it sold")
        if left > 0:
            remaining.append(BatchTake(batch_id=batch_id, quantity=left))
    return remaining


def allocate_refund(
    sale_id: str,
    sku: str,
    sold: Sequence[BatchTake],
    refunded: Mapping[str, int],
    quantity: int,
) -> tuple[BatchTake, ...]:
    """Send `quantity` back to the batches the sale drew from, never past what they gave.

    Batches are refilled in the order the sale took from them.
    """
    refundable = refundable_by_batch(sold, refunded)
    total = sum(take.quantity for take in refundable)
    if quantity > total:
        raise RefundExceedsSale(sale_id, sku, quantity, total)
    remaining = quantity
    takes = []
    for take in refundable:
        back = min(take.quantity, remaining)
        takes.append(BatchTake(batch_id=take.batch_id, quantity=back))
        remaining -= back
        if remaining == 0:
            break
    return tuple(takes)


def allocate_refund_with_shortfall(
    sale_id: str,
    sku: str,
    sold: Sequence[BatchTake],
    refunded: Mapping[str, int],
    unallocated_left: int,
    quantity: int,
) -> tuple[tuple[BatchTake, ...], int]:
    """Split a refund between the batches the sale drew from and the part of the sale that was
    sold into negative stock (`unallocated_left` of it not yet refunded).

    Batches are refilled first; what is left settles the shortfall the sale created. Never more
    than was sold minus what was already refunded.
    """
    from_batches = sum(take.quantity for take in refundable_by_batch(sold, refunded))
    if quantity > from_batches + unallocated_left:
        raise RefundExceedsSale(sale_id, sku, quantity, from_batches + unallocated_left)
    to_batches = min(quantity, from_batches)
    takes = allocate_refund(sale_id, sku, sold, refunded, to_batches) if to_batches else ()
    return takes, quantity - to_batches


@dataclass(frozen=True, slots=True)
class BatchExpiry:
    batch_id: str
    expires_on: date | None
    quantity: int
    already_expired: bool


def batches_due_to_expire(batches: Iterable[BatchExpiry], as_of: date) -> list[BatchTake]:
    """Batches holding stock whose expiry date has come by `as_of`, never yet expired.

    A batch is expired exactly once, ever: an already-expired batch is never due again, even if
    stock later comes back to it.
    """
    return [
        BatchTake(batch_id=batch.batch_id, quantity=batch.quantity)
        for batch in batches
        if batch.expires_on is not None
        and batch.expires_on <= as_of
        and batch.quantity > 0
        and not batch.already_expired
    ]


def count_batches(
    expected: Mapping[str, int], counted: Mapping[str, int], *, whole_sku: bool
) -> tuple[BatchCount, ...]:
    """Variance of a stock take against what the ledger expected at that moment.

    A whole-SKU count sets every batch: a batch it does not list is counted as zero.
    """
    batch_ids = list(counted)
    if whole_sku:
        batch_ids += [batch_id for batch_id, quantity in expected.items()
                      if batch_id not in counted and quantity != 0]
    return tuple(
        BatchCount(batch_id=b, expected=expected.get(b, 0), counted=counted.get(b, 0))
        for b in batch_ids
    )


def settle_shortfall(shortfall: int, received: int) -> int:
    """How much of a receipt goes to settle stock sold into negative before it arrived."""
    return min(shortfall, received)
