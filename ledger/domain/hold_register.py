"""The holds of one SKU's lots, at every outlet: the stream every movement of the SKU reads."""

from __future__ import annotations

from datetime import datetime

from eventsourcing.domain import Aggregate

from ledger import events
from ledger.domain.holds import Hold, check_can_hold, check_can_release, held_batches
from ledger.domain.identity import hold_register_id


class HoldRegister(Aggregate):
    """Every hold ever placed on a batch of one SKU, released or not (docs/decisions/0013).

    One stream per SKU, not per stock item: a hold "everywhere" then applies to outlets and
    stock items opened later, and to transferred stock arriving later, with nothing to copy.
    Holds are kept as an immutable tuple, so a decision copy is a shallow one."""

    def __init__(self, sku: str) -> None:
        self.sku = sku
        self.holds: tuple[Hold, ...] = ()

    @classmethod
    def open(cls, sku: str) -> HoldRegister:
        return cls._create(events.HoldRegisterOpened, id=hold_register_id(sku), sku=sku)

    def held(self, outlet: str, at: datetime | None = None) -> frozenset[str]:
        return held_batches(self.holds, outlet, at)

    def hold(self, batch_id: str, outlet: str | None, reason: str, actor: str,
             occurred_at: datetime, idempotency_key: str) -> None:
        check_can_hold(self.holds, self.sku, batch_id, outlet)
        self.trigger_event(events.LotHeld, sku=self.sku, batch_id=batch_id, outlet=outlet,
                           reason=reason, actor=actor, occurred_at=occurred_at,
                           idempotency_key=idempotency_key)

    def release(self, batch_id: str, outlet: str | None, reason: str, actor: str,
                occurred_at: datetime, idempotency_key: str) -> Hold:
        hold = check_can_release(self.holds, self.sku, batch_id, outlet)
        self.trigger_event(events.LotReleased, sku=self.sku, batch_id=batch_id, outlet=outlet,
                           reason=reason, actor=actor, occurred_at=occurred_at,
                           idempotency_key=idempotency_key)
        return hold

    # ------------------------------------------------------------------ evolution (events)

    def add_hold(self, hold: Hold) -> None:
        self.holds = (*self.holds, hold)

    def end_hold(self, batch_id: str, outlet: str | None, at: datetime, reason: str) -> None:
        self.holds = tuple(
            Hold(h.batch_id, h.outlet, h.held_at, h.reason, h.actor, at, reason)
            if h.active and h.batch_id == batch_id and h.outlet == outlet else h
            for h in self.holds)
