"""Verify the read models: recompute them from the events and compare with what is stored.

Each projection is recomputed up to the position it has recorded, so a runner that is merely
behind is not a mismatch. The journal is compared row by row in position order, both sides
streamed a page at a time; the stock tables are folded into per-row totals (memory grows with
the number of stock items and batches, not with the number of events) and compared by key.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

from eventsourcing.persistence import MapperDeserialisationError

from ledger.app.audit import Finding, notifications
from ledger.domain.movements import JOURNAL_COLUMNS, journal_rows
from ledger.store.application import LedgerApplication
from projections import generations, stock_levels, tracking
from projections.store import ReadStore
from projections.verify_lots import verify_lots, verify_periods

PAGE_SIZE = 5000
Rows = dict[tuple[Any, ...], tuple[Any, ...]]
MAX_FINDINGS = 100


def verify_read_models(app: LedgerApplication) -> list[Finding]:
    store = ReadStore(app)
    live = generations.generations(store)
    positions = tracking.positions(store, live)
    findings: list[Finding] = []
    head = store.head()
    for name, position in positions.items():
        if position > head:
            findings.append(Finding(
                "event_store", head + 1,
                f"projection {name} has processed position {position}, but the event store "
                f"ends at {head}: events were removed from its end"))
    try:
        # A read model a store has not set up yet (one added by a later version, before
        # `ledger init`) holds nothing that could disagree with the events: it is skipped.
        if "journal" in live:
            findings += _verify_journal(app, store, live["journal"], positions["journal"])
        if "stock" in live:
            findings += _verify_stock(app, store, live["stock"], positions["stock"])
        if "lots" in live:
            findings += verify_lots(app, store, live["lots"], positions["lots"], _events)
        if "periods" in live:
            findings += verify_periods(app, store, live["periods"], positions["periods"],
                                       _events)
    except UnreadableEvent as unreadable:
        findings.append(Finding("read_models", unreadable.position,
                                f"position {unreadable.position} cannot be read as an event, "
                                f"so the read models cannot be recomputed: {unreadable}"))
    return findings[:MAX_FINDINGS]


class UnreadableEvent(Exception):
    def __init__(self, position: int, error: Exception) -> None:
        super().__init__(str(error).splitlines()[0])
        self.position = position


def _events(app: LedgerApplication, position: int) -> Iterator[tuple[int, object]]:
    for notification in notifications(app, 1, position):
        try:
            event = app.mapper.to_domain_event(notification)
        except (MapperDeserialisationError, ValueError) as error:
            raise UnreadableEvent(notification.id, error) from error
        yield notification.id, event


def _normalise(value: Any) -> Any:
    """Dates as ISO text, as SQLite stores them."""
    return value.isoformat() if hasattr(value, "isoformat") else value


def _stored_journal(store: ReadStore, generation: int) -> Iterator[tuple[Any, ...]]:
    table = store.tables("journal", generation)["journal"]
    columns = ", ".join(JOURNAL_COLUMNS)
    after = (0, -1)
    while True:
        with store.transaction() as cursor:
            cursor.execute(store.dialect.sql(
                f"SELECT {columns} FROM {table} WHERE (position, seq) > (%s, %s) "
                f"ORDER BY position, seq LIMIT {PAGE_SIZE}"), after)
            rows = [tuple(row[c] for c in JOURNAL_COLUMNS) for row in cursor.fetchall()]
        yield from rows
        if len(rows) < PAGE_SIZE:
            return
        after = (rows[-1][0], rows[-1][1])


def _expected_journal(app: LedgerApplication, position: int) -> Iterator[tuple[Any, ...]]:
    for event_position, event in _events(app, position):
        yield from journal_rows(event_position, event)


def _comparable(row: tuple[Any, ...] | None) -> tuple[Any, ...] | None:
    """SQLite keeps times as ISO text; compare both sides as instants."""
    if row is None:
        return None
    values = list(row)
    for index in (7, 8):  # occurred_at, recorded_at
        value = values[index]
        if isinstance(value, str):
            value = datetime.fromisoformat(value)
        values[index] = value.timestamp() if value is not None else None
    return tuple(values)


def _verify_journal(app: LedgerApplication, store: ReadStore, generation: int,
                    position: int) -> list[Finding]:
    stored = _stored_journal(store, generation)
    expected = _expected_journal(app, position)
    findings: list[Finding] = []
    while len(findings) < MAX_FINDINGS:
        want = _comparable(next(expected, None))
        have = _comparable(next(stored, None))
        if want is None and have is None:
            return findings
        if want != have:
            where = min(r[0] for r in (want, have) if r is not None)
            findings.append(Finding(
                "journal", where,
                f"journal row at position {where}: stored {_describe(have)}, "
                f"expected {_describe(want)}"))
            return findings  # rows after a divergence are misaligned; report the first
    return findings


def _describe(row: tuple[Any, ...] | None) -> str:
    if row is None:
        return "nothing"
    return str(dict(zip(JOURNAL_COLUMNS, row, strict=True)))


def _verify_stock(app: LedgerApplication, store: ReadStore, generation: int,
                  position: int) -> list[Finding]:
    changes = stock_levels.Changes()
    last_touch: dict[tuple[Any, ...], int] = {}
    for event_position, event in _events(app, position):
        stock_levels.fold(changes, event)
        outlet, sku = getattr(event, "outlet", None), getattr(event, "sku", None)
        if outlet is not None and sku is not None:
            last_touch[(outlet, sku)] = event_position
    tables = store.tables("stock", generation)
    findings: list[Finding] = []
    with store.transaction() as cursor:
        cursor.execute(f"SELECT outlet, sku, batch_total, shortfall, reorder_level "
                       f"FROM {tables['stock_levels']}")
        stored_levels: Rows = {
            (r["outlet"], r["sku"]):
                (int(r["batch_total"]), int(r["shortfall"]), r["reorder_level"])
            for r in cursor.fetchall()
        }
        cursor.execute(f"SELECT outlet, sku, batch_id, quantity, expires_on, expired "
                       f"FROM {tables['batches']}")
        stored_batches: Rows = {
            (r["outlet"], r["sku"], r["batch_id"]):
                (int(r["quantity"]), _normalise(r["expires_on"]), bool(r["expired"]))
            for r in cursor.fetchall()
        }
    expected_levels: Rows = {
        key: (total, shortfall, changes.reorder_levels.get(key))
        for key, (total, shortfall) in changes.levels.items()
    }
    expected_batches: Rows = {
        key: (c.quantity, _normalise(c.expires_on), c.expired)
        for key, c in changes.batches.items()
    }
    for table, stored, expected in (("stock_levels", stored_levels, expected_levels),
                                    ("batches", stored_batches, expected_batches)):
        for key in sorted(set(stored) | set(expected)):
            if stored.get(key) != expected.get(key):
                where = last_touch.get(key[:2])
                findings.append(Finding(
                    table, where,
                    f"{table} {'/'.join(key)}: stored {stored.get(key)}, expected "
                    f"{expected.get(key)} (last event on it at position {where})"))
    return findings
