"""A sale as recorded, and what has been refunded of it: the ground for refund limits."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from eventsourcing.domain import Aggregate

from ledger import events
from ledger.domain.identity import sale_id as sale_stream_id
from ledger.domain.quantities import BatchTake


class Sale(Aggregate):
    def __init__(self, sale_id: str, outlet: str, lines: Sequence[events.SaleLine]) -> None:
        self.sale_id = sale_id
        self.outlet = outlet
        self.lines = {line.sku: line for line in lines}
        self.refunded: dict[str, dict[str, int]] = {line.sku: {} for line in lines}
        self.unallocated_refunded: dict[str, int] = {}
        self.refund_ids: list[str] = []

    @classmethod
    def record(
        cls,
        sale_id: str,
        outlet: str,
        lines: Sequence[events.SaleLine],
        occurred_at: datetime,
        actor: str,
        idempotency_key: str,
    ) -> events.SaleRecorded:
        """The event that records a sale: the first of the sale's stream."""
        return events.created_event(
            cls, events.SaleRecorded, sale_stream_id(sale_id),
            sale_id=sale_id,
            outlet=outlet,
            lines=tuple(lines),
            occurred_at=occurred_at,
            actor=actor,
            idempotency_key=idempotency_key,
        )

    def clone(self) -> Sale:
        other = object.__new__(Sale)
        other.__dict__.update(self.__dict__)
        other.__dict__["_pending_events"] = []
        other.lines = dict(self.lines)
        other.refunded = {sku: dict(batches) for sku, batches in self.refunded.items()}
        other.unallocated_refunded = dict(self.unallocated_refunded)
        other.refund_ids = list(self.refund_ids)
        return other

    def sold_takes(self, sku: str) -> tuple[BatchTake, ...]:
        line = self.lines.get(sku)
        return line.takes if line else ()

    def refunded_by_batch(self, sku: str) -> dict[str, int]:
        return self.refunded.get(sku, {})

    def unallocated_left(self, sku: str) -> int:
        """Units of the line sold into negative stock and not yet refunded."""
        line = self.lines.get(sku)
        return (line.unallocated if line else 0) - self.unallocated_refunded.get(sku, 0)

    def refund(
        self,
        refund_id: str,
        lines: Sequence[events.RefundLine],
        occurred_at: datetime,
        actor: str,
        idempotency_key: str,
    ) -> None:
        self.trigger_event(
            events.SaleRefunded,
            refund_id=refund_id,
            lines=tuple(lines),
            occurred_at=occurred_at,
            actor=actor,
            idempotency_key=idempotency_key,
        )

    def record_refund(self, refund_id: str, lines: Sequence[events.RefundLine]) -> None:
        self.refund_ids.append(refund_id)
        for line in lines:
            per_batch = self.refunded.setdefault(line.sku, {})
            for take in (*line.restocked, *line.written_off):
                per_batch[take.batch_id] = per_batch.get(take.batch_id, 0) + take.quantity
            self.unallocated_refunded[line.sku] = (
                self.unallocated_refunded.get(line.sku, 0) + line.unallocated)
