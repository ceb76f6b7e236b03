"""The fast reads: stock levels, batches, low stock and history, from the read models.

Each read is one indexed query. Available stock is the running total of the stock level less
the batches whose expiry date has come and still hold stock (found through the expiry index),
so it costs the same for a SKU with one live batch and with ten thousand.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any
from weakref import WeakKeyDictionary

from ledger.domain.late_sales import ShortSale, unsettled
from ledger.store.application import LedgerApplication
from projections.runner import ReadModels

MAX_LIMIT = 10_000

HELD = """COALESCE((
               SELECT SUM(b.quantity) FROM {batches} b
               WHERE b.outlet = s.outlet AND b.sku = s.sku AND b.quantity > 0
                 AND (b.expires_on IS NULL OR b.expires_on > %s)
                 AND b.batch_id IN (SELECT h.batch_id FROM {holds} h
                                    WHERE h.sku = s.sku AND h.scope IN ('', s.outlet))), 0)"""
"""Units in held batches not yet expired (expired ones are unavailable already): the holds
are few, so this reads the batches of the few held lots only."""

STOCK = """
    SELECT s.outlet, s.sku, s.batch_total - s.shortfall AS on_hand,
           s.batch_total - s.shortfall - COALESCE((
               SELECT SUM(b.quantity) FROM {batches} b
               WHERE b.outlet = s.outlet AND b.sku = s.sku
               AND b.expires_on <= %s AND b.quantity > 0), 0) - """ + HELD + """ AS available,
           """ + HELD + """ AS held,
           s.reorder_level
    FROM {stock_levels} s
    WHERE s.outlet = %s"""
"""Takes the read's date three times, then the outlet (`_stock_params`)."""

BATCHES = """
    SELECT b.batch_id, b.quantity, b.expires_on, b.received_at, b.unit_cost,
           CASE WHEN b.expired OR b.expires_on <= %s THEN 1 ELSE 0 END AS expired,
           b.expired AS written_off_as_expired,
           CASE WHEN EXISTS (SELECT 1 FROM {holds} h WHERE h.sku = b.sku
                             AND h.batch_id = b.batch_id AND h.scope IN ('', b.outlet))
                THEN 1 ELSE 0 END AS on_hold
    FROM {batches} b WHERE b.outlet = %s AND b.sku = %s AND b.quantity <> 0
    ORDER BY b.expires_on IS NULL, b.expires_on, b.received_at, b.batch_id"""
"""A batch is expired once its expiry date has come (`on_date`), swept or not: the sweep's
write-off is `written_off_as_expired`. `unit_cost` is the cost of the batch's latest arrival
that had one; each arrival's own cost is a cost layer of the write model
(`Ledger.batches`)."""

SHORTFALLS = """
    SELECT outlet, sku, shortfall FROM {stock_levels} WHERE shortfall > 0"""

SHORT_SALES = """
    SELECT position, sale_id, occurred_at, recorded_at, -quantity AS shortfall
    FROM {journal}
    WHERE outlet = %s AND sku = %s AND kind = 'sold' AND batch_id IS NULL
    ORDER BY position DESC LIMIT %s"""
"""The sales that left a stock item short, newest first (`ledger.domain.late_sales.unsettled`
says which of them the open shortfall is)."""

HOLDS = """
    SELECT sku, batch_id, scope, held_at, reason, actor, position FROM {holds}"""

HISTORY = """
    SELECT position, seq, kind, outlet, sku, batch_id, quantity, occurred_at, recorded_at,
           actor, reference, idempotency_key, sale_id, detail, cost
    FROM {journal} WHERE outlet = %s"""
"""`cost`: what the movement cost, signed as its quantity, where the events record it; None
where they do not (`ledger.domain.journal_costs`)."""


class Reads:
    """Queries over the read models of one store."""

    def __init__(self, app: LedgerApplication) -> None:
        self.models = ReadModels(app)
        self.dialect = self.models.dialect
        self.names: dict[str, str] = {}
        for projection in ("stock", "journal", "holds"):
            self.names.update(self.models.views(projection))

    def _query(self, statement: str, params: list[Any]) -> list[dict[str, Any]]:
        sql = self.dialect.sql(statement.format(**self.names))
        return self.models.query(sql, [self.dialect.value(p) for p in params])

    def stock(self, outlet: str, sku: str | None = None,
              on_date: date | None = None) -> list[dict[str, Any]]:
        """On hand and available per SKU at an outlet (available as of `on_date`, today)."""
        statement, params = STOCK, _stock_params(on_date, outlet)
        if sku is not None:
            statement += " AND s.sku = %s"
            params.append(sku)
        rows = self._query(statement + " ORDER BY s.sku", params)
        for row in rows:
            row["on_hand"], row["available"] = int(row["on_hand"]), int(row["available"])
            row["held"] = int(row["held"])
        return rows

    def stock_of_sku(self, sku: str, on_date: date | None = None) -> list[dict[str, Any]]:
        """On hand and available of one SKU at every outlet that holds it."""
        statement = STOCK.replace("WHERE s.outlet = %s", "WHERE s.sku = %s")
        rows = self._query(statement + " ORDER BY s.outlet", _stock_params(on_date, sku))
        for row in rows:
            row["on_hand"], row["available"] = int(row["on_hand"]), int(row["available"])
            row["held"] = int(row["held"])
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
            row["on_hold"] = bool(row["on_hold"])
        return rows

    def low_stock(self, outlet: str, on_date: date | None = None) -> list[dict[str, Any]]:
        """Stock items whose available stock is at or below their reorder level."""
        rows = self._query(STOCK + " AND s.reorder_level IS NOT NULL ORDER BY s.sku",
                           _stock_params(on_date, outlet))
        return [
            {**row, "on_hand": int(row["on_hand"]), "available": int(row["available"]),
             "held": int(row["held"])}
            for row in rows if int(row["available"]) <= int(row["reorder_level"])
        ]

    def holds(self, sku: str | None = None, outlet: str | None = None) -> list[dict[str, Any]]:
        """Holds not released, by SKU and batch; `outlet` None for a hold everywhere. With
        `outlet`, those that apply there (its own and those everywhere)."""
        statement, params = HOLDS + " WHERE 1 = 1", list[Any]()
        if sku is not None:
            statement += " AND sku = %s"
            params.append(sku)
        if outlet is not None:
            statement += " AND scope IN ('', %s)"
            params.append(outlet)
        rows = self._query(statement + " ORDER BY sku, batch_id, scope", params)
        for row in rows:
            row["outlet"] = row.pop("scope") or None
        return rows

    def discrepancies(self, outlet: str | None = None,
                      sales_per_item: int = 100) -> list[dict[str, Any]]:
        """Stock items short of stock that no receipt or count has settled yet: sales short
        of stock (late sales whose goods had already gone, or sales into negative), with
        the open part of each, newest first."""
        statement, params = SHORTFALLS, list[Any]()
        if outlet is not None:
            statement += " AND outlet = %s"
            params.append(outlet)
        found = []
        for row in self._query(statement + " ORDER BY outlet, sku", params):
            shortfall = int(row["shortfall"])
            sales = [ShortSale(str(r["sale_id"]), _moment(r["occurred_at"]),
                               _moment(r["recorded_at"]), int(r["shortfall"]))
                     for r in self._query(SHORT_SALES, [row["outlet"], row["sku"],
                                                        sales_per_item])]
            found.append({
                "outlet": row["outlet"], "sku": row["sku"], "shortfall": shortfall,
                "sales": [{"sale_id": sale.sale_id, "occurred_at": sale.occurred_at,
                           "recorded_at": sale.recorded_at, "short": part, "late": sale.late}
                          for sale, part in unsettled(shortfall, sales)],
            })
        return found

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


def _stock_params(on_date: date | None, value: str) -> list[Any]:
    day = on_date or datetime.now(UTC).date()
    return [day, day, day, value]


def _moment(value: Any) -> datetime:
    """A time column as an aware datetime (SQLite keeps ISO text)."""
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


_READS: WeakKeyDictionary[LedgerApplication, Reads] = WeakKeyDictionary()


def available_stock(app: LedgerApplication, outlet: str, sku: str) -> int | None:
    """Available stock of one stock item from the read model (None if it has no row)."""
    reads = _READS.get(app)
    if reads is None:
        _READS[app] = reads = Reads(app)
    return reads.available_stock(outlet, sku)
