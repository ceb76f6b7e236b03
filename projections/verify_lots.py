"""Verify the lots and periods read models against the events, as `projections.verify` does
the stock and journal models: each recomputed up to the position it has recorded.

Lot movements are compared row by row in position order, both sides streamed a page at a
time; shelves and day rows are folded into per-row values (memory grows with the number of
lots per outlet and of stock-item days, not with the number of events) and compared by key.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import date, datetime
from typing import Any

from ledger.app.audit import Finding
from ledger.store.application import LedgerApplication
from projections import lots, periods
from projections.store import ReadStore

PAGE_SIZE = 5000
MAX_FINDINGS = 100
Events = Callable[[LedgerApplication, int], Iterator[tuple[int, object]]]
"""The events up to a position, raising on one that cannot be read (`projections.verify`)."""

_TIMES = (lots.MOVEMENT_COLUMNS.index("occurred_at"), lots.MOVEMENT_COLUMNS.index("recorded_at"))


def verify_lots(app: LedgerApplication, store: ReadStore, generation: int, position: int,
                read_events: Events) -> list[Finding]:
    """Differences between the stored lots model and one recomputed from the events."""
    findings = _verify_movements(app, store, generation, position, read_events)
    changes = lots.Changes()
    last_touch: dict[tuple[str, str], int] = {}
    for event_position, event in read_events(app, position):
        lots.fold(changes, event_position, event)
        changes.rows.clear()  # compared above, streamed; only the shelves are kept
        outlet, sku = getattr(event, "outlet", None), getattr(event, "sku", None)
        if outlet is not None and sku is not None:
            last_touch[(sku, outlet)] = event_position
    table = store.tables("lots", generation)["lot_shelves"]
    with store.transaction() as cursor:
        cursor.execute(f"SELECT sku, batch_id, outlet, quantity, expires_on FROM {table}")
        stored = {(r["sku"], r["batch_id"], r["outlet"]):
                  (int(r["quantity"]), _day(r["expires_on"])) for r in cursor.fetchall()}
    expected = {key: (s.quantity, s.expires_on) for key, s in changes.shelves.items()}
    for key in sorted(set(stored) | set(expected)):
        if stored.get(key) != expected.get(key) and len(findings) < MAX_FINDINGS:
            where = last_touch.get((key[0], key[2]))
            findings.append(Finding(
                "lot_shelves", where,
                f"lot_shelves {'/'.join(key)}: stored {stored.get(key)}, expected "
                f"{expected.get(key)} (last event on it at position {where})"))
    return findings


def _day(value: Any) -> date | None:
    """SQLite keeps dates as ISO text."""
    return date.fromisoformat(value) if isinstance(value, str) else value


def _comparable(row: tuple[Any, ...] | None) -> tuple[Any, ...] | None:
    """Times as instants, whichever store kept them."""
    if row is None:
        return None
    values = list(row)
    for index in _TIMES:
        value = values[index]
        if isinstance(value, str):
            value = datetime.fromisoformat(value)
        values[index] = value.timestamp()
    values[6], values[7] = int(values[6]), int(values[7])  # quantity, units
    return tuple(values)


def _stored_movements(store: ReadStore, generation: int) -> Iterator[tuple[Any, ...]]:
    table = store.tables("lots", generation)["lot_movements"]
    columns = ", ".join(lots.MOVEMENT_COLUMNS)
    after = (0, -1)
    while True:
        with store.transaction() as cursor:
            cursor.execute(store.dialect.sql(
                f"SELECT {columns} FROM {table} WHERE (position, seq) > (%s, %s) "
                f"ORDER BY position, seq LIMIT {PAGE_SIZE}"), after)
            rows = [tuple(row[c] for c in lots.MOVEMENT_COLUMNS) for row in cursor.fetchall()]
        yield from rows
        if len(rows) < PAGE_SIZE:
            return
        after = (rows[-1][0], rows[-1][1])


def _verify_movements(app: LedgerApplication, store: ReadStore, generation: int,
                      position: int, read_events: Events) -> list[Finding]:
    stored = _stored_movements(store, generation)
    expected = (row for event_position, event in read_events(app, position)
                for row in lots.lot_rows(event_position, event))
    while True:
        want = _comparable(next(expected, None))
        have = _comparable(next(stored, None))
        if want is None and have is None:
            return []
        if want != have:
            where = min(r[0] for r in (want, have) if r is not None)
            # Rows after a divergence are misaligned: report the first.
            return [Finding("lot_movements", where,
                            f"lot movement at position {where}: stored {_describe(have)}, "
                            f"expected {_describe(want)}")]


def _describe(row: tuple[Any, ...] | None) -> str:
    if row is None:
        return "nothing"
    return str(dict(zip(lots.MOVEMENT_COLUMNS, row, strict=True)))


def verify_periods(app: LedgerApplication, store: ReadStore, generation: int, position: int,
                   read_events: Events) -> list[Finding]:
    """Differences between the stored day rows (each day's movements by kind, net and
    closing balance, on both bases) and those the events make."""
    changes: periods.Changes = {}
    last_touch: dict[tuple[str, str], int] = {}
    for event_position, event in read_events(app, position):
        periods.fold(changes, event)
        outlet, sku = getattr(event, "outlet", None), getattr(event, "sku", None)
        if outlet is not None and sku is not None:
            last_touch[(outlet, sku)] = event_position
    expected: dict[Any, tuple[tuple[int, ...], int, int]] = {
        key: (tuple(row), net, balance)
        for key, (row, net, balance) in periods.balances(changes).items()}
    tables = store.tables("periods", generation)
    columns = ", ".join(periods.COLUMNS)
    with store.transaction() as cursor:
        cursor.execute(f"SELECT basis, outlet, sku, day, {columns}, net, balance "
                       f"FROM {tables['stock_days']}")
        stored: dict[Any, tuple[tuple[int, ...], int, int]] = {
            (r["basis"], r["outlet"], r["sku"], _day(r["day"])):
                (tuple(int(r[c]) for c in periods.COLUMNS), int(r["net"]), int(r["balance"]))
            for r in cursor.fetchall()}
        cursor.execute(f"SELECT outlet, sku FROM {tables['period_items']}")
        stored_items = {(r["outlet"], r["sku"]) for r in cursor.fetchall()}
    findings: list[Finding] = []
    for key in sorted(set(stored) | set(expected), key=lambda k: (k[0], k[1], k[2], str(k[3]))):
        if stored.get(key) != expected.get(key) and len(findings) < MAX_FINDINGS:
            where = last_touch.get((key[1], key[2]))
            findings.append(Finding(
                "stock_days", where,
                f"stock_days {key[0]}/{key[1]}/{key[2]}/{key[3]}: stored (changes, net, "
                f"balance) {stored.get(key)}, expected {expected.get(key)} (last event on "
                f"it at position {where})"))
    expected_items = {(outlet, sku) for _, outlet, sku, _ in changes}
    for outlet, sku in sorted(stored_items ^ expected_items):
        if len(findings) < MAX_FINDINGS:
            listed = "stored but not expected" if (outlet, sku) in stored_items else (
                "expected but missing")
            findings.append(Finding("period_items", last_touch.get((outlet, sku)),
                                    f"period_items {outlet}/{sku}: {listed}"))
    return findings
