"""Opening balances from the old CRUD stock module's database, and their reconciliation.

The old module kept each batch's remaining quantity in its `batch` table and a stored total
per variation and outlet in `location_stock` (re-summed after each sale from the batches
whose `expiry_date > today`). The import reads both in one snapshot of that database
(a read-only, repeatable-read transaction), writes the batches as an import file with
`BATCHES_QUERY` (documented in `docs/import.md`: the same query, run by hand with `psql`,
makes the same file), and imports that file as any other (`ledger.app.imports`). The stored
totals go beside the imported batches in a reconciliation per stock item
(`ledger.domain.opening_balances.reconcile`), which names every item whose stored total
drifted from its batches.

The schema expected is the old module's Django models, keyed by integer, as
`benchmarks/crud_baseline.py` reproduces it: `outlet (id, name)`, `variation (id, sku)`,
`batch (id, variation_id, outlet_id, quantity, expiry_date, received_at)` and
`location_stock (variation_id, outlet_id, quantity)`. Its batches carry no cost: the import
records them unvalued.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import psycopg

from ledger.app.imports import BalanceImport
from ledger.domain.opening_balances import StockReconciliation, item_totals, reconcile

BATCHES_QUERY = """\
SELECT o.name AS outlet, v.sku AS sku, b.id::text AS batch, b.quantity,
       to_char(b.expiry_date, 'YYYY-MM-DD') AS expires_on,
       NULL AS unit_cost,
       to_char(b.received_at AT TIME ZONE 'UTC',
               'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS received_at
  FROM batch b
  JOIN outlet o ON o.id = b.outlet_id
  JOIN variation v ON v.id = b.variation_id
 WHERE b.quantity > 0
 ORDER BY b.id"""
"""The old module's batches still holding stock, as the rows of an import file: the old
batch id is the batch, the outlet and variation the stock item, no cost."""

LOCATION_STOCK_QUERY = """\
SELECT o.name AS outlet, v.sku AS sku, s.quantity
  FROM location_stock s
  JOIN outlet o ON o.id = s.outlet_id
  JOIN variation v ON v.id = s.variation_id
 ORDER BY o.name, v.sku"""
"""The old module's stored total of each stock item."""

EXPORT = "COPY ({query}) TO STDOUT WITH (FORMAT csv, HEADER)"


@dataclass(frozen=True)
class CrudExport:
    """The old database's batches as an import file, and its stored totals beside it."""

    database: str
    batches: Path
    location_stock: Path


def export(url: str, batches: Path, location_stock: Path) -> CrudExport:
    """Write the old database's batches (`BATCHES_QUERY`) and stored totals
    (`LOCATION_STOCK_QUERY`) as CSV files, both read in one snapshot. Raises
    `psycopg.Error` if the database cannot be read."""
    with psycopg.connect(url, connect_timeout=10) as connection:
        connection.read_only = True
        connection.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        with connection.transaction(), connection.cursor() as cursor:
            for query, path in ((BATCHES_QUERY, batches),
                                (LOCATION_STOCK_QUERY, location_stock)):
                with path.open("wb") as out, cursor.copy(EXPORT.format(query=query)) as copy:
                    for block in copy:
                        out.write(block)
        database = connection.info.dbname
    return CrudExport(database, batches, location_stock)


def stored_totals(path: Path) -> Iterator[tuple[str, str, int]]:
    """The rows of a `LOCATION_STOCK_QUERY` file."""
    with path.open(newline="", encoding="utf-8") as stream:
        reader = csv.reader(stream)
        next(reader, None)  # the header
        for outlet, sku, quantity in reader:
            yield outlet, sku, int(quantity)


def reconciliation(run: BalanceImport, location_stock: Path,
                   on_date: date) -> Iterator[StockReconciliation]:
    """Every stock item of the old stored totals or of the import's (checked) rows: the
    stored total beside the sum of the imported batches, all of them and those available on
    `on_date`, in (outlet, SKU) order."""
    run.spill.add_stored_totals(stored_totals(location_stock))
    return reconcile(run.spill.stored_totals(),
                     item_totals(run.spill.rows_in_order(), on_date))
