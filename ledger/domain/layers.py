"""Cost layers: the units of one batch that came onto the shelf together, one layer per arrival.

A batch received twice (1,000 at 1.00, then 100 at 2.00) holds two layers; nothing overwrites
an earlier cost. Every movement that puts units on the shelf makes a layer, stamped with its
business time: a receipt, a transfer's arrival, a refund's restock, a count that finds more
than the ledger expected. Units leave a batch first in, first out: from its layers in the order
they came onto the shelf (business time, then the order they were recorded). A layer is never
refilled, and one that is emptied is dropped.

Why never refilled: then a layer's quantity only ever falls once it has arrived, so the least
it holds at any business time from `t` on is what it holds now, if it had arrived by `t`, and
nothing if it had not. That is exactly what a movement dated `t` may take without taking units
that were not on the shelf then or that have left since (`on_shelf`): a sale dated before a
batch's receipt finds none of it, and a till's late sale cannot take units a later sale took.
Because every take is bounded so, replaying the history by business time never finds a layer
below zero, in whatever order the movements were recorded.

Pure functions over immutable layers; the stock item keeps each batch's live layers sorted by
`layer_key`, so that the layers on the shelf at any moment are a prefix of the list and first
in, first out takes from its front.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal


@dataclass(frozen=True, slots=True)
class Layer:
    """Units of a batch that arrived together, at one unit cost (None: not recorded)."""

    seq: int
    """The stock item's arrival counter: ties of business time go in recorded order."""
    received_at: datetime
    """Business time of the arrival."""
    quantity: int
    """Units of the layer still on the shelf."""
    received: int
    """Units the arrival put on the shelf."""
    unit_cost: str | None
    source: str
    """What made the layer: `receipt DN-1`, `transfer T-1 from O1`, `refund R-1 of sale S-1`,
    `count C-1`."""


def layer_key(layer: Layer) -> tuple[datetime, int]:
    """First in, first out: by business time of arrival, ties in recorded order."""
    return (layer.received_at, layer.seq)


def with_layer(layers: Sequence[Layer], layer: Layer) -> list[Layer]:
    """`layers` (sorted by `layer_key`) with `layer` in its place."""
    placed = list(layers)
    keys = [layer_key(existing) for existing in placed]
    placed.insert(bisect.bisect_right(keys, layer_key(layer)), layer)
    return placed


def on_shelf(layers: Sequence[Layer], at: datetime | None) -> int:
    """Units of these layers (sorted by `layer_key`) that a movement dated `at` may take: those
    of the layers that had arrived by then (all of them when `at` is None)."""
    if not layers:
        return 0
    if at is None or layers[-1].received_at <= at:
        return sum(layer.quantity for layer in layers)
    total = 0
    for layer in layers:
        if layer.received_at > at:
            break
        total += layer.quantity
    return total


def take_first_in(layers: Sequence[Layer],
                  quantity: int) -> tuple[list[Layer], list[tuple[Layer, int]]]:
    """Take `quantity` from the front of `layers` (sorted by `layer_key`): the layers left (an
    emptied one dropped) and what was taken from which layer, in order.

    A take decided by the rules never reaches past the layers on the shelf at its business
    time, which are the front ones. History recorded before those rules (a sale dated before
    its batch's receipt) may reach further; it is applied as recorded, from the next layers.
    """
    left = list(layers)
    return left, consume_first_in(left, quantity)


def consume_first_in(layers: list[Layer], quantity: int) -> list[tuple[Layer, int]]:
    """`take_first_in` on a list the caller owns, changed in place (a stock item's own)."""
    if quantity < 0:
        raise ValueError(f"quantity to take must not be negative, got {quantity}")
    remaining = quantity
    taken: list[tuple[Layer, int]] = []
    while remaining and layers:
        front = layers[0]
        part = min(front.quantity, remaining)
        taken.append((front, part))
        remaining -= part
        if part == front.quantity:
            del layers[0]
        else:
            # Built directly: `dataclasses.replace` costs more than the rest of a sale's take.
            layers[0] = Layer(front.seq, front.received_at, front.quantity - part,
                              front.received, front.unit_cost, front.source)
    if remaining:
        raise ValueError(f"took {quantity}, the layers hold {quantity - remaining}")
    return taken


def costs_taken(taken: Sequence[tuple[Layer, int]]) -> list[tuple[str | None, int]]:
    """What `take_first_in` took, as (unit cost, quantity), consecutive layers of one cost
    merged: the cost layers a transfer carries to its destination."""
    merged: list[tuple[str | None, int]] = []
    for layer, quantity in taken:
        if merged and merged[-1][0] == layer.unit_cost:
            merged[-1] = (layer.unit_cost, merged[-1][1] + quantity)
        else:
            merged.append((layer.unit_cost, quantity))
    return merged


@dataclass(frozen=True, slots=True)
class Valuation:
    """The value of some layers at their own costs, and the units that have no cost."""

    value: Decimal
    """Sum of quantity times unit cost over the layers that have a cost."""
    unvalued: int
    """Units of layers without a cost: reported as unvalued, never as worth zero."""


def valuation(layers: Sequence[Layer]) -> Valuation:
    """The layers' value at their own unit costs (exact decimals)."""
    value = Decimal(0)
    unvalued = 0
    for layer in layers:
        if layer.unit_cost is None:
            unvalued += layer.quantity
        else:
            value += Decimal(layer.unit_cost) * layer.quantity
    return Valuation(value, unvalued)


def common_cost(layers: Sequence[Layer]) -> str | None:
    """The unit cost every one of these layers has, or None if they have none, lack one, or
    differ (then only the layers tell the cost)."""
    costs = {layer.unit_cost for layer in layers}
    if len(costs) != 1:
        return None
    return next(iter(costs))
