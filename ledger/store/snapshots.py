"""Snapshots: a stock item's state at a version, so that loading it never replays a long history.

A snapshot is a cache of what the events say, kept in the store's snapshot table; its class is
recorded by topic with every row (`ledger.stock_item:StockItemSnapshot` for those written
before the layered layout, resolved through `ledger.store.topics`).

A snapshot is never trusted on its own word: anyone who can write the snapshot table (the
application role may insert) could otherwise make a till decide on stock the events do not
give. So each snapshot is bound to the events it summarises: it records the global position of
the event at its version and a digest over its stream, version, position, topic and state
(`snapshot_digest`). A load uses it only if the digest matches and the event at its version is
at that position (`ledger.store.repository`); `ledger audit verify` replays every snapshotted
stream and compares each snapshot's state with the events' (`ledger.app.audit`).

The digest is not keyed: it detects a snapshot edited, copied to another version or stream, or
written by older code, not one forged by someone who recomputes it. Such a forgery is found by
the auditor's replay, not by the load (`docs/design.md`, "Snapshots and long streams").
"""

from __future__ import annotations

import hashlib
import json
from datetime import date, datetime
from typing import Any
from uuid import UUID

from eventsourcing.domain import Snapshot
from eventsourcing.utils import get_topic

from ledger.domain.stock_item import BatchState, StockItem

DIGEST_VERSION = "stockledger-snapshot-v1"
"""Named in every digest, so that a later encoding can never be mistaken for this one."""


def _canonical_value(value: object) -> object:
    """Dates and times as tagged ISO text: JSON has no type for them, and a tag keeps a date
    from digesting like the string that spells it."""
    if isinstance(value, datetime):
        return {"datetime": value.isoformat()}
    if isinstance(value, date):
        return {"date": value.isoformat()}
    raise TypeError(f"{type(value).__name__} has no canonical encoding")


def snapshot_digest(originator_id: UUID, version: int, position: int, topic: str,
                    state: dict[str, Any]) -> str:
    """The sha256 (hex) a snapshot records: over canonical JSON (keys sorted, no spaces, ASCII)
    of its stream id, version, the position of the event at that version, the topic of the
    class it rebuilds, and its state as the mapper decodes it.

    Canonical rather than the stored bytes, so that the digest does not depend on how the
    library's JSON happens to be written, and an auditor can recompute it from the decoded row.
    """
    canonical = json.dumps(
        {"digest": DIGEST_VERSION, "stream": str(originator_id), "version": version,
         "position": position, "topic": topic, "state": state},
        sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False,
        default=_canonical_value)
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()


class StockItemSnapshot(Snapshot):
    """A stock item's state at a version, so that loading it never replays a long history.

    The state is kept compact (a row per batch); the live-batch orders are rebuilt on load.
    `position` and `digest` bind it to its events (see the module); a snapshot written before
    they existed reads back with both None and is not used.
    """

    position: int | None = None
    """The global position of the stream's event at `originator_version`."""
    digest: str | None = None
    """`snapshot_digest` of this snapshot."""

    @staticmethod
    def state_of(aggregate: StockItem) -> dict[str, Any]:
        """What a snapshot of `aggregate` records: also what the auditor compares with."""
        return {
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

    @classmethod
    def take(cls, aggregate: Any, position: int | None = None) -> StockItemSnapshot:
        """A snapshot of `aggregate`, bound to its events if `position` (that of its event at
        its version) is given; without it, one no load will use (the library's protocol
        takes the aggregate alone)."""
        assert isinstance(aggregate, StockItem)
        state = cls.state_of(aggregate)
        topic = get_topic(StockItem)
        digest = None if position is None else snapshot_digest(
            aggregate.id, aggregate.version, position, topic, state)
        return cls(
            originator_id=aggregate.id,
            originator_version=aggregate.version,
            timestamp=cls.create_timestamp(),
            topic=topic,
            state=state,
            position=position,
            digest=digest,
        )

    @property
    def is_bound(self) -> bool:
        """Whether it records a position or a digest: older code wrote neither."""
        return self.position is not None or self.digest is not None

    def binding_problem(self) -> str | None:
        """Why this snapshot does not stand for the stream, version and state it claims, as
        far as it can tell by itself (the position is checked against the events by the
        caller); None if its digest holds."""
        position, digest = self.position, self.digest
        if position is None and digest is None:
            return "written before snapshots were bound to their events (no position, no digest)"
        if not isinstance(position, int) or isinstance(position, bool) or not isinstance(
                digest, str):
            return "its position or digest is missing or malformed"
        try:
            expected = snapshot_digest(self.originator_id, self.originator_version, position,
                                       self.topic, self.state)
        except (TypeError, ValueError) as error:
            return f"its state cannot be digested ({error})"
        if expected != digest:
            return "its digest does not match its stream, version, position and state"
        return None

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
