"""A faithful psycopg reproduction of the old CRUD stock module (see shared/seeds).

The old `deduct_stock()` ran in one transaction: lock the live batches of the variation at the
outlet (`select_for_update()` over the whole FEFO-ordered queryset), take from them in order,
`bulk_update()` the touched batches, `bulk_create()` the movements, and re-sum the
`LocationStock` row with an aggregate. `get_available_quantity()` is a SUM over the batches whose
`expiry_date > today`.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta

import psycopg

SCHEMA = """
CREATE TABLE IF NOT EXISTS batch (
    id bigserial PRIMARY KEY,
    variation text NOT NULL,
    outlet text NOT NULL,
    quantity integer NOT NULL CHECK (quantity >= 0),
    expiry_date date,
    received_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS batch_variation_outlet_expiry
    ON batch (variation, outlet, expiry_date);
CREATE TABLE IF NOT EXISTS location_stock (
    variation text NOT NULL,
    outlet text NOT NULL,
    quantity integer NOT NULL DEFAULT 0,
    PRIMARY KEY (variation, outlet)
);
CREATE TABLE IF NOT EXISTS stock_movement (
    id bigserial PRIMARY KEY,
    variation text NOT NULL,
    outlet text NOT NULL,
    batch_id bigint NOT NULL REFERENCES batch (id),
    movement_type text NOT NULL,
    quantity integer NOT NULL,
    reference text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS stock_movement_variation_outlet_created
    ON stock_movement (variation, outlet, created_at);
"""

LOCK_LIVE_BATCHES = """
SELECT id, quantity FROM batch
WHERE variation = %s AND outlet = %s AND quantity > 0 AND expiry_date > %s
ORDER BY expiry_date, received_at, id
FOR UPDATE
"""
UPDATE_BATCHES = """
UPDATE batch SET quantity = batch.quantity - t.taken
FROM unnest(%s::bigint[], %s::integer[]) AS t(id, taken)
WHERE batch.id = t.id
"""
INSERT_MOVEMENTS = """
INSERT INTO stock_movement (variation, outlet, batch_id, movement_type, quantity, reference)
SELECT %s, %s, t.id, 'sale', -t.taken, %s
FROM unnest(%s::bigint[], %s::integer[]) AS t(id, taken)
"""
RESUM_STOCK = """
UPDATE location_stock SET quantity = (
    SELECT COALESCE(SUM(quantity), 0) FROM batch
    WHERE variation = %s AND outlet = %s AND quantity > 0 AND expiry_date > %s)
WHERE variation = %s AND outlet = %s
"""
AVAILABLE = """
SELECT COALESCE(SUM(quantity), 0) FROM batch
WHERE variation = %s AND outlet = %s AND expiry_date > %s AND quantity > 0
"""


class InsufficientStock(Exception):
    pass


def create_schema(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(SCHEMA)


def seed_batches(conn: psycopg.Connection, outlet: str, sku: str, count: int, quantity: int,
                 first_expiry: date, received_at: datetime | None = None) -> None:
    """Receive `count` batches of `quantity`, expiring one day apart from `first_expiry`."""
    base = received_at or datetime.now().astimezone()
    with conn.transaction(), conn.cursor() as cur:
        with cur.copy("COPY batch (variation, outlet, quantity, expiry_date, received_at) "
                      "FROM STDIN") as copy:
            for i in range(count):
                copy.write_row((sku, outlet, quantity, first_expiry + timedelta(days=i // 10),
                                base + timedelta(microseconds=i)))
        cur.execute(
            "INSERT INTO location_stock (variation, outlet, quantity) VALUES (%s, %s, 0) "
            "ON CONFLICT DO NOTHING", (sku, outlet))
        cur.execute(RESUM_STOCK, (sku, outlet, date.today(), sku, outlet))


def sell(conn: psycopg.Connection, outlet: str, sku: str, quantity: int, reference: str) -> None:
    """One sale line, all or nothing, FEFO, exactly as the old `deduct_stock()` did it."""
    today = date.today()
    with conn.transaction(), conn.cursor() as cur:
        rows = cur.execute(LOCK_LIVE_BATCHES, (sku, outlet, today)).fetchall()
        ids: list[int] = []
        takes: list[int] = []
        remaining = quantity
        for batch_id, batch_quantity in rows:
            taken = min(batch_quantity, remaining)
            ids.append(batch_id)
            takes.append(taken)
            remaining -= taken
            if remaining == 0:
                break
        if remaining:
            raise InsufficientStock(f"{outlet}/{sku}: asked {quantity}, short {remaining}")
        cur.execute(UPDATE_BATCHES, (ids, takes))
        cur.execute(INSERT_MOVEMENTS, (sku, outlet, reference, ids, takes))
        cur.execute(RESUM_STOCK, (sku, outlet, today, sku, outlet))


def available(conn: psycopg.Connection, outlet: str, sku: str) -> int:
    row = conn.execute(AVAILABLE, (sku, outlet, date.today())).fetchone()
    return int(row[0]) if row else 0


def stock_row(conn: psycopg.Connection, outlet: str, sku: str) -> int:
    row = conn.execute("SELECT quantity FROM location_stock WHERE variation = %s AND outlet = %s",
                       (sku, outlet)).fetchone()
    return int(row[0]) if row else 0


def units_sold(conn: psycopg.Connection, outlet: str, sku: str) -> int:
    row = conn.execute("SELECT COALESCE(-SUM(quantity), 0) FROM stock_movement "
                       "WHERE variation = %s AND outlet = %s AND movement_type = 'sale'",
                       (sku, outlet)).fetchone()
    return int(row[0]) if row else 0
