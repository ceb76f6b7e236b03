"""Verify the read models: recompute them from the events and compare with what is stored.

Each projection is recomputed up to the position it has recorded, so a runner that is merely
behind is not a mismatch. The journal is compared row by row in position order, both sides
streamed a page at a time; the stock tables are folded into per-row totals (memory grows with
the number of stock items and batches, not with the number of events) and compared by key, as
are the holds not released.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

from eventsourcing.persistence import MapperDeserialisationError
from eventsourcing.utils import get_topic

from ledger import events
from ledger.app.audit import Finding, notifications
from ledger.domain.errors import InvariantBroken
from ledger.domain.journal_costs import costed_journal
from ledger.domain.movements import JOURNAL_COLUMNS as OLD_JOURNAL_COLUMNS
from ledger.store.application import LedgerApplication
from projections import generations, holds, registry, schema, stock_levels, tracking
from projections.journal import COLUMNS as JOURNAL_COLUMNS
from projections.store import ReadStore
from projections.verify_lots import verify_lots, verify_periods

PAGE_SIZE = 5000
HOLD_TOPICS = frozenset(get_topic(event) for event in (events.LotHeld, events.LotReleased))
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
    # A journal an earlier version created (before it kept costs) is checked on the columns
    # it has, until `ledger init` rebuilds it.
    outdated = schema.outdated(store)
    journal_columns = OLD_JOURNAL_COLUMNS if "journal" in outdated else JOURNAL_COLUMNS
    checks: dict[str, Callable[[int, int], list[Finding]]] = {
        "journal": lambda generation, position: _verify_journal(
            app, store, generation, position, journal_columns),
        "stock": lambda generation, position: _verify_stock(app, store, generation, position),
        "holds": lambda generation, position: _verify_holds(app, store, generation, position),
        "lots": lambda generation, position: verify_lots(app, store, generation, position,
                                                         _events),
        "periods": lambda generation, position: verify_periods(app, store, generation,
                                                               position, _events),
    }
    if set(checks) != set(registry.BY_NAME):
        raise InvariantBroken(f"read models without a check: {set(registry.BY_NAME) - set(checks)}")
    try:
        for name, check in checks.items():
            # A read model a store has not set up yet (one added by a later version, before
            # `ledger init`) holds nothing that could disagree with the events: it is skipped.
            if name in live:
                findings += check(live[name], positions[name])
    except UnreadableEvent as unreadable:
        findings.append(Finding("read_models", unreadable.position,
                                f"position {unreadable.position} cannot be read as an event, "
                                f"so the read models cannot be recomputed: {unreadable}"))
    return findings[:MAX_FINDINGS]


class UnreadableEvent(Exception):
    def __init__(self, position: int, error: Exception) -> None:
        super().__init__(str(error).splitlines()[0])
        self.position = position


def _events(app: LedgerApplication, position: int,
            topics: frozenset[str] | None = None) -> Iterator[tuple[int, object]]:
    """The events up to `position` (only those of `topics`, if given: the rest are not
    decoded)."""
    for notification in notifications(app, 1, position):
        if topics is not None and notification.topic not in topics:
            continue
        try:
            event = app.mapper.to_domain_event(notification)
        except (MapperDeserialisationError, ValueError) as error:
            raise UnreadableEvent(notification.id, error) from error
        yield notification.id, event


def _normalise(value: Any) -> Any:
    """Dates as ISO text, as SQLite stores them."""
    return value.isoformat() if hasattr(value, "isoformat") else value


def _stored_journal(store: ReadStore, generation: int,
                    names: tuple[str, ...]) -> Iterator[tuple[Any, ...]]:
    table = store.tables("journal", generation)["journal"]
    columns = ", ".join(names)
    after = (0, -1)
    while True:
        with store.transaction() as cursor:
            cursor.execute(store.dialect.sql(
                f"SELECT {columns} FROM {table} WHERE (position, seq) > (%s, %s) "
                f"ORDER BY position, seq LIMIT {PAGE_SIZE}"), after)
            rows = [tuple(row[c] for c in names) for row in cursor.fetchall()]
        yield from rows
        if len(rows) < PAGE_SIZE:
            return
        after = (rows[-1][0], rows[-1][1])


def _expected_journal(app: LedgerApplication, position: int) -> Iterator[tuple[Any, ...]]:
    yield from costed_journal(_events(app, position))


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
                    position: int, names: tuple[str, ...]) -> list[Finding]:
    stored = _stored_journal(store, generation, names)
    expected = (row[:len(names)] for row in _expected_journal(app, position))
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
                f"journal row at position {where}: stored {_describe(names, have)}, "
                f"expected {_describe(names, want)}"))
            return findings  # rows after a divergence are misaligned; report the first
    return findings


def _describe(names: tuple[str, ...], row: tuple[Any, ...] | None) -> str:
    if row is None:
        return "nothing"
    return str(dict(zip(names, row, strict=True)))


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


def _verify_holds(app: LedgerApplication, store: ReadStore, generation: int,
                  position: int) -> list[Finding]:
    """The holds table against the holds the events leave in force, row by row (the
    discrepancies are read from the stock levels and the journal, checked above)."""
    expected: Rows = {}
    for event_position, event in _events(app, position, HOLD_TOPICS):
        for held, row in holds.HOLDS.changes([(event_position, event, ())]):
            expected.pop(tuple(row[:3]), None)
            if held:
                expected[tuple(row[:3])] = tuple(row[3:])
    table = store.tables("holds", generation)["holds"]
    with store.transaction() as cursor:
        cursor.execute(f"SELECT sku, batch_id, scope, held_at, reason, actor, position "
                       f"FROM {table}")
        stored: Rows = {(r["sku"], r["batch_id"], r["scope"]):
                        (r["held_at"], r["reason"], r["actor"], int(r["position"]))
                        for r in cursor.fetchall()}
    findings: list[Finding] = []
    for key in sorted(set(stored) | set(expected)):
        have, want = _held(stored.get(key)), _held(expected.get(key))
        if have != want:
            where = want[3] if want is not None else have[3] if have is not None else None
            findings.append(Finding(
                "holds", where,
                f"holds {key[0]}/{key[1]} at {key[2] or 'every outlet'}: stored {have}, "
                f"expected {want}"))
    return findings


def _held(row: tuple[Any, ...] | None) -> tuple[Any, ...] | None:
    """A hold's row with its time as an instant (SQLite keeps ISO text)."""
    if row is None:
        return None
    held_at = row[0]
    if isinstance(held_at, str):
        held_at = datetime.fromisoformat(held_at)
    return (held_at.timestamp(), *row[1:])
