"""Valuation reads, by replay of the events: value on hand at any moment, the cost of goods
sold, each movement's cost for the export, and value conservation for `audit verify`.

Every figure comes from one fold (`ledger.domain.valuation.ItemCosting`), run over each stock
item's events in position order; nothing here reads a projection, and nothing is kept
between calls, so a report for a past moment is the fold stopped there.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, cast
from uuid import UUID

from ledger import events
from ledger.app.audit import Finding, notifications
from ledger.domain import identity
from ledger.domain.costing import CostPiece, PieceValue, first_units, value_of
from ledger.domain.errors import InvariantBroken
from ledger.domain.movements import journal_rows
from ledger.domain.store_settings import StoreSettings
from ledger.domain.valuation import CostedMovement, ItemCosting, money, pieces_text
from ledger.store.application import LedgerApplication
from ledger.store.decoding import UnreadableEvent

COST_COLUMNS = ("value", "unvalued", "cost_pieces")
"""The columns the export adds to each journal row: the row's value (signed as its quantity,
in the store's currency; empty while units sold into negative wait for a cost), its units
without a cost, and the cost pieces (`B1:8@10;B1:2@16`)."""

TRANSIT = "(in transit)"
"""The outlet column of stock dispatched and not yet received."""


def store_currency(app: LedgerApplication) -> str | None:
    found = app.load(identity.store_settings_id())
    return found.currency if isinstance(found, StoreSettings) else None


@dataclass
class _Fold:
    """Every stock item's costing fold, by stream, and the transfers in transit."""

    items: dict[UUID, ItemCosting] = field(default_factory=dict)
    in_transit: dict[str, CostedMovement] = field(default_factory=dict)
    position: int = 0


_Costed = tuple[int, object, list[CostedMovement], ItemCosting | None]


def costed_movements(app: LedgerApplication, *, as_of: datetime | None = None,
                     fold: _Fold | None = None, every_event: bool = False,
                     skip_unreadable: bool = False,
                     on_broken: Callable[[int, str], None] | None = None
                     ) -> Iterator[_Costed]:
    """Each stock item event recorded by `as_of` (all, if None), in position order, with its
    costed movements and its stock item's fold after it (`every_event`: the other events
    too, with no movements and no fold). An event that cannot be read raises
    `UnreadableEvent`, unless `skip_unreadable` (the export, which marks it in its place). A
    stream whose events cannot be folded (its history broken) raises `InvariantBroken`, or is
    passed to `on_broken` with its position and why, and left out from there on."""
    state = fold if fold is not None else _Fold()
    as_of = _aware(as_of)
    # A stream stops at its first event recorded after `as_of` (its later ones come after),
    # or at one that cannot be read or folded.
    stopped: set[UUID] = set()
    for notification in notifications(app):
        stream = cast(UUID, notification.originator_id)
        try:
            event = app.mapper.to_domain_event(notification)
        except UnreadableEvent:
            if not skip_unreadable:
                raise
            # What the row did is not known, so neither is anything its stream costs after
            # it: the stream is left out from here (the row itself is reported elsewhere).
            state.items.pop(stream, None)
            stopped.add(stream)
            continue
        if stream in stopped:
            continue
        if as_of is not None and getattr(event, "timestamp", as_of) > as_of:
            stopped.add(stream)
            continue
        if isinstance(event, events.StockItemOpened):
            state.items[stream] = ItemCosting()
        costing = state.items.get(stream)
        if costing is None:
            if every_event:
                yield notification.id, event, [], None
            continue
        try:
            rows = costing.apply(notification.id, event)
        except Exception as error:  # whatever a broken history makes the fold raise
            # The stream cannot be costed from here on (a row deleted or moved, a forged
            # event): the caller decides whether that fails its read or is a finding.
            del state.items[stream]
            stopped.add(stream)
            problem = (f"position {notification.id}: stream {stream} cannot be costed from "
                       f"here: {type(error).__name__}: {error}")
            if on_broken is None:
                raise InvariantBroken(problem) from error
            on_broken(notification.id, problem)
            continue
        state.position = notification.id
        for row in rows:
            if row.kind == "transferred" and row.transfer_id is not None:
                if row.direction < 0:
                    state.in_transit[row.transfer_id] = row
                else:
                    state.in_transit.pop(row.transfer_id, None)
        yield notification.id, event, rows, costing


# --------------------------------------------------------------------------- valuation


def valuation_report(app: LedgerApplication, *, outlet: str | None = None,
                     as_of: datetime | None = None) -> dict[str, Any]:
    """Quantity and value on hand per stock item and per outlet, with totals, at `as_of` (what
    the ledger had recorded by then; now if None). Units without a cost are `unvalued`, never
    counted as zero; stock in transit is listed apart, at the cost it left with. Sales into
    negative stock still waiting for a cost are `pending_valuation`; those a later arrival
    (or count) valued, `valued_late`."""
    fold = _Fold()
    for _ in costed_movements(app, as_of=as_of, fold=fold):
        pass
    items: list[dict[str, Any]] = []
    outlets: dict[str, dict[str, Any]] = {}
    pending: list[dict[str, Any]] = []
    late: list[dict[str, Any]] = []
    for costing in fold.items.values():
        item = costing.item
        if item is None or (outlet is not None and item.outlet != outlet):
            continue
        value = costing.on_hand()
        items.append({"outlet": item.outlet, "sku": item.sku, "quantity": item.on_hand,
                      "value": money(value.value), "unvalued": value.unvalued,
                      "shortfall": item.shortfall})
        totals = outlets.setdefault(item.outlet, {"outlet": item.outlet, "quantity": 0,
                                                  "value": Decimal(0), "unvalued": 0})
        totals["quantity"] += item.on_hand
        totals["value"] += value.value
        totals["unvalued"] += value.unvalued
        pending += [{"outlet": item.outlet, "sku": item.sku, "sale_id": p.sale_id,
                     "quantity": p.quantity} for p in costing.pending]
        late += [{"outlet": item.outlet, "sku": item.sku, "sale_id": sale_id,
                  "quantity": quantity} for sale_id, quantity in costing.late_valued.items()]
    items.sort(key=lambda row: (row["outlet"], row["sku"]))
    transit = [
        {"transfer_id": row.transfer_id, "from_outlet": row.outlet, "to_outlet": row.to_outlet,
         "sku": row.sku, "quantity": row.quantity, "value": money(row.value.value),
         "unvalued": row.value.unvalued}
        for row in fold.in_transit.values()
        if outlet is None or outlet in (row.outlet, row.to_outlet)]
    transit.sort(key=lambda row: str(row["transfer_id"]))
    transit_value = sum((row.value.value for row in fold.in_transit.values()
                         if outlet is None or outlet in (row.outlet, row.to_outlet)),
                        Decimal(0))
    outlet_rows = [{**row, "value": money(row["value"])}
                   for _, row in sorted(outlets.items())]
    return {
        "currency": store_currency(app),
        "as_of": as_of.isoformat() if as_of else None,
        "position": fold.position,
        "items": items,
        "outlets": outlet_rows,
        "in_transit": transit,
        "pending_valuation": pending,
        "valued_late": late,
        "totals": {
            "quantity": sum(row["quantity"] for row in items),
            "value": money(sum((Decimal(row["value"]) for row in items), Decimal(0))),
            "unvalued": sum(row["unvalued"] for row in items),
            "in_transit_quantity": sum(row["quantity"] for row in transit),
            "in_transit_value": money(transit_value),
        },
    }


# --------------------------------------------------------------------------- COGS


COGS_COLUMNS = ("type", "date", "occurred_at", "position", "outlet", "sale_id", "sku",
                "kind", "batches", "quantity", "cost", "unvalued", "valued_late",
                "pending", "reference")
"""The columns of `ledger report cogs`: a row per sale line (`type` `line`), then a row per
business day (`type` `day`: its cost in `cost`)."""


def cogs_rows(app: LedgerApplication, *, from_date: date, to_date: date,
              outlet: str | None = None) -> Iterator[dict[str, Any]]:
    """The cost of goods sold from `from_date` to `to_date` (business days, both included):
    a row per sale line (its batches, quantity and cost), a negative row per refund line
    restocked (at the cost its units left with), a row per late valuation of a sale into
    negative stock (`valued_late`, dated when its shortfall was settled), then a total per
    day. Units without a cost are counted in `unvalued`, never as zero cost."""
    days: dict[date, PieceValue] = {}
    for position, _, rows, _ in costed_movements(app):
        for row in rows:
            if row.sale_id is None or (outlet is not None and row.outlet != outlet):
                continue
            if row.kind == "refunded" and not row.pieces:
                continue  # every unit returned was written off: nothing came back
            day = row.occurred_at.astimezone(UTC).date()
            if not from_date <= day <= to_date:
                continue
            sign = -1 if row.kind == "refunded" else 1
            value = row.value
            days[day] = days.get(day, PieceValue()) + PieceValue(sign * value.value,
                                                                  sign * value.unvalued)
            yield {"type": "line", "date": day.isoformat(),
                   "occurred_at": row.occurred_at.isoformat(), "position": position,
                   "outlet": row.outlet, "sale_id": row.sale_id, "sku": row.sku,
                   "kind": {"sold": "sale", "refunded": "refund"}.get(row.kind, row.kind),
                   "batches": pieces_text(row.pieces), "quantity": sign * row.quantity,
                   "cost": money(sign * value.value), "unvalued": sign * value.unvalued,
                   "valued_late": row.kind == "valued late", "pending": row.pending,
                   "reference": row.reference}
    for day in sorted(days):
        total = days[day]
        yield {"type": "day", "date": day.isoformat(), "occurred_at": None, "position": None,
               "outlet": outlet, "sale_id": None, "sku": None, "kind": "total",
               "batches": None, "quantity": None, "cost": money(total.value),
               "unvalued": total.unvalued, "valued_late": None, "pending": None,
               "reference": None}


# --------------------------------------------------------------------------- export


def row_costs(row: tuple[object, ...], costed: list[CostedMovement],
              used: dict[str, int]) -> tuple[object, ...]:
    """`COST_COLUMNS` for one journal row of an event, from the event's costed movements;
    `used` counts, per batch, the units the event's earlier rows were costed with (a
    transfer has a row per batch and cost)."""
    batch_id, quantity = row[5], row[6]
    assert isinstance(quantity, int)
    if batch_id is None:
        late = [piece for movement in costed if movement.kind == "valued late"
                for piece in movement.pieces]
        if not late or quantity <= 0:
            return (None, None, None)
        return _signed(late, 1)
    pieces = [piece for movement in costed if movement.kind != "valued late"
              for piece in movement.pieces if piece.batch_id == batch_id]
    units = abs(quantity)
    skip = used.get(str(batch_id), 0)
    if units == 0 or sum(p.quantity for p in pieces) < skip + units:
        return ("0", 0, "") if units == 0 else (None, None, pieces_text(pieces))
    _, rest = first_units(pieces, skip)
    taken, _ = first_units(rest, units)
    used[str(batch_id)] = skip + units
    return _signed(taken, 1 if quantity > 0 else -1)


def _signed(pieces: list[CostPiece], sign: int) -> tuple[object, ...]:
    value = value_of(pieces)
    return (money(sign * value.value), sign * value.unvalued, pieces_text(pieces))


# --------------------------------------------------------------------------- conservation


def conservation_findings(app: LedgerApplication, limit: int = 100) -> list[Finding]:
    """For every stock item at every position: value received - value of what left + value
    restocked = value on hand (`costing.conservation_problem`); and every sale's recorded
    line costs (`SaleRecorded` v2) equal what its stock items' layers give on replay."""
    findings: list[Finding] = []
    # A sale's stream and its stock items' events are appended together: whichever is read
    # first waits here for the other, so these hold the sales of one append at a time.
    recorded: dict[tuple[str, str], tuple[int, tuple[CostPiece, ...] | None]] = {}
    derived: dict[tuple[str, str], tuple[CostPiece, ...]] = {}

    def compare(position: int, key: tuple[str, str], written: tuple[CostPiece, ...],
                replayed: tuple[CostPiece, ...]) -> None:
        if written != replayed:
            findings.append(Finding(
                "value", position,
                f"sale {key[0]} line {key[1]}: recorded costs {pieces_text(written)}, its "
                f"stock item's layers give {pieces_text(replayed)} on replay"))

    def broken(position: int, problem: str) -> None:
        findings.append(Finding("value", position, problem))

    # An unreadable row is `verify_events`'s finding; its stream is costed no further.
    for position, event, rows, costing in costed_movements(app, every_event=True,
                                                           skip_unreadable=True,
                                                           on_broken=broken):
        if len(findings) >= limit:
            break
        if isinstance(event, events.SaleRecorded):
            for line in event.lines:
                key = (event.sale_id, line.sku)
                if line.costs is None:  # a sale of version 1: no costs to compare
                    if derived.pop(key, None) is None:
                        recorded[key] = (position, None)
                    continue
                if key in derived:
                    compare(position, key, tuple(line.costs), derived.pop(key))
                else:
                    recorded[key] = (position, tuple(line.costs))
            continue
        if costing is None:
            continue
        item = costing.item
        problem = costing.conservation_problem()
        if problem is not None and item is not None:
            findings.append(Finding("value", position,
                                    f"{item.outlet}/{item.sku}: value not conserved: {problem}"))
        if isinstance(event, events.StockSold):
            key = (event.sale_id, event.sku)
            pieces = next((row.pieces for row in rows if row.kind == "sold"), ())
            if key in recorded:
                at, written = recorded.pop(key)
                if written is not None:
                    compare(at, key, written, pieces)
            else:
                derived[key] = pieces
    return findings


def export_with_costs(app: LedgerApplication, rows: Iterator[tuple[object, ...]]
                      ) -> Iterator[tuple[object, ...]]:
    """The export's journal rows (`ledger.app.audit.export_rows`, in position order) each
    with `COST_COLUMNS` appended, costed by the same fold as every valuation read."""
    costed: dict[int, list[CostedMovement]] = {}
    fold = costed_movements(app, skip_unreadable=True)
    reached = 0
    used: dict[str, int] = {}
    current = 0
    for row in rows:
        position = row[0]
        assert isinstance(position, int)
        while reached < position:
            try:
                reached, event, movements, _ = next(fold)
            except StopIteration:
                break
            if list(journal_rows(reached, event)):
                costed[reached] = movements
        # Rows of one event are consecutive: once the export is past it, it is forgotten.
        for done in [p for p in costed if p < position]:
            del costed[done]
        movements_here = costed.get(position)
        if movements_here is None:
            yield (*row, None, None, None)
            continue
        if position != current:
            current, used = position, {}
        yield (*row, *row_costs(row, movements_here, used))


def _aware(moment: datetime | None) -> datetime | None:
    if moment is not None and moment.utcoffset() is None:
        return moment.replace(tzinfo=UTC)
    return moment
