"""Snapshots: a stock item's state at a version, so that loading it never replays a long history.

A snapshot is a cache of what the events say, kept in the store's snapshot table; its class is
recorded by topic with every row (`ledger.stock_item:StockItemSnapshot` for those written
before the layered layout, resolved through `ledger.store.topics`).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, datetime
from typing import Any
from uuid import UUID

from eventsourcing.domain import Snapshot
from eventsourcing.persistence import EventStore
from eventsourcing.utils import get_topic

from ledger.domain.layers import Layer
from ledger.domain.stock_item import BatchState, StockItem

FORMAT = 2
"""The state format snapshots are written in: 2 since batches keep cost layers."""


class StockItemSnapshot(Snapshot):
    """A stock item's state at a version, so that loading it never replays a long history.

    The state is kept compact (a row per batch, with its live cost layers); the live-batch
    orders are rebuilt on load. A snapshot written before cost layers (class version 1) knew
    one cost per batch, not one per receipt, so it cannot stand for the events: it reads back
    marked with format 1, and loads replay the stream instead (`is_current`).
    """

    class_version = 2

    @staticmethod
    def upcast_v1_v2(stored: dict[str, Any]) -> None:
        stored["state"] = {**stored["state"], "format": 1}

    @property
    def is_current(self) -> bool:
        """Whether this snapshot is in the format the stock item is rebuilt from."""
        return bool(self.state.get("format") == FORMAT)

    @classmethod
    def take(cls, aggregate: Any) -> StockItemSnapshot:
        assert isinstance(aggregate, StockItem)
        state = {
            "format": FORMAT,
            "outlet": aggregate.outlet,
            "sku": aggregate.sku,
            "batches": [
                [b.batch_id, b.expires_on.isoformat() if b.expires_on else None,
                 b.received_seq, b.received_at.isoformat() if b.received_at else None,
                 b.expired,
                 [[layer.seq, layer.received_at.isoformat(), layer.quantity, layer.received,
                   layer.unit_cost, layer.source] for layer in b.layers]]
                for b in aggregate.batches.values()
            ],
            "shortfall": aggregate.shortfall,
            "reorder_level": aggregate.reorder_level,
            "next_received_seq": aggregate.next_received_seq,
            "next_layer_seq": aggregate.next_layer_seq,
            "created_on": aggregate.created_on,
            "modified_on": aggregate.modified_on,
        }
        return cls(
            originator_id=aggregate.id,
            originator_version=aggregate.version,
            timestamp=cls.create_timestamp(),
            topic=get_topic(StockItem),
            state=state,
        )

    def mutate(self, _: None) -> StockItem:
        if not self.is_current:
            raise ValueError(
                f"snapshot of {self.originator_id} v{self.originator_version} was written "
                "before cost layers were kept: replay the stream instead")
        state = self.state
        item = object.__new__(StockItem)
        item.__dict__.update({"_id": self.originator_id, "_version": self.originator_version,
                              "_pending_events": [], "_created_on": state["created_on"],
                              "_modified_on": state["modified_on"]})
        StockItem.__init__(item, state["outlet"], state["sku"])
        item.shortfall = state["shortfall"]
        item.reorder_level = state["reorder_level"]
        item.next_received_seq = state["next_received_seq"]
        item.next_layer_seq = state["next_layer_seq"]
        for batch_id, expires_on, received_seq, received_at, expired, layers in state["batches"]:
            batch = BatchState(
                batch_id, date.fromisoformat(expires_on) if expires_on else None, received_seq,
                datetime.fromisoformat(received_at) if received_at else None, expired=expired)
            batch.layers = [
                Layer(seq, datetime.fromisoformat(at), quantity, received, unit_cost, source)
                for seq, at, quantity, received, unit_cost, source in layers]
            item.batches[batch_id] = batch
            item._change_batch(batch, sum(layer.quantity for layer in batch.layers))
        return item


class CurrentSnapshots:
    """The snapshot store as loads see it: a snapshot in an earlier format is left out, so
    the stream is replayed from its events (the next snapshot is written in the current
    format)."""

    def __init__(self, store: EventStore[UUID]) -> None:
        self.store = store

    def get(self, originator_id: UUID, gt: int | None = None, lte: int | None = None,
            desc: bool = False, limit: int | None = None) -> Iterator[Any]:
        for snapshot in self.store.get(originator_id, gt=gt, lte=lte, desc=desc, limit=limit):
            if not isinstance(snapshot, StockItemSnapshot) or snapshot.is_current:
                yield snapshot
