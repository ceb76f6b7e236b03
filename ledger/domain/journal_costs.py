"""What each journal row's movement cost, where the events record it (decision 0012).

A cost is signed as the row's quantity (units leaving cost a negative value), in the store's
currency, written as `money` writes it. None means "not recorded": the events say nothing of
it, never that it was free. Recorded, so in the journal:
* receipts, found stock and transfers, from the unit costs their batches carry;
* sale lines, from their sale's `SaleRecorded` version 2 (`SaleLine.costs`), which is another
  stream's event: `costed_journal` joins the two;
* restocked refunds, from `StockRefunded` version 2's `restocked_costs`.
Not recorded, so None: write-offs, expiries, counts and corrections (their costs are derived
from the stock item's layers on replay: `ledger report cogs`, the export's cost columns),
units sold into negative stock (valued when a receipt settles them), version 1 sales and
refunds, and any movement with units received without a cost.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from decimal import Decimal

from ledger import events
from ledger.domain.costing import CostPiece, first_units, value_of
from ledger.domain.movements import Movement, journal_rows, movements
from ledger.domain.quantities import BatchIdentity, shelved
from ledger.domain.valuation import money

SaleLineKey = tuple[str, str]
"""(sale id, SKU): one line of a sale, and the `StockSold` of its stock item."""


def pieces_cost(pieces: Iterable[CostPiece], sign: int) -> str | None:
    """The signed cost of `pieces`; None if any of their units has no recorded cost."""
    value = value_of(pieces)
    return None if value.unvalued else money(sign * value.value)


def movement_costs(event: object, moved: Sequence[Movement]) -> list[str | None]:
    """The cost of each of `event`'s movements (`moved`, in `movements` order) that the event
    itself records; a sale's takes are None here (their costs are in the sale's stream)."""
    costs: list[str | None] = [None] * len(moved)
    if isinstance(event, events.BatchReceived):
        shelf = event.batch.quantity - event.shortfall_settled
        costs = [_unit_cost(event.batch, shelf if m.batch_id is not None
                            else event.shortfall_settled) for m in moved]
    elif isinstance(event, events.TransferDispatched):
        costs = [_unit_cost(batch, -batch.quantity) for batch in event.batches]
    elif isinstance(event, events.TransferReceived):
        placed = shelved(event.batches, event.shortfall_settled)
        costs = [_unit_cost(batch, quantity) for batch, quantity in placed]
        if event.shortfall_settled:
            settled = [_unit_cost(batch, batch.quantity - quantity) for batch, quantity in placed]
            costs.append(None if None in settled
                         else money(sum((Decimal(c) for c in settled if c), Decimal(0))))
    elif isinstance(event, events.StockFound):
        costs = [_unit_cost(event.batch, event.batch.quantity)]
    elif isinstance(event, events.StockRefunded):
        costs = _refund_costs(event, moved)
    if len(costs) != len(moved):
        raise AssertionError(f"{type(event).__name__}: {len(costs)} costs for "
                             f"{len(moved)} movements")
    return costs


def _unit_cost(batch: BatchIdentity, quantity: int) -> str | None:
    if batch.unit_cost is None:
        return None
    return money(Decimal(batch.unit_cost) * quantity)


def _refund_costs(event: events.StockRefunded, moved: Sequence[Movement]) -> list[str | None]:
    # Restocked rows take the recorded pieces of their batch in order (a batch restocked in
    # two takes has its pieces split between them, first units first).
    left: dict[str, list[CostPiece]] = {}
    for piece in event.restocked_costs:
        left.setdefault(piece.batch_id, []).append(piece)
    costs: list[str | None] = []
    for movement in moved:
        pieces = left.get(movement.batch_id or "", [])
        if (movement.kind != "refunded" or movement.batch_id is None
                or sum(p.quantity for p in pieces) < movement.quantity):
            costs.append(None)
            continue
        taken, left[movement.batch_id] = first_units(pieces, movement.quantity)
        costs.append(pieces_cost(taken, 1))
    return costs


def sale_line_costs(event: events.SaleRecorded) -> dict[SaleLineKey, dict[str, str | None]]:
    """Per line of a sale, the signed cost of the units each batch gave it; an empty mapping
    for a line that recorded no costs (version 1)."""
    found: dict[SaleLineKey, dict[str, str | None]] = {}
    for line in event.lines:
        by_batch: dict[str, list[CostPiece]] = {}
        for piece in line.costs or ():
            by_batch.setdefault(piece.batch_id, []).append(piece)
        found[(event.sale_id, line.sku)] = {
            batch_id: pieces_cost(pieces, -1) for batch_id, pieces in by_batch.items()}
    return found


def costed_rows(position: int, event: object,
                moved: Sequence[Movement] | None = None) -> list[tuple[object, ...]]:
    """`journal_rows` of one event, each with its cost as the event records it (a sale's
    takes None: see `costed_journal`)."""
    moved = list(movements(event)) if moved is None else moved
    rows = list(journal_rows(position, event, moved))
    if not rows:
        return rows
    return [(*row, cost) for row, cost in zip(rows, movement_costs(event, moved), strict=True)]


def with_sale_costs(row: tuple[object, ...], costs: Mapping[str, str | None]
                    ) -> tuple[object, ...]:
    """A sold row with the cost its sale recorded for its batch (None for units sold into
    negative stock, which no batch gave)."""
    batch_id = row[5]
    return (*row[:-1], None if batch_id is None else costs.get(str(batch_id)))


def costed_journal(recorded: Iterable[tuple[int, object]]) -> Iterator[tuple[object, ...]]:
    """The costed journal of events in position order: what the journal read model holds.

    A sale's stream and its stock items' `StockSold` are appended together in either order,
    so rows wait (keeping their order) from a `StockSold` until its sale has been read."""
    waiting: list[tuple[object, ...]] = []
    open_lines: dict[SaleLineKey, list[int]] = {}  # indexes into `waiting`
    sales_read: dict[SaleLineKey, dict[str, str | None]] = {}
    for position, event in recorded:
        if isinstance(event, events.SaleRecorded):
            for key, costs in sale_line_costs(event).items():
                indexes = open_lines.pop(key, None)
                if indexes is None:
                    sales_read[key] = costs
                    continue
                for index in indexes:
                    waiting[index] = with_sale_costs(waiting[index], costs)
        rows = costed_rows(position, event)
        if isinstance(event, events.StockSold) and rows:
            key = (event.sale_id, event.sku)
            if key in sales_read:
                line_costs = sales_read.pop(key)
                rows = [with_sale_costs(row, line_costs) for row in rows]
            else:
                open_lines[key] = list(range(len(waiting), len(waiting) + len(rows)))
        waiting.extend(rows)
        if not open_lines:
            yield from waiting
            waiting.clear()
    yield from waiting
