"""The fast reads: stock levels, batches, low stock and history, from the read models.

Each read is one indexed query. Available stock is the running total of the stock level less
the batches whose expiry date has come and still hold stock (found through the expiry index),
so it costs the same for a SKU with one live batch and with ten thousand.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any
from weakref import WeakKeyDictionary

from ledger.store.application import LedgerApplication
from projections.runner import ReadModels

MAX_LIMIT = 10_000

STOCK = """
    SELECT s.outlet, s.sku, s.batch_total - s.shortfall AS on_hand,
           s.batch_total - s.shortfall - COALESCE((
               SELECT SUM(b.quantity) FROM {batches} b
               WHERE b.outlet = s.outlet AND b.sku = s.sku
                 AND b.expires_on <= %s AND b.quantity > 0), 0) AS available,
           s.reorder_level
    FROM {stock_levels} s
    WHERE s.outlet = %s"""

BATCHES = """
    SELECT batch_id, quantity, expires_on, received_at, unit_cost,
           CASE WHEN expired OR expires_on <= %s THEN 1 ELSE 0 END AS expired,
           expired AS written_off_as_expired
    FROM {batches} WHERE outlet = %s AND sku = %s AND quantity <> 0
    ORDER BY expires_on IS NULL, expires_on, received_at, batch_id"""
"""A batch is expired once its expiry date has come (`on_date`), swept or not: the sweep's
write-off is `written_off_as_expired`. `unit_cost` is the cost of the batch's latest arrival
that had one; each arrival's own cost is a cost layer of the write model
(`Ledger.batches`)."""

HISTORY = """
    SELECT position, seq, kind, outlet, sku, batch_id, quantity, occurred_at, recorded_at,
           actor, reference, idempotency_key, sale_id, detail
    FROM {journal} WHERE outlet = %s"""


class Reads:
    """Queries over the read models of one store."""

    def __init__(self, app: LedgerApplication) -> None:
        self.models = ReadModels(app)
        self.dialect = self.models.dialect
        self.names: dict[str, str] = {}
        for projection in ("stock", "journal"):
            self.names.update(self.models.views(projection))

    def _query(self, statement: str, params: list[Any]) -> list[dict[str, Any]]:
        sql = self.dialect.sql(statement.format(**self.names))
        return self.models.query(sql, [self.dialect.value(p) for p in params])

    def stock(self, outlet: str, sku: str | None = None,
              on_date: date | None = None) -> list[dict[str, Any]]:
        """On hand and available per SKU at an outlet (available as of `on_date`, today)."""
        statement, params = STOCK, list[Any]([on_date or datetime.now(UTC).date(), outlet])
        if sku is not None:
            statement += " AND s.sku = %s"
            params.append(sku)
        rows = self._query(statement + " ORDER BY s.sku", params)
        for row in rows:
            row["on_hand"], row["available"] = int(row["on_hand"]), int(row["available"])
        return rows

    def stock_of_sku(self, sku: str, on_date: date | None = None) -> list[dict[str, Any]]:
        """On hand and available of one SKU at every outlet that holds it."""
        statement = STOCK.replace("WHERE s.outlet = %s", "WHERE s.sku = %s")
        rows = self._query(statement + " ORDER BY s.outlet",
                           [on_date or datetime.now(UTC).date(), sku])
        for row in rows:
            row["on_hand"], row["available"] = int(row["on_hand"]), int(row["available"])
        return rows

    def available_stock(self, outlet: str, sku: str, on_date: date | None = None) -> int | None:
        rows = self.stock(outlet, sku, on_date)
        return rows[0]["available"] if rows else None

    def batches(self, outlet: str, sku: str, on_date: date | None = None) -> list[dict[str, Any]]:
        """Batches of a stock item holding stock, first expiry first; `expired` as of
        `on_date` (today, UTC), whether the sweep has written the batch off or not."""
        rows = self._query(BATCHES, [on_date or datetime.now(UTC).date(), outlet, sku])
        for row in rows:
            row["expired"] = bool(row["expired"])
            row["written_off_as_expired"] = bool(row["written_off_as_expired"])
        return rows

    def low_stock(self, outlet: str, on_date: date | None = None) -> list[dict[str, Any]]:
        """Stock items whose available stock is at or below their reorder level."""
        rows = self._query(STOCK + " AND s.reorder_level IS NOT NULL ORDER BY s.sku",
                           [on_date or datetime.now(UTC).date(), outlet])
        return [
            {**row, "on_hand": int(row["on_hand"]), "available": int(row["available"])}
            for row in rows if int(row["available"]) <= int(row["reorder_level"])
        ]

    def history(self, outlet: str, sku: str | None = None, reference: str | None = None,
                since: datetime | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """Movements at an outlet, newest first, by SKU, reference (a sale and its refunds)
        and business time."""
        statement, params = HISTORY, list[Any]([outlet])
        if sku is not None:
            statement += " AND sku = %s"
            params.append(sku)
        if reference is not None:
            statement += " AND (reference = %s OR sale_id = %s)"
            params += [reference, reference]
        if since is not None:
            statement += " AND occurred_at >= %s"
            params.append(since)
        statement += " ORDER BY occurred_at DESC, position DESC, seq DESC LIMIT %s"
        params.append(min(max(limit, 1), MAX_LIMIT))
        return self._query(statement, params)


_READS: WeakKeyDictionary[LedgerApplication, Reads] = WeakKeyDictionary()


def available_stock(app: LedgerApplication, outlet: str, sku: str) -> int | None:
    """Available stock of one stock item from the read model (None if it has no row)."""
    reads = _READS.get(app)
    if reads is None:
        _READS[app] = reads = Reads(app)
    return reads.available_stock(outlet, sku)
