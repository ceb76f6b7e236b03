"""A transfer between outlets: dispatched stock is in transit until it is received."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from eventsourcing.domain import Aggregate

from ledger import events
from ledger.domain.identity import transfer_id as transfer_stream_id
from ledger.domain.quantities import BatchIdentity


class Transfer(Aggregate):
    def __init__(
        self,
        transfer_id: str,
        from_outlet: str,
        to_outlet: str,
        sku: str,
        batches: Sequence[BatchIdentity],
    ) -> None:
        self.transfer_id = transfer_id
        self.from_outlet = from_outlet
        self.to_outlet = to_outlet
        self.sku = sku
        self.batches = tuple(batches)
        self.received = False

    @classmethod
    def start(
        cls,
        transfer_id: str,
        from_outlet: str,
        to_outlet: str,
        sku: str,
        batches: Sequence[BatchIdentity],
        occurred_at: datetime,
        actor: str,
        idempotency_key: str,
    ) -> Transfer:
        return cls._create(
            events.TransferStarted,
            id=transfer_stream_id(transfer_id),
            transfer_id=transfer_id,
            from_outlet=from_outlet,
            to_outlet=to_outlet,
            sku=sku,
            batches=tuple(batches),
            occurred_at=occurred_at,
            actor=actor,
            idempotency_key=idempotency_key,
        )

    def complete(self, occurred_at: datetime, actor: str) -> None:
        self.trigger_event(events.TransferCompleted, occurred_at=occurred_at, actor=actor)
