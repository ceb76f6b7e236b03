"""An outlet's stock folded from its movements in any order: what an audit replay computes.

A replay by business time takes the movements dated by a moment, read in recorded order, and
the two orders differ: a till submits a sale late, a receipt is dated back, and a store written
before movements were decided against the shelf as it was at their business time may hold a
sale dated before the receipt of the batch it took from. A fold that created a batch only at
its arrival and then looked the batch up for each later movement failed on such a history
(the `KeyError` of `ledger audit replay --basis business`), and a fold that depended on the
order of its movements in any other way would answer differently for the same moment.

So this fold depends on no order: a batch's identity (its expiry date) is that of its first
arrival, whatever that arrival is dated (`identify`, given every movement read, dated by the
moment or not), and its quantity is the sum of its signed movements (`apply`, given the
movements dated by the moment), which no order changes. A batch whose sum is below zero at the
moment, because more left it by then than had arrived, is listed (`negative_batches`): the
ledger decides every movement against the layers on the shelf at its business time
(`ledger.domain.layers`), so only a history recorded before that rule, or a count dated back,
can show one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Any

from ledger import events
from ledger.domain.allocation import is_sellable
from ledger.domain.movements import arrivals, corrected_expiry, movements


@dataclass
class OutletStock:
    """Stock of one outlet as its folded movements give it, per SKU and batch."""

    outlet: str
    quantities: dict[tuple[str, str], int] = field(default_factory=dict)
    """(SKU, batch id): the sum of the batch's movements folded."""
    shortfalls: dict[str, int] = field(default_factory=dict)
    """SKU: stock sold into negative and not yet settled, as folded."""
    expiries: dict[tuple[str, str], date | None] = field(default_factory=dict)
    skus: set[str] = field(default_factory=set)
    """The SKUs with at least one movement folded (listed even at zero)."""
    held: dict[tuple[str, str], set[str | None]] = field(default_factory=dict)
    """(SKU, batch id): the scopes (an outlet, None: everywhere) it is held in, as folded."""

    def hold_or_release(self, event: events.LotHeld | events.LotReleased) -> None:
        """Fold a hold or release of a lot (any outlet's: a hold everywhere is this one's)."""
        scopes = self.held.setdefault((event.sku, event.batch_id), set())
        if isinstance(event, events.LotHeld):
            scopes.add(event.outlet)
        else:
            scopes.discard(event.outlet)

    def is_held(self, sku: str, batch_id: str) -> bool:
        scopes = self.held.get((sku, batch_id), set())
        return None in scopes or self.outlet in scopes

    def identify(self, event: object) -> None:
        """Learn the identity of the batches `event` brought here (its first arrival sets a
        batch's expiry), whether or not the event itself is folded."""
        if isinstance(event, events.StockMovement) and event.outlet == self.outlet:
            for batch in arrivals(event):
                self.expiries.setdefault((event.sku, batch.batch_id), batch.expires_on)

    def apply(self, event: object) -> None:
        """Fold `event`'s signed movements (an event of another outlet changes nothing)."""
        if not isinstance(event, events.StockMovement) or event.outlet != self.outlet:
            return
        self.skus.add(event.sku)
        expiry = corrected_expiry(event)
        if expiry is not None:
            # A corrected expiry holds from the correction on: before it, the ledger believed
            # the receipt's.
            self.expiries[(expiry[0], expiry[1])] = expiry[2]
        for movement in movements(event):
            if movement.batch_id is None:
                self.shortfalls[event.sku] = (
                    self.shortfalls.get(event.sku, 0) - movement.quantity)
                continue
            key = (event.sku, movement.batch_id)
            self.quantities[key] = self.quantities.get(key, 0) + movement.quantity

    def stock(self, on_date: date) -> list[dict[str, Any]]:
        """Per SKU (sorted): on hand, available on `on_date`, and the batches holding stock
        (or below zero), sorted by id."""
        report = []
        for sku in sorted(self.skus):
            live = sorted((batch_id, quantity) for (s, batch_id), quantity
                          in self.quantities.items() if s == sku and quantity != 0)
            total = sum(quantity for _, quantity in live)
            unsellable = sum(quantity for batch_id, quantity in live if quantity > 0
                             and not is_sellable(self.expiries.get((sku, batch_id)), on_date))
            held = sum(quantity for batch_id, quantity in live if quantity > 0
                       and self.is_held(sku, batch_id)
                       and is_sellable(self.expiries.get((sku, batch_id)), on_date))
            shortfall = self.shortfalls.get(sku, 0)
            row: dict[str, Any] = {
                "sku": sku,
                "on_hand": total - shortfall,
                "available": total - unsellable - held - shortfall,
                "batches": [{"batch_id": batch_id, "quantity": quantity,
                             "expires_on": _iso(self.expiries.get((sku, batch_id)))}
                            for batch_id, quantity in live],
            }
            if any(s == sku for s, _ in self.held):
                # Only a SKU that has had holds says what is held, so that a replay of a
                # store without holds reads as it always has.
                row["held"] = held
                for batch in row["batches"]:
                    batch["held"] = self.is_held(sku, batch["batch_id"])
            report.append(row)
        return report

    def negative_batches(self) -> list[dict[str, Any]]:
        """The batches below zero: more had left them than had arrived, as folded."""
        return [{"sku": sku, "batch_id": batch_id, "quantity": quantity}
                for (sku, batch_id), quantity in sorted(self.quantities.items())
                if quantity < 0]


def _iso(day: date | None) -> str | None:
    return day.isoformat() if day else None
