"""Seed stockledger stock items quickly and correctly.

The first receipt goes through the public API (it opens the outlet and the stock item and leaves
them in the ledger's aggregate cache). Bulk history is then decided by the stock item aggregate
itself, exactly as the API would decide it, and appended in large chunks with
`Ledger.application.save`, so the events are the ones the API would have recorded, minus the
per-command idempotency records nobody will replay.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from ledger import Ledger
from ledger.domain import identity
from ledger.domain.quantities import BatchIdentity
from ledger.domain.stock_item import MovementContext, StockItem

CHUNK = 5_000


def _item(ledger: Ledger, outlet: str, sku: str) -> StockItem:
    item = ledger.application.load(identity.stock_item_id(outlet, sku))
    assert isinstance(item, StockItem)
    return item


def _flush(ledger: Ledger, item: StockItem, force: bool = False) -> None:
    if item.pending_events and (force or len(item.pending_events) >= CHUNK):
        ledger.application.save(item)


def seed_batches(ledger: Ledger, outlet: str, sku: str, count: int, quantity: int,
                 first_expiry: date, tag: str = "B") -> None:
    """`count` batches of `quantity`, expiring a day apart per ten batches from `first_expiry`."""
    if count <= 0:
        return
    ledger.receive(outlet=outlet, sku=sku, batch_id=f"{tag}0", quantity=quantity,
                   expires_on=first_expiry)
    item = _item(ledger, outlet, sku)
    now = datetime.now(UTC)
    for i in range(1, count):
        batch_id = f"{tag}{i}"
        item.receive(
            BatchIdentity(batch_id=batch_id, quantity=quantity,
                          expires_on=first_expiry + timedelta(days=i // 10)),
            MovementContext(now, "bench-seed", batch_id, f"seed:{outlet}:{sku}:{batch_id}"),
        )
        _flush(ledger, item)
    _flush(ledger, item, force=True)


def add_batches(ledger: Ledger, outlet: str, sku: str, start: int, count: int, quantity: int,
                expiry: date, tag: str = "R") -> None:
    """Replenish an existing stock item with `count` more batches in one append."""
    item = _item(ledger, outlet, sku)
    now = datetime.now(UTC)
    for i in range(start, start + count):
        batch_id = f"{tag}{i}"
        item.receive(BatchIdentity(batch_id=batch_id, quantity=quantity, expires_on=expiry),
                     MovementContext(now, "bench-seed", batch_id,
                                     f"seed:{outlet}:{sku}:{batch_id}"))
    _flush(ledger, item, force=True)


def seed_history(ledger: Ledger, outlet: str, sku: str, events: int, expiry: date) -> None:
    """A stock item with `events` past events: one big receipt, then one-unit sales."""
    ledger.receive(outlet=outlet, sku=sku, batch_id="H0", quantity=events * 10,
                   expires_on=expiry)
    item = _item(ledger, outlet, sku)
    now = datetime.now(UTC)
    for i in range(events - 2):  # the opening and the receipt are two events already
        sale_id = f"hist-{i}"
        item.sell(sale_id, 1, "fefo", False,
                  MovementContext(now, "bench-seed", sale_id, f"seed:{sale_id}"))
        _flush(ledger, item)
    _flush(ledger, item, force=True)
