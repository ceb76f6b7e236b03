"""Costing rules: what each movement of stock cost, as pure functions over plain data.

Specific identification across batches, first in first out within one: a sale's allocation
names its batches (`ledger.domain.allocation`), and the units it took of a batch leave from
that batch's cost layers in the order they arrived (`ledger.domain.layers`). So the cost of a
movement is the cost of the units it took, never an average:

* a sale, write-off, expiry, count loss or transfer dispatch costs its `take_costs`;
* a refund restocks the units at the cost they left with (`refund_pieces`): the sale's pieces
  of each batch come back in the order they left, after those already refunded;
* a transfer's arrival brings the pieces its dispatch took, layer by layer;
* units sold into negative stock (no batch to take from) are pending until a receipt or a
  transfer settles the shortfall: they are then valued at the settling units' cost, the oldest
  pending sale first (`settle_pending`), and reported as valued late; a count that clears the
  shortfall values them as unvalued (nothing arrived whose cost they could take);
* units without a recorded cost (a receipt without one, units a count found) stay unvalued
  wherever they go: counted apart, never as worth zero (`PieceValue`).

Money is `Decimal`, exact; a unit cost is kept as the decimal string the receipt recorded.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation

from pydantic import BaseModel, ConfigDict

from ledger.domain.layers import Layer, costs_taken, take_first_in, valuation

MAX_COST_PLACES = 6
"""The most decimal places a unit cost may have in any store (the receipt command's bound)."""


class CostPiece(BaseModel):
    """Units of one batch at one unit cost (None: the units have no recorded cost)."""

    model_config = ConfigDict(frozen=True)

    batch_id: str
    quantity: int
    unit_cost: str | None = None


# --------------------------------------------------------------------------- places


def cost_places(unit_cost: Decimal | str) -> int:
    """How many decimal places a cost is written with (`1.50` has two, `2` none)."""
    try:
        exponent = Decimal(unit_cost).as_tuple().exponent
    except InvalidOperation:
        raise ValueError(f"{unit_cost!r} is not a decimal number") from None
    if not isinstance(exponent, int):
        raise ValueError(f"{unit_cost!r} is not a finite number")
    return max(0, -exponent)


def cost_places_problem(unit_cost: Decimal | str, places: int) -> str | None:
    """Why a unit cost is refused in a store whose costs have `places` decimal places, or
    None. Trailing zeros count as written: `1.500` has three places, as the till sent it."""
    written = cost_places(unit_cost)
    if written > places:
        return (f"{unit_cost} has {written} decimal places; this store's costs have at "
                f"most {places}")
    return None


# --------------------------------------------------------------------------- value


@dataclass(frozen=True, slots=True)
class PieceValue:
    """The value of some pieces at their own costs, and the units that have none."""

    value: Decimal = Decimal(0)
    unvalued: int = 0
    """Units without a recorded cost: reported as unvalued, never as worth zero."""

    def __add__(self, other: PieceValue) -> PieceValue:
        return PieceValue(self.value + other.value, self.unvalued + other.unvalued)

    def __sub__(self, other: PieceValue) -> PieceValue:
        return PieceValue(self.value - other.value, self.unvalued - other.unvalued)


def value_of(pieces: Iterable[CostPiece]) -> PieceValue:
    """Quantity times unit cost summed exactly, units without a cost counted apart."""
    value = Decimal(0)
    unvalued = 0
    for piece in pieces:
        if piece.unit_cost is None:
            unvalued += piece.quantity
        else:
            value += Decimal(piece.unit_cost) * piece.quantity
    return PieceValue(value, unvalued)


def layers_value(layers: Iterable[Layer]) -> PieceValue:
    """What cost layers on a shelf are worth (`ledger.domain.layers.valuation`)."""
    worth = valuation(list(layers))
    return PieceValue(worth.value, worth.unvalued)


# --------------------------------------------------------------------------- takes


def take_costs(batch_id: str, layers: Sequence[Layer], quantity: int) -> list[CostPiece]:
    """What taking `quantity` of a batch from its layers (sorted first in, first out) costs:
    a piece per run of one cost, in the order the units leave. `layers` is not changed."""
    _, taken = take_first_in(layers, quantity)
    return [CostPiece(batch_id=batch_id, quantity=part, unit_cost=unit_cost)
            for unit_cost, part in costs_taken(taken)]


def refund_pieces(batch_id: str, sold: Sequence[CostPiece] | None, already_returned: int,
                  quantity: int) -> list[CostPiece]:
    """The cost pieces `quantity` units of a batch come back at, when a sale took `sold` of it
    and `already_returned` of those units came back before: the sale's pieces in the order
    they left, after those already returned. `sold` is None for a sale recorded before sales
    recorded their costs: its units come back unvalued."""
    if quantity < 0 or already_returned < 0:
        raise ValueError("quantities to return must not be negative")
    if sold is None:
        return [CostPiece(batch_id=batch_id, quantity=quantity, unit_cost=None)] if quantity \
            else []
    skip = already_returned
    remaining = quantity
    pieces: list[CostPiece] = []
    for piece in sold:
        if piece.batch_id != batch_id:
            continue
        available = piece.quantity
        skipped = min(skip, available)
        skip -= skipped
        available -= skipped
        part = min(available, remaining)
        if part:
            pieces.append(CostPiece(batch_id=batch_id, quantity=part, unit_cost=piece.unit_cost))
            remaining -= part
        if not remaining:
            break
    if remaining:
        raise ValueError(f"batch {batch_id}: returning {quantity} after {already_returned}, "
                         f"more than the sale took")
    return pieces


def first_units(pieces: Sequence[CostPiece], quantity: int) -> tuple[list[CostPiece],
                                                                      list[CostPiece]]:
    """`pieces` split after their first `quantity` units: (those units, the rest)."""
    head: list[CostPiece] = []
    tail: list[CostPiece] = []
    remaining = quantity
    for piece in pieces:
        part = min(remaining, piece.quantity)
        remaining -= part
        if part:
            head.append(piece.model_copy(update={"quantity": part}))
        if piece.quantity - part:
            tail.append(piece.model_copy(update={"quantity": piece.quantity - part}))
    if remaining:
        raise ValueError(f"wanted the first {quantity} units of {quantity - remaining}")
    return head, tail


# --------------------------------------------------------------------------- shortfall


@dataclass(frozen=True, slots=True)
class PendingSale:
    """Units of a sale sold into negative stock, not yet valued."""

    sale_id: str
    quantity: int


@dataclass(frozen=True, slots=True)
class LateValuation:
    """Units of a sale into negative stock valued when its shortfall was settled."""

    sale_id: str
    pieces: tuple[CostPiece, ...]
    """At the cost of the units that settled it; unit cost None when a count cleared it."""


def settle_pending(pending: Sequence[PendingSale], settling: Sequence[CostPiece]
                   ) -> tuple[list[PendingSale], list[LateValuation]]:
    """Value pending sales, oldest first, with the units that settle the shortfall (in the
    order they arrived): the sales still pending, and each late valuation made."""
    left = list(pending)
    rest = list(settling)
    late: list[LateValuation] = []
    while left and rest:
        front = left[0]
        available = sum(piece.quantity for piece in rest)
        part = min(front.quantity, available)
        head, rest = first_units(rest, part)
        late.append(LateValuation(front.sale_id, tuple(head)))
        if part == front.quantity:
            del left[0]
        else:
            left[0] = PendingSale(front.sale_id, front.quantity - part)
    if rest:
        raise ValueError(f"{sum(p.quantity for p in rest)} units settle no pending sale")
    return left, late


def cancel_pending(pending: Sequence[PendingSale], sale_id: str,
                   quantity: int) -> tuple[list[PendingSale], int]:
    """A refund returned `quantity` units of `sale_id` that it had sold into negative: they
    leave the pending list (the sale's own first) and are never valued. Returns the list and
    how many of the units were not pending (their shortfall was settled already)."""
    left: list[PendingSale] = []
    remaining = quantity
    for entry in pending:
        if entry.sale_id == sale_id and remaining:
            part = min(entry.quantity, remaining)
            remaining -= part
            if entry.quantity - part:
                left.append(PendingSale(entry.sale_id, entry.quantity - part))
        else:
            left.append(entry)
    return left, remaining


# --------------------------------------------------------------------------- conservation


@dataclass(slots=True)
class ValueFlows:
    """A stock item's value flows since its first movement, for the conservation check:
    received - left + restocked = on hand (value, and unvalued units, each)."""

    received: PieceValue = field(default_factory=PieceValue)
    """Receipts and transfers in, the units that settled a shortfall included."""
    left: PieceValue = field(default_factory=PieceValue)
    """Sales (valued late ones included), write-offs, expiries, count losses, dispatches."""
    restocked: PieceValue = field(default_factory=PieceValue)
    """Refunds put back on the shelf, and units a count found (unvalued)."""

    def expected_on_hand(self) -> PieceValue:
        return self.received - self.left + self.restocked


def conservation_problem(flows: ValueFlows, on_hand: PieceValue) -> str | None:
    """Why the flows do not add up to what is on hand, or None if they do."""
    expected = flows.expected_on_hand()
    if expected == on_hand:
        return None
    return (f"received {flows.received.value} - left {flows.left.value} + restocked "
            f"{flows.restocked.value} = {expected.value} (unvalued {expected.unvalued}), "
            f"but the layers on hand hold {on_hand.value} (unvalued {on_hand.unvalued})")
