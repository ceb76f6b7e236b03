"""Snapshots: a stock item's state at a version, so that loading it never replays a long history.

A snapshot is a cache of what the events say, kept in the store's snapshot table; its class is
recorded by topic with every row (`ledger.stock_item:StockItemSnapshot` for those written
before the layered layout, resolved through `ledger.store.topics`).
"""

from __future__ import annotations

from datetime import date
from typing import Any

from eventsourcing.domain import Snapshot
from eventsourcing.utils import get_topic

from ledger.domain.stock_item import BatchState, StockItem


class StockItemSnapshot(Snapshot):
    """A stock item's state at a version, so that loading it never replays a long history.

    The state is kept compact (a row per batch); the live-batch orders are rebuilt on load.
    """

    @classmethod
    def take(cls, aggregate: Any) -> StockItemSnapshot:
        assert isinstance(aggregate, StockItem)
        state = {
            "outlet": aggregate.outlet,
            "sku": aggregate.sku,
            "batches": [
                [b.batch_id, b.quantity, b.expires_on.isoformat() if b.expires_on else None,
                 b.unit_cost, b.received_seq, b.expired]
                for b in aggregate.batches.values()
            ],
            "shortfall": aggregate.shortfall,
            "reorder_level": aggregate.reorder_level,
            "next_received_seq": aggregate.next_received_seq,
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
        state = self.state
        item = object.__new__(StockItem)
        item.__dict__.update({"_id": self.originator_id, "_version": self.originator_version,
                              "_pending_events": [], "_created_on": state["created_on"],
                              "_modified_on": state["modified_on"]})
        StockItem.__init__(item, state["outlet"], state["sku"])
        item.shortfall = state["shortfall"]
        item.reorder_level = state["reorder_level"]
        item.next_received_seq = state["next_received_seq"]
        for batch_id, quantity, expires_on, unit_cost, received_seq, expired in state["batches"]:
            batch = BatchState(batch_id, 0, date.fromisoformat(expires_on) if expires_on else None,
                               unit_cost, received_seq, expired)
            item.batches[batch_id] = batch
            item._change_batch(batch, quantity)
        return item
