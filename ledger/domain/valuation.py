"""A stock item's history, costed: what each movement cost, and its value on hand after it.

`ItemCosting` folds a stock item's events in stream order through the stock item itself
(the same `apply` that production replays), and costs each movement before it is applied with
the rules of `ledger.domain.costing`: a take costs the layers it leaves, first in, first out
within its batch (`StockItem.costs_of`, the function a sale is costed with when it is
decided); an arrival brings the costs it records. So the costs are derived, deterministically,
from the recorded allocation (docs/decisions/0012): the fold needs no cost it could disagree
with, apart from those a refund (`StockRefunded` v2) and a sale (`SaleRecorded` v2) record.

It also keeps what the stock item does not: the sales into negative stock still pending
valuation, oldest first, valued when a receipt or a transfer settles their shortfall
(`costing.settle_pending`), and the value flows the conservation check adds up.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from ledger import events
from ledger.domain.costing import (
    CostPiece,
    LateValuation,
    PendingSale,
    PieceValue,
    ValueFlows,
    cancel_pending,
    conservation_problem,
    first_units,
    layers_value,
    settle_pending,
    take_costs,
    value_of,
)
from ledger.domain.quantities import BatchIdentity, BatchTake
from ledger.domain.stock_item import StockItem

_Row = Callable[..., "CostedMovement"]


@dataclass(frozen=True, slots=True)
class CostedMovement:
    """One costed movement of a stock item: a row of the costed journal.

    `kind` is the journal's (`received`, `sold`, `refunded`, `expired`, `counted`,
    `written off`, `transferred`), or `valued late` for units of an earlier sale into negative
    stock valued when their shortfall was settled; `direction` is +1 for units onto the
    shelf, -1 for units off it (a late valuation is -1: its value leaves then)."""

    position: int
    occurred_at: datetime
    recorded_at: datetime
    outlet: str
    sku: str
    kind: str
    reference: str
    direction: int
    pieces: tuple[CostPiece, ...]
    sale_id: str | None = None
    pending: int = 0
    """Units of a sale sold into negative stock, left to be valued later."""
    transfer_id: str | None = None
    to_outlet: str | None = None

    @property
    def value(self) -> PieceValue:
        return value_of(self.pieces)

    @property
    def quantity(self) -> int:
        return sum(piece.quantity for piece in self.pieces)


@dataclass
class ItemCosting:
    """The costing fold of one stock item (see the module docstring)."""

    item: StockItem | None = None
    flows: ValueFlows = field(default_factory=ValueFlows)
    pending: list[PendingSale] = field(default_factory=list)
    late_valued: dict[str, int] = field(default_factory=dict)
    """Sale id: units of it valued late so far."""
    layers_on_hand: PieceValue = field(default_factory=PieceValue)
    """The value of the layers on the shelf, kept up to date batch by batch as each event
    changes them (so that checking conservation at every position costs what the event
    touched, not the whole stock item)."""

    def apply(self, position: int, event: object) -> list[CostedMovement]:
        """Cost `event` (the next of this stock item's stream), apply it, and return its
        costed movements."""
        if isinstance(event, events.StockItemOpened):
            self.item = event.mutate(None)
            return []
        item = self.item
        if item is None:
            raise ValueError(f"position {position}: a stock item's event before it opened")
        if not isinstance(event, events.StockMovement):
            event.mutate(item)  # type: ignore[attr-defined]
            return []
        rows = list(self._cost(position, event, item))
        touched = _touched(event)
        if touched is None:
            event.mutate(item)
            self.layers_on_hand = self.on_hand()
        else:
            before = self._value_of_batches(touched)
            event.mutate(item)
            self.layers_on_hand = self.layers_on_hand + self._value_of_batches(touched) - before
        return rows

    def on_hand(self) -> PieceValue:
        """The value of the layers on the shelf now, added up afresh."""
        if self.item is None:
            return PieceValue()
        return _on_hand_of(self.item)

    def conservation_problem(self) -> str | None:
        """Why received - left + restocked is not the value of the layers on hand now, or
        None."""
        return conservation_problem(self.flows, self.layers_on_hand)

    def _value_of_batches(self, batch_ids: set[str]) -> PieceValue:
        assert self.item is not None
        total = PieceValue()
        for batch_id in batch_ids:
            batch = self.item.batches.get(batch_id)
            if batch is not None:
                total = total + layers_value(batch.layers)
        return total

    # ------------------------------------------------------------------ costing

    def _cost(self, position: int, event: events.StockMovement,
              item: StockItem) -> Iterator[CostedMovement]:
        def row(kind: str, direction: int, pieces: Sequence[CostPiece],
                **extra: object) -> CostedMovement:
            return CostedMovement(position, event.occurred_at, event.timestamp, event.outlet,
                                  event.sku, kind, event.reference, direction, tuple(pieces),
                                  **extra)  # type: ignore[arg-type]

        if isinstance(event, events.BatchReceived):
            arriving = [_piece(event.batch)]
            self.flows.received += value_of(arriving)
            yield row("received", +1, arriving)
            yield from self._settle(row, arriving, event.shortfall_settled)
        elif isinstance(event, events.StockSold):
            pieces = item.costs_of(event.takes)
            self.flows.left += value_of(pieces)
            if event.unallocated:
                self.pending.append(PendingSale(event.sale_id, event.unallocated))
            yield row("sold", -1, pieces, sale_id=event.sale_id, pending=event.unallocated)
        elif isinstance(event, events.StockRefunded):
            pieces = tuple(event.restocked_costs)
            self.flows.restocked += value_of(pieces)
            if event.unallocated_restocked and event.unallocated_returned:
                self.pending, not_pending = cancel_pending(
                    self.pending, event.sale_id, event.unallocated_returned)
                # Units of a sale already valued return where another sale is short.
                self.pending, _ = settle_pending(
                    self.pending, [CostPiece(batch_id="", quantity=min(
                        not_pending, sum(p.quantity for p in self.pending)))])
            yield row("refunded", +1, pieces, sale_id=event.sale_id)
        elif isinstance(event, events.BatchExpired):
            pieces = item.costs_of([BatchTake(batch_id=event.batch_id,
                                              quantity=event.quantity)])
            self.flows.left += value_of(pieces)
            yield row("expired", -1, pieces)
        elif isinstance(event, events.StockCounted):
            lost: list[CostPiece] = []
            found: list[CostPiece] = []
            for count in event.counts:
                held = item.batches[count.batch_id].quantity if count.batch_id in \
                    item.batches else 0
                if count.counted < held:
                    lost += take_costs(count.batch_id, item.batches[count.batch_id].layers,
                                       held - count.counted)
                elif count.counted > held:
                    found.append(CostPiece(batch_id=count.batch_id,
                                           quantity=count.counted - held))
            self.flows.left += value_of(lost)
            self.flows.received += value_of(found)
            if lost:
                yield row("counted", -1, lost)
            if found:
                yield row("counted", +1, found)
            if event.shortfall_cleared:
                cleared = min(event.shortfall_cleared, sum(p.quantity for p in self.pending))
                self.pending, late = settle_pending(
                    self.pending, [CostPiece(batch_id="", quantity=cleared)] if cleared else [])
                for valuation in late:
                    yield self._late(row, valuation, counted=True)
        elif isinstance(event, events.StockWrittenOff):
            pieces = item.costs_of(event.takes)
            self.flows.left += value_of(pieces)
            yield row("written off", -1, pieces)
        elif isinstance(event, events.TransferDispatched):
            pieces = tuple(_piece(batch) for batch in event.batches)
            self.flows.left += value_of(pieces)
            yield row("transferred", -1, pieces, transfer_id=event.transfer_id,
                      to_outlet=event.to_outlet)
        elif isinstance(event, events.TransferReceived):
            arriving = [_piece(batch) for batch in event.batches]
            self.flows.received += value_of(arriving)
            yield row("transferred", +1, arriving, transfer_id=event.transfer_id)
            yield from self._settle(row, arriving, event.shortfall_settled)
        else:
            # A movement this fold does not know (a later kind): its value is what it changed
            # on the shelf, so that conservation still holds and the row shows it.
            before = self.on_hand()
            probe = item.clone()
            event.mutate(probe)
            change = _on_hand_of(probe) - before
            if change.value or change.unvalued:
                if change.value >= 0 and change.unvalued >= 0:
                    self.flows.received += change
                else:
                    self.flows.left -= change
            yield row(type(event).__name__, +1, [CostPiece(
                batch_id="", quantity=change.unvalued, unit_cost=None)] if change.unvalued
                else [])

    def _settle(self, row: _Row, arriving: Sequence[CostPiece],
                settled: int) -> Iterator[CostedMovement]:
        if not settled:
            return
        settling, _ = first_units(arriving, settled)
        self.pending, late = settle_pending(self.pending, settling)
        for valuation in late:
            self.flows.left += value_of(valuation.pieces)
            yield self._late(row, valuation)

    def _late(self, row: _Row, valuation: LateValuation, *,
              counted: bool = False) -> CostedMovement:
        units = sum(piece.quantity for piece in valuation.pieces)
        self.late_valued[valuation.sale_id] = self.late_valued.get(valuation.sale_id, 0) + units
        pieces = valuation.pieces
        if counted:
            # A count found the units were never there: nothing arrived to give them a cost.
            pieces = tuple(CostPiece(batch_id="", quantity=units) for _ in (0,) if units)
        return row("valued late", -1, pieces, sale_id=valuation.sale_id)


def _touched(event: events.StockMovement) -> set[str] | None:
    """The batches whose layers `event` changes, or None if this fold does not know."""
    if isinstance(event, events.BatchReceived):
        return {event.batch.batch_id}
    if isinstance(event, events.StockSold | events.StockWrittenOff):
        return {take.batch_id for take in event.takes}
    if isinstance(event, events.StockRefunded):
        return {piece.batch_id for piece in event.restocked_costs}
    if isinstance(event, events.BatchExpired):
        return {event.batch_id}
    if isinstance(event, events.StockCounted):
        return {count.batch_id for count in event.counts}
    if isinstance(event, events.TransferDispatched | events.TransferReceived):
        return {batch.batch_id for batch in event.batches}
    return None


def _piece(batch: BatchIdentity) -> CostPiece:
    return CostPiece(batch_id=batch.batch_id, quantity=batch.quantity, unit_cost=batch.unit_cost)


def _on_hand_of(item: StockItem) -> PieceValue:
    total = PieceValue()
    for batch in item.batches.values():
        total = total + layers_value(batch.layers)
    return total


def pieces_text(pieces: Sequence[CostPiece]) -> str:
    """Pieces as one field: `B1:8@10;B1:2@16` (`?` for no cost)."""
    return ";".join(f"{piece.batch_id}:{piece.quantity}@"
                    f"{'?' if piece.unit_cost is None else piece.unit_cost}"
                    for piece in pieces)


def money(value: Decimal) -> str:
    """A value as the decimal string reports show (never in exponent notation)."""
    return f"{value:f}"
