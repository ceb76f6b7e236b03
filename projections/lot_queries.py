"""Reads by lot and by period: a lot's trace, what expires soon, and a period's movements.

Each is answered from its own read model through an index: a trace reads the lot's movements
(`projections.lots`, by `(sku, batch_id)`), the expiring list a range of the shelves' expiry
index, and a period report each stock item's last day before the period and the period's own
day rows (`projections.periods`).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal

from projections.periods import COLUMNS
from projections.runner import ReadModels

MAX_EXPIRING = 10_000
"""At most how many shelves an expiring list shows."""

TRACE = """
    SELECT position, seq, outlet, kind, quantity, units, occurred_at, recorded_at, actor,
           reference, sale_id, refund_id, transfer_id, counterpart, detail
    FROM {lot_movements} WHERE sku = %s AND batch_id = %s ORDER BY position, seq"""

SHELVES = """
    SELECT outlet, quantity, expires_on, received_at FROM {lot_shelves}
    WHERE sku = %s AND batch_id = %s ORDER BY outlet"""

EXPIRING = """
    SELECT expires_on, sku, batch_id, outlet, quantity,
           CASE WHEN EXISTS (SELECT 1 FROM {holds} h WHERE h.sku = s.sku
                AND h.batch_id = s.batch_id AND h.scope IN ('', s.outlet)) THEN 1 ELSE 0
           END AS held
    FROM {lot_shelves} s
    WHERE quantity > 0 AND expires_on <= %s"""
"""`quantity > 0` is written out so that both stores use the partial expiry index."""

HOLDS = """
    SELECT scope, held_at, reason, actor FROM {holds}
    WHERE sku = %s AND batch_id = %s ORDER BY scope"""
"""The lot's holds not released (scope '': everywhere)."""

OPENING = """
    SELECT i.outlet, i.sku, (SELECT d.balance FROM {stock_days} d
        WHERE d.basis = %s AND d.outlet = i.outlet AND d.sku = i.sku AND d.day < %s
        ORDER BY d.day DESC LIMIT 1) AS opening
    FROM {period_items} i WHERE 1 = 1"""

PERIOD = f"""
    SELECT i.outlet, i.sku, {", ".join(f"SUM(d.{c}) AS {c}" for c in COLUMNS)}
    FROM {{period_items}} i JOIN {{stock_days}} d
      ON d.basis = %s AND d.outlet = i.outlet AND d.sku = i.sku
     AND d.day >= %s AND d.day <= %s
    WHERE 1 = 1"""
"""Each stock item's days within the period, a range of the primary key."""

Basis = Literal["business", "recorded"]


class LotReads:
    """Queries over the lots and periods read models of one store."""

    def __init__(self, models: ReadModels) -> None:
        self.models = models
        self.dialect = models.dialect
        self.names = {**models.views("lots"), **models.views("periods"),
                      **models.views("holds")}

    def _query(self, statement: str, params: Sequence[Any]) -> list[dict[str, Any]]:
        sql = self.dialect.sql(statement.format(**self.names))
        return self.models.query(sql, [self.dialect.value(p) for p in params])

    def sql(self, statement: str) -> str:
        """A statement of this module as the store runs it (for EXPLAIN)."""
        return self.dialect.sql(statement.format(**self.names))

    # ------------------------------------------------------------------- trace

    def trace(self, sku: str, batch_id: str) -> dict[str, Any]:
        """Where a lot went across every outlet, where it is now, and its holds."""
        rows = self._query(TRACE, [sku, batch_id])
        shelves = self._query(SHELVES, [sku, batch_id])
        for row in rows:
            row["quantity"], row["units"] = int(row["quantity"]), int(row["units"])
        for shelf in shelves:
            shelf["quantity"] = int(shelf["quantity"])
        report = trace_of(sku, batch_id, rows, shelves)
        report["holds"] = [{"outlet": hold["scope"] or None, "held_at": hold["held_at"],
                            "reason": hold["reason"], "actor": hold["actor"]}
                           for hold in self._query(HOLDS, [sku, batch_id])]
        return report

    # ------------------------------------------------------------------- expiring

    def expiring(self, within: timedelta, outlet: str | None = None, sku: str | None = None,
                 on_date: date | None = None, limit: int = MAX_EXPIRING) -> list[dict[str, Any]]:
        """Shelves holding stock of a lot whose expiry date comes by `on_date + within`
        (already expired ones too, flagged), soonest first."""
        today = on_date or datetime.now(UTC).date()
        statement, params = EXPIRING, list[Any]([today + within])
        if outlet is not None:
            statement += " AND outlet = %s"
            params.append(outlet)
        if sku is not None:
            statement += " AND sku = %s"
            params.append(sku)
        statement += " ORDER BY expires_on, sku, batch_id, outlet LIMIT %s"
        params.append(min(max(limit, 1), MAX_EXPIRING))
        rows = self._query(statement, params)
        for row in rows:
            expires_on = row["expires_on"]
            if isinstance(expires_on, str):
                row["expires_on"] = expires_on = date.fromisoformat(expires_on)
            row["quantity"] = int(row["quantity"])
            row["held"] = bool(row["held"])
            row["expired"] = expires_on <= today
            row["days_left"] = (expires_on - today).days
        return rows

    # ------------------------------------------------------------------- period report

    def movements(self, first_day: date, last_day: date, outlet: str | None = None,
                  sku: str | None = None, basis: Basis = "business") -> list[dict[str, Any]]:
        """Per stock item: the balance at the start of `first_day`, each kind of movement
        from then to the end of `last_day` (UTC), and the closing balance."""
        items, params = "", list[Any]()
        if outlet is not None:
            items += " AND i.outlet = %s"
            params.append(outlet)
        if sku is not None:
            items += " AND i.sku = %s"
            params.append(sku)
        opening_rows = self._query(OPENING + items, [basis, first_day, *params])
        period_rows = self._query(PERIOD + items + " GROUP BY i.outlet, i.sku",
                                  [basis, first_day, last_day, *params])
        moved = {(r["outlet"], r["sku"]): r for r in period_rows}
        report = []
        for item in sorted(opening_rows, key=lambda r: (r["outlet"], r["sku"])):
            key = (item["outlet"], item["sku"])
            opening = int(item["opening"] or 0)
            sums = moved.get(key)
            if sums is None and opening == 0:
                continue
            report.append(period_row(item["outlet"], item["sku"], opening,
                                     {c: int(sums[c]) if sums else 0 for c in COLUMNS}))
        return report


def period_row(outlet: str, sku: str, opening: int, sums: dict[str, int]) -> dict[str, Any]:
    """One stock item's line of a period report: units moved by kind, shown positive where
    the kind says the direction (sold, expired, written off, transferred out); count variance
    (stock found by a count included) and `other` (receipt corrections) signed.
    closing = opening + received - sold + refunded_restocked - expired - written_off
    + count_variance + transferred_in - transferred_out + other."""
    row: dict[str, Any] = {
        "outlet": outlet, "sku": sku, "opening": opening,
        "received": sums["received"], "sold": -sums["sold"],
        "refunded_restocked": sums["refunded"],
        "refunded_written_off": sums["refunded_written_off"],
        "expired": -sums["expired"], "written_off": -sums["written_off"],
        "count_variance": sums["counted"], "transferred_in": sums["transferred_in"],
        "transferred_out": -sums["transferred_out"], "other": sums["other"],
    }
    row["closing"] = (opening + row["received"] - row["sold"] + row["refunded_restocked"]
                      - row["expired"] - row["written_off"] + row["count_variance"]
                      + row["transferred_in"] - row["transferred_out"] + row["other"])
    return row


def trace_of(sku: str, batch_id: str, rows: list[dict[str, Any]],
             shelves: list[dict[str, Any]]) -> dict[str, Any]:
    """A lot's trace from its movements (in position order) and its shelves."""
    received, written_off, counted, expired, other = [], [], [], [], []
    sales: dict[tuple[str, str], dict[str, Any]] = {}
    transfers: dict[str, dict[str, Any]] = {}
    for row in rows:
        kind = row["kind"]
        entry = {"position": row["position"], "outlet": row["outlet"],
                 "occurred_at": row["occurred_at"], "reference": row["reference"],
                 "actor": row["actor"]}
        if kind == "received":
            received.append({**entry, "quantity": row["units"]})
        elif kind == "sold":
            sale = sales.setdefault((row["outlet"], row["sale_id"]), {
                **entry, "sale_id": row["sale_id"], "quantity": 0, "refunds": []})
            sale["quantity"] += row["units"]
        elif kind in ("refunded", "refunded_written_off"):
            sale = sales.setdefault((row["outlet"], row["sale_id"]), {
                "sale_id": row["sale_id"], "outlet": row["outlet"], "quantity": 0,
                "refunds": []})
            sale["refunds"].append({
                "refund_id": row["refund_id"], "occurred_at": row["occurred_at"],
                "position": row["position"], "quantity": row["units"],
                "restocked": kind == "refunded"})
        elif kind == "transfer_dispatched":
            transfer = transfers.setdefault(row["transfer_id"], _transfer(row))
            transfer["quantity"] += row["units"]
            transfer["from_outlet"], transfer["to_outlet"] = row["outlet"], row["counterpart"]
            transfer["dispatched_at"] = row["occurred_at"]
        elif kind == "transfer_received":
            transfer = transfers.setdefault(row["transfer_id"], _transfer(row))
            transfer["received"] += row["units"]
            transfer["from_outlet"], transfer["to_outlet"] = row["counterpart"], row["outlet"]
            transfer["received_at"] = row["occurred_at"]
        elif kind == "written_off":
            written_off.append({**entry, "quantity": row["units"], "reason": row["detail"]})
        elif kind in ("counted", "found"):
            # Found stock is a count's finding of a batch the ledger did not know.
            counted.append({**entry, "variance": row["quantity"], "detail": row["detail"],
                            "found": kind == "found"})
        elif kind == "expired":
            expired.append({**entry, "quantity": row["units"]})
        else:
            other.append({**entry, "kind": kind, "quantity": row["quantity"],
                          "detail": row["detail"]})
    in_transit = [{"transfer_id": t["transfer_id"], "from_outlet": t["from_outlet"],
                   "to_outlet": t["to_outlet"], "quantity": t["quantity"] - t["received"],
                   "dispatched_at": t["dispatched_at"]}
                  for t in transfers.values() if t["quantity"] > t["received"]]
    for transfer in transfers.values():
        transfer["status"] = ("in_transit" if transfer["quantity"] > transfer["received"]
                              else "received")
    on_shelves = [{"outlet": s["outlet"], "quantity": s["quantity"],
                   "expires_on": s["expires_on"]} for s in shelves if s["quantity"] != 0]
    expiries = {s["expires_on"] for s in shelves}
    return {
        "sku": sku, "batch_id": batch_id,
        "found": bool(rows),
        "expires_on": next(iter(expiries)) if len(expiries) == 1 else None,
        "received": received,
        "transfers": list(transfers.values()),
        "sales": list(sales.values()),
        "written_off": written_off, "counted": counted, "expired": expired, "other": other,
        "now": {
            "on_shelves": on_shelves,
            "on_shelves_total": sum(s["quantity"] for s in on_shelves),
            "in_transit": in_transit,
            "in_transit_total": sum(t["quantity"] for t in in_transit),
        },
        "movements": len(rows),
    }


def _transfer(row: dict[str, Any]) -> dict[str, Any]:
    return {"transfer_id": row["transfer_id"], "from_outlet": None, "to_outlet": None,
            "quantity": 0, "received": 0, "dispatched_at": None, "received_at": None}
