"""What each event did to stock, as signed quantities per batch: the journal's grammar.

Stock sold into negative, and receipts or counts that settle it, are movements without a
batch, so that the sum of a stock item's movements up to any position is its quantity on hand
at that position.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date

from ledger import events
from ledger.domain.quantities import BatchIdentity, shelved


@dataclass(frozen=True, slots=True)
class Movement:
    kind: str
    batch_id: str | None
    quantity: int
    detail: str | None


def movements(event: object) -> Iterator[Movement]:
    """The signed batch movements one event records (none for non-stock events)."""
    if isinstance(event, events.BatchReceived):
        yield Movement("received", event.batch.batch_id,
                       event.batch.quantity - event.shortfall_settled, None)
        if event.shortfall_settled:
            yield Movement("received", None, event.shortfall_settled, "settled shortfall")
    elif isinstance(event, events.StockSold):
        for take in event.takes:
            yield Movement("sold", take.batch_id, -take.quantity, f"sale {event.sale_id}")
        if event.unallocated:
            yield Movement("sold", None, -event.unallocated,
                           f"sale {event.sale_id}: unallocated")
    elif isinstance(event, events.StockRefunded):
        for take in event.restocked:
            yield Movement("refunded", take.batch_id, take.quantity, f"sale {event.sale_id}")
        for take in event.written_off:
            yield Movement("refunded_written_off", take.batch_id, 0,
                           f"sale {event.sale_id}: {take.quantity} returned and written off")
        if event.unallocated_returned and event.unallocated_restocked:
            yield Movement("refunded", None, event.unallocated_returned,
                           f"sale {event.sale_id}: settles shortfall")
        elif event.unallocated_returned:
            yield Movement("refunded_written_off", None, 0,
                           f"sale {event.sale_id}: {event.unallocated_returned} sold into "
                           "negative, returned and written off")
    elif isinstance(event, events.BatchExpired):
        yield Movement("expired", event.batch_id, -event.quantity,
                       f"expired {event.expires_on}")
    elif isinstance(event, events.StockCounted):
        for count in event.counts:
            yield Movement("counted", count.batch_id, count.variance,
                           f"expected {count.expected}, counted {count.counted}")
        if event.shortfall_cleared:
            yield Movement("counted", None, event.shortfall_cleared,
                           "shortfall cleared by count")
    elif isinstance(event, events.StockWrittenOff):
        for take in event.takes:
            yield Movement("written_off", take.batch_id, -take.quantity, event.reason)
    elif isinstance(event, events.TransferDispatched):
        for batch in event.batches:
            yield Movement("transfer_dispatched", batch.batch_id, -batch.quantity,
                           f"to {event.to_outlet}")
    elif isinstance(event, events.TransferReceived):
        for batch, quantity in shelved(event.batches, event.shortfall_settled):
            yield Movement("transfer_received", batch.batch_id, quantity,
                           f"from {event.from_outlet}")
        if event.shortfall_settled:
            yield Movement("transfer_received", None, event.shortfall_settled,
                           f"from {event.from_outlet}: settled shortfall")
    elif isinstance(event, events.StockFound):
        yield Movement("found", event.batch.batch_id, event.batch.quantity,
                       f"found by count {event.count_reference}")
    elif isinstance(event, events.ReceiptCorrected):
        yield from _corrected(event)


def _corrected(event: events.ReceiptCorrected) -> Iterator[Movement]:
    why = f"receipt {event.receipt_reference} corrected: {event.reason}"
    if event.quantity_after != event.quantity_before:
        yield Movement("corrected", event.batch_id, event.quantity_after - event.quantity_before,
                       f"{why} (quantity {event.quantity_before} -> {event.quantity_after})")
    if event.corrected_batch_id is not None:
        yield Movement("corrected", event.batch_id, -event.quantity_moved,
                       f"{why} (moved to batch {event.corrected_batch_id})")
        yield Movement("corrected", event.corrected_batch_id, event.quantity_moved,
                       f"{why} (moved from batch {event.batch_id})")


def arrivals(event: object) -> list[BatchIdentity]:
    """The batches (with expiry and cost) that an event brought to its outlet."""
    if isinstance(event, events.BatchReceived):
        return [event.batch]
    if isinstance(event, events.TransferReceived):
        return list(event.batches)
    if isinstance(event, events.StockFound):
        return [event.batch]
    if isinstance(event, events.ReceiptCorrected) and event.corrected_batch_id is not None:
        return [BatchIdentity(batch_id=event.corrected_batch_id, quantity=event.quantity_moved,
                              expires_on=event.expires_on_after,
                              unit_cost=event.unit_cost_after)]
    return []


def corrected_expiry(event: object) -> tuple[str, str, date | None] | None:
    """(SKU, batch id, new expiry) when `event` corrects a batch's expiry date in place."""
    if (isinstance(event, events.ReceiptCorrected) and event.corrected_batch_id is None
            and event.expires_on_after != event.expires_on_before):
        return event.sku, event.batch_id, event.expires_on_after
    return None


JOURNAL_COLUMNS = ("position", "seq", "kind", "outlet", "sku", "batch_id", "quantity",
                   "occurred_at", "recorded_at", "actor", "reference", "idempotency_key",
                   "sale_id", "detail")
"""The columns of a journal row, in the order `journal_rows` yields them."""


def journal_rows(position: int, event: object,
                 moved: Sequence[Movement] | None = None) -> Iterator[tuple[object, ...]]:
    """One row per batch movement of an event, in `JOURNAL_COLUMNS` order (`moved`: the
    event's movements, if the caller has them already)."""
    if not isinstance(event, events.StockMovement):
        return
    sale_id = getattr(event, "sale_id", None)
    for seq, movement in enumerate(movements(event) if moved is None else moved):
        yield (position, seq, movement.kind, event.outlet, event.sku, movement.batch_id,
               movement.quantity, event.occurred_at, event.timestamp, event.actor,
               event.reference, event.idempotency_key, sale_id, movement.detail)
