"""Forged events, appended as an attacker with the application's rights would: through the
store's own append (on PostgreSQL its append function, on SQLite the recorder's insert, which
chains the row), so the hash chain is intact and only decoding the row shows it is poison."""

from __future__ import annotations

from uuid import UUID

from eventsourcing.persistence import StoredEvent

from ledger.domain import identity
from ledger.store.application import LedgerApplication

UNKNOWN_TOPIC = ("unknown topic", "ledger.events:StockTeleported",
                 b'{"outlet":"OUT-A","sku":"AMOX-500"}')
NOT_JSON = ("state not JSON", "ledger.events:StockSold", b"\x00\xffnot json{")
WRONG_SHAPE = ("JSON of the wrong shape", "ledger.events:StockSold",
               b'{"outlet":"OUT-A","sku":"AMOX-500","quantity":"lots"}')
POISONS = (UNKNOWN_TOPIC, NOT_JSON, WRONG_SHAPE)
"""(what it is, topic, state) of each kind of forged event the tests append."""


def next_version(app: LedgerApplication, stream: UUID) -> int:
    """The version after the last recorded on `stream` (read raw: the stream may be poisoned
    already)."""
    recorded = app.recorder.select_events(stream, desc=True, limit=1)
    return recorded[0].originator_version + 1 if recorded else 1


def forge(app: LedgerApplication, topic: str, state: bytes, *, outlet: str = "OUT-A",
          sku: str = "AMOX-500") -> int:
    """Append one forged event to the stock item stream of `outlet`/`sku`; its position."""
    stream = identity.stock_item_id(outlet, sku)
    positions = app.recorder.insert_events([StoredEvent(
        originator_id=stream, originator_version=next_version(app, stream), topic=topic,
        state=state)])
    assert positions
    return int(positions[0])
