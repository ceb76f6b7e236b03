"""The periods read model: each stock item's movements summed per day, by kind, with the
balance on hand at the end of each day, by business time and by recorded time.

A period report needs the balance at its start and what moved within it. Summing the journal
from the first event would cost the whole history; here the opening balance is one indexed
look-up (the last day before the period) and the movements are the period's own day rows, so
a month's report costs that month's days, however long the history before it.

A movement dated back (a late sale, a receipt dated earlier) changes the balance of every later
day of its stock item: those rows are moved by its quantity in the same transaction. Late
movements are dated back by hours or days, so this touches a few rows, not the history.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, date, datetime
from typing import Any

from ledger import events
from ledger.domain.movements import Movement, movements
from projections.dialect import Dialect
from projections.projection import Folded, Projection, create_tables

NAME = "periods"
TABLES = ("stock_days", "period_items")
BASES = ("business", "recorded")

COLUMNS = ("received", "sold", "refunded", "refunded_written_off", "expired", "written_off",
           "counted", "transferred_in", "transferred_out", "other")
"""Each a day's signed change to on hand by that kind of movement, except
`refunded_written_off`: the units returned and written off at once, which never reach the
shelf (so count in no balance). `other` takes kinds this model does not name yet."""

KIND_COLUMN = {"received": "received", "sold": "sold", "refunded": "refunded",
               "expired": "expired", "written_off": "written_off", "counted": "counted",
               "found": "counted",
               "transfer_received": "transferred_in", "transfer_dispatched": "transferred_out"}
"""Stock a count found (a batch the ledger did not know) is count variance; a receipt's
correction, like any kind not named here, is `other`."""
INDEX = {column: index for index, column in enumerate(COLUMNS)}
WRITTEN_OFF_ON_RETURN = INDEX["refunded_written_off"]

CREATE = (
    f"""CREATE TABLE IF NOT EXISTS {{stock_days}} (
        basis TEXT NOT NULL, outlet TEXT NOT NULL, sku TEXT NOT NULL, day DATE NOT NULL,
        {", ".join(f"{c} BIGINT NOT NULL" for c in COLUMNS)},
        net BIGINT NOT NULL, balance BIGINT NOT NULL,
        PRIMARY KEY (basis, outlet, sku, day))""",
    # The stock items, so that a report reads each one's days down the primary key: its
    # last day before the period, and the period's days. No other index on the days, which
    # a planner could walk in day order across every stock item instead.
    """CREATE TABLE IF NOT EXISTS {period_items} (
        outlet TEXT NOT NULL, sku TEXT NOT NULL, PRIMARY KEY (outlet, sku))""",
)

_VALUES = ", ".join(["%s"] * (4 + len(COLUMNS) + 1))
_PREVIOUS = """COALESCE((SELECT p.balance FROM {stock_days} p
        WHERE p.basis = %s AND p.outlet = %s AND p.sku = %s AND p.day < %s
        ORDER BY p.day DESC LIMIT 1), 0) + %s"""
SHIFT = """UPDATE {stock_days} SET balance = balance + %s
    WHERE basis = %s AND outlet = %s AND sku = %s AND day > %s"""
UPSERT = f"""INSERT INTO {{stock_days}} (basis, outlet, sku, day, {", ".join(COLUMNS)}, net,
        balance)
    VALUES ({_VALUES}, {_PREVIOUS})
    ON CONFLICT (basis, outlet, sku, day) DO UPDATE SET
        {", ".join(f"{c} = {{stock_days}}.{c} + excluded.{c}" for c in COLUMNS)},
        net = {{stock_days}}.net + excluded.net,
        balance = {{stock_days}}.balance + excluded.net"""
"""A new day's balance is the last balance before it plus its own net change."""
ADD_ITEM = ("INSERT INTO {period_items} (outlet, sku) VALUES (%s, %s) "
            "ON CONFLICT (outlet, sku) DO NOTHING")
"""On SQLite, per row: SHIFT then UPSERT for each day row in day order, then ADD_ITEM."""

STAGE = ("CREATE TEMPORARY TABLE IF NOT EXISTS {staged} (LIKE {stock_days} INCLUDING INDEXES) "
         "ON COMMIT DELETE ROWS")
"""The batch's day rows, with in `balance` the batch's net change to its stock item up to and
including that day (a running sum worked out before the transaction)."""
SHIFT_STAGED = """
    UPDATE {stock_days} t SET balance = t.balance + (
        SELECT s.balance FROM {staged} s
        WHERE s.basis = t.basis AND s.outlet = t.outlet AND s.sku = t.sku AND s.day <= t.day
        ORDER BY s.day DESC LIMIT 1)
    FROM (SELECT basis, outlet, sku, MIN(day) AS first FROM {staged}
          GROUP BY basis, outlet, sku) m
    WHERE t.basis = m.basis AND t.outlet = m.outlet AND t.sku = m.sku AND t.day >= m.first"""
"""First, every stored day of a touched stock item from the batch's first day on moves by the
batch's change up to that day."""
UPSERT_STAGED = f"""
    INSERT INTO {{stock_days}} (basis, outlet, sku, day, {", ".join(COLUMNS)}, net, balance)
    SELECT s.basis, s.outlet, s.sku, s.day, {", ".join(f"s.{c}" for c in COLUMNS)}, s.net,
           COALESCE(p.balance, 0) - COALESCE((
               SELECT c.balance FROM {{staged}} c
               WHERE c.basis = s.basis AND c.outlet = s.outlet AND c.sku = s.sku
                 AND c.day <= p.day
               ORDER BY c.day DESC LIMIT 1), 0) + s.balance
    FROM {{staged}} s LEFT JOIN LATERAL (
        SELECT d.day, d.balance FROM {{stock_days}} d
        WHERE d.basis = s.basis AND d.outlet = s.outlet AND d.sku = s.sku AND d.day < s.day
        ORDER BY d.day DESC LIMIT 1) p ON TRUE
    ON CONFLICT (basis, outlet, sku, day) DO UPDATE SET
        {", ".join(f"{c} = {{stock_days}}.{c} + excluded.{c}" for c in COLUMNS)},
        net = {{stock_days}}.net + excluded.net"""
"""Then each day of the batch is added to its stored row (whose balance has moved already),
or becomes a row, written once: the stored day before it, as it stood before the batch (its
moved balance less the batch's change up to it), plus the batch's change up to this day. Two
statements per batch, each an index look-up or two per row it writes."""
ADD_STAGED_ITEMS = ("INSERT INTO {period_items} (outlet, sku) "
                    "SELECT DISTINCT outlet, sku FROM {staged} "
                    "ON CONFLICT (outlet, sku) DO NOTHING")

STAGED_COLUMNS = ("basis", "outlet", "sku", "day", *COLUMNS, "net", "balance")

DayKey = tuple[str, str, str, date]
"""(basis, outlet, sku, day)."""
Changes = dict[DayKey, list[int]]
"""Per day row, the change to each of `COLUMNS`."""


def day_of(moment: datetime) -> date:
    """The UTC day of a moment: periods are reckoned in UTC, like the rest of the ledger."""
    return moment.astimezone(UTC).date() if moment.utcoffset() is not None else moment.date()


def written_off_on_return(event: events.StockRefunded) -> int:
    """Units a refund returned and wrote off at once, batch or none."""
    units = sum(take.quantity for take in event.written_off)
    if not event.unallocated_restocked:
        units += event.unallocated_returned
    return units


def fold(changes: Changes, event: object, moved: Sequence[Movement] | None = None) -> None:
    """Fold one event's movements into the day rows of its stock item, on both bases."""
    if not isinstance(event, events.StockMovement):
        return
    deltas = [0] * len(COLUMNS)
    for movement in movements(event) if moved is None else moved:
        deltas[INDEX[KIND_COLUMN.get(movement.kind, "other")]] += movement.quantity
    if isinstance(event, events.StockRefunded):
        deltas[WRITTEN_OFF_ON_RETURN] += written_off_on_return(event)
    for basis, moment in (("business", event.occurred_at), ("recorded", event.timestamp)):
        key = (basis, event.outlet, event.sku, day_of(moment))
        row = changes.get(key)
        if row is None:
            changes[key] = list(deltas)
        else:
            for index, delta in enumerate(deltas):
                row[index] += delta


def net(row: Sequence[int]) -> int:
    """A day row's change to on hand."""
    return sum(row) - row[WRITTEN_OFF_ON_RETURN]


def balances(changes: Changes) -> dict[DayKey, tuple[list[int], int, int]]:
    """Each day row as the whole history makes it: its changes, net, and the balance at the
    end of the day (what verification expects the table to hold)."""
    result: dict[DayKey, tuple[list[int], int, int]] = {}
    running: dict[tuple[str, str, str], int] = {}
    for key in sorted(changes):
        row = changes[key]
        item = key[:3]
        running[item] = running.get(item, 0) + net(row)
        result[key] = (row, net(row), running[item])
    return result


class Periods:
    """The `periods` projection (`Projection[Changes]`)."""

    name = NAME
    tables = TABLES

    def prepare(self, cursor: Any, dialect: Dialect, tables: Mapping[str, str]) -> None:
        create_tables(cursor, dialect, CREATE, tables)

    def changes(self, folded: Sequence[Folded]) -> Changes:
        """The day rows a batch of events changes: pure, so it can run before the
        transaction."""
        changes: Changes = {}
        for _, event, moved in folded:
            fold(changes, event, moved)
        return changes

    def write(self, cursor: Any, dialect: Dialect, tables: Mapping[str, str],
              changes: Changes) -> None:
        """Apply a batch's day rows in day order per stock item (each new day reads the
        balance of the one before it), in the caller's transaction."""
        if not changes:
            return
        if dialect.name == "sqlite":
            shift, upsert = (dialect.sql(s.format(**tables)) for s in (SHIFT, UPSERT))
            for shift_row, upsert_row in _parameters(changes, dialect):
                cursor.execute(shift, shift_row)
                cursor.execute(upsert, upsert_row)
            items = sorted({(outlet, sku) for _, outlet, sku, _ in changes})
            cursor.executemany(dialect.sql(ADD_ITEM.format(**tables)), items)
            return
        # PostgreSQL: the batch's day rows are copied into a temporary table and applied by
        # set-based statements (a statement per row cost a round trip and a plan each).
        names = {**tables, "staged": tables["stock_days"].rsplit(".", 1)[-1] + "_staged"}
        cursor.execute(STAGE.format(**names))
        dialect.insert_rows(cursor, names["staged"], STAGED_COLUMNS, _staged(changes))
        for statement in (SHIFT_STAGED, UPSERT_STAGED, ADD_STAGED_ITEMS):
            cursor.execute(statement.format(**names))


def _staged(changes: Changes) -> Iterable[tuple[Any, ...]]:
    """The batch's day rows in `STAGED_COLUMNS` order, with the running sum of each stock
    item's net change over the batch's days (to and including each) as `balance`."""
    running: dict[tuple[str, str, str], int] = {}
    for key in sorted(changes):
        row = changes[key]
        item = key[:3]
        running[item] = running.get(item, 0) + net(row)
        yield (*key, *row, net(row), running[item])


def _parameters(changes: Changes, dialect: Dialect,
                ) -> Iterable[tuple[tuple[Any, ...], tuple[Any, ...]]]:
    for key in sorted(changes):
        basis, outlet, sku, day = key
        row = changes[key]
        change = net(row)
        when = dialect.value(day)
        yield ((change, basis, outlet, sku, when),
               (basis, outlet, sku, when, *row, change, basis, outlet, sku, when, change))


PERIODS: Projection[Changes] = Periods()
