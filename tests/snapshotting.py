"""Forging a stock item's snapshot state, for the tests that check a forgery is refused."""

from __future__ import annotations

from typing import Any

from ledger.store.snapshots import StockItemSnapshot


def holding(snapshot: StockItemSnapshot, quantity: int) -> dict[str, Any]:
    """The snapshot's state with its only batch holding `quantity` (its last cost layer made
    up the difference)."""
    state = dict(snapshot.state)
    (batch,) = state["batches"]
    *rest, layers = batch
    *earlier, last = layers
    held = sum(layer[2] for layer in layers)
    state["batches"] = [[*rest, [*earlier, [*last[:2], last[2] + quantity - held, *last[3:]]]]]
    return state
