"""The old CRUD stock module (see shared/seeds), in its strongest faithful form.

Its Django models keyed everything by integer: a batch, a stock row and a movement name their
variation and outlet by foreign key. Its `deduct_stock()` ran in one transaction: lock the live
batches of the variation at the outlet (`select_for_update()` over the whole FEFO-ordered
queryset), take from them in order, `bulk_update()` the touched batches, `bulk_create()` the
movements, and re-sum the `LocationStock` row with an aggregate. `get_available_quantity()` is a
SUM over the batches whose `expiry_date > today`.

Here those statements run as they did, in one transaction per sale, on integer keys, with the
FEFO order served by an index; they are sent as one call of a server-side function
(`DEDUCT_STOCK`), prepared once per connection and run over libpq, so that a sale is one round
trip, the least any client of the design can make. `benchmarks/crud_variants.py` keeps the
alternatives this was measured against, in alternating runs (text keys; the statements sent one
by one or pipelined; the function called through psycopg's cursor; Django's foreign keys), and
`docs/performance.md` the figures: none was faster.

A caller names outlets and SKUs by text, as stockledger's do; the integer ids are looked up
once per connection, as a Django view holds its model instances.
"""

from __future__ import annotations

import weakref
from datetime import date, datetime, timedelta
from typing import Any

import psycopg
from psycopg import pq
from psycopg.errors import error_from_result

# The models' integer foreign keys. The movement's references to its variation and outlet are
# left undeclared: each would make every sale lock the outlet's and the variation's rows FOR
# KEY SHARE, which 8 tills of one outlet contend for (`crud_variants`, "django-fks"); the
# references that cost a sale nothing (a batch's, a stock row's, a movement's to its locked
# batch) are declared.
SCHEMA = """
CREATE TABLE IF NOT EXISTS outlet (
    id serial PRIMARY KEY,
    name text NOT NULL UNIQUE
);
CREATE TABLE IF NOT EXISTS variation (
    id serial PRIMARY KEY,
    sku text NOT NULL UNIQUE
);
CREATE TABLE IF NOT EXISTS batch (
    id bigserial PRIMARY KEY,
    variation_id integer NOT NULL REFERENCES variation (id),
    outlet_id integer NOT NULL REFERENCES outlet (id),
    quantity integer NOT NULL CHECK (quantity >= 0),
    expiry_date date,
    received_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS batch_fefo
    ON batch (variation_id, outlet_id, expiry_date, received_at, id);
CREATE TABLE IF NOT EXISTS location_stock (
    variation_id integer NOT NULL REFERENCES variation (id),
    outlet_id integer NOT NULL REFERENCES outlet (id),
    quantity integer NOT NULL DEFAULT 0,
    PRIMARY KEY (variation_id, outlet_id)
);
CREATE TABLE IF NOT EXISTS stock_movement (
    id bigserial PRIMARY KEY,
    variation_id integer NOT NULL,
    outlet_id integer NOT NULL,
    batch_id bigint NOT NULL REFERENCES batch (id),
    movement_type text NOT NULL,
    quantity integer NOT NULL,
    reference text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS stock_movement_variation_outlet_created
    ON stock_movement (variation_id, outlet_id, created_at);
"""

# The statements of `deduct_stock()`, with the batch index serving their FEFO order (no sort).
LOCK_LIVE_BATCHES = """
SELECT id, quantity FROM batch
WHERE variation_id = %s AND outlet_id = %s AND quantity > 0 AND expiry_date > %s
ORDER BY expiry_date, received_at, id
FOR UPDATE
"""
UPDATE_BATCHES = """
UPDATE batch SET quantity = batch.quantity - t.taken
FROM unnest(%s::bigint[], %s::integer[]) AS t(id, taken)
WHERE batch.id = t.id
"""
INSERT_MOVEMENTS = """
INSERT INTO stock_movement (variation_id, outlet_id, batch_id, movement_type, quantity, reference)
SELECT %s, %s, t.id, 'sale', -t.taken, %s
FROM unnest(%s::bigint[], %s::integer[]) AS t(id, taken)
"""
RESUM_STOCK = """
UPDATE location_stock SET quantity = (
    SELECT COALESCE(SUM(quantity), 0) FROM batch
    WHERE variation_id = %s AND outlet_id = %s AND quantity > 0 AND expiry_date > %s)
WHERE variation_id = %s AND outlet_id = %s
"""
AVAILABLE = """
SELECT COALESCE(SUM(quantity), 0) FROM batch
WHERE variation_id = %s AND outlet_id = %s AND expiry_date > %s AND quantity > 0
"""

INSUFFICIENT_STOCK_STATE = "SL001"
"""The SQLSTATE `deduct_stock` raises when the live batches hold too little."""

# The same statements as one function, so that a sale is one round trip in autocommit (its
# own transaction). Every live batch is locked, as the queryset's `select_for_update()` did,
# and walked in FEFO order in PL/pgSQL, as `deduct_stock()` walked it in Python. The locked
# rows come back in the subquery's index order, which `array_agg` keeps.
DEDUCT_STOCK = """
CREATE OR REPLACE FUNCTION deduct_stock(
    p_variation integer, p_outlet integer, p_quantity integer, p_reference text, p_today date)
RETURNS void LANGUAGE plpgsql AS $body$
DECLARE
    locked_ids bigint[]; locked_quantities integer[];
    ids bigint[] := '{}'; takes integer[] := '{}';
    remaining integer := p_quantity; taken integer;
BEGIN
    SELECT array_agg(id), array_agg(quantity) INTO locked_ids, locked_quantities FROM (
        SELECT id, quantity FROM batch
        WHERE variation_id = p_variation AND outlet_id = p_outlet AND quantity > 0
          AND expiry_date > p_today
        ORDER BY expiry_date, received_at, id
        FOR UPDATE) AS locked;
    FOR i IN 1 .. coalesce(array_length(locked_ids, 1), 0) LOOP
        EXIT WHEN remaining = 0;
        taken := least(locked_quantities[i], remaining);
        ids := ids || locked_ids[i];
        takes := takes || taken;
        remaining := remaining - taken;
    END LOOP;
    IF remaining > 0 THEN
        RAISE EXCEPTION USING ERRCODE = '{state}',
            MESSAGE = format('asked %s, short %s', p_quantity, remaining);
    END IF;
    UPDATE batch SET quantity = batch.quantity - t.taken
    FROM unnest(ids, takes) AS t(id, taken) WHERE batch.id = t.id;
    INSERT INTO stock_movement
        (variation_id, outlet_id, batch_id, movement_type, quantity, reference)
    SELECT p_variation, p_outlet, t.id, 'sale', -t.taken, p_reference
    FROM unnest(ids, takes) AS t(id, taken);
    UPDATE location_stock SET quantity = (
        SELECT coalesce(sum(quantity), 0) FROM batch
        WHERE variation_id = p_variation AND outlet_id = p_outlet AND quantity > 0
          AND expiry_date > p_today)
    WHERE variation_id = p_variation AND outlet_id = p_outlet;
END $body$
""".replace("{state}", INSUFFICIENT_STOCK_STATE)
CALL_DEDUCT_STOCK = "SELECT deduct_stock(%s, %s, %s, %s, %s)"
"""The call through psycopg's cursor (`crud_variants`, "int-keys-function")."""
PREPARED_NAME = b"crud_deduct_stock"
PREPARED_DEDUCT_STOCK = (b"SELECT deduct_stock($1::integer, $2::integer, $3::integer, "
                         b"$4::text, $5::date)")
"""The call as `sell` sends it: prepared once per connection, run over libpq with text
parameters, without psycopg's cursor and parameter adaptation (as stockledger sends its
append, `ledger/store/postgres/prepared.py`)."""

SELECT_IDS = """
SELECT o.id, v.id FROM outlet o, variation v WHERE o.name = %s AND v.sku = %s
"""
ENSURE_IDS = """
WITH o AS (INSERT INTO outlet (name) VALUES (%s) ON CONFLICT DO NOTHING),
     v AS (INSERT INTO variation (sku) VALUES (%s) ON CONFLICT DO NOTHING)
SELECT 1
"""


class InsufficientStock(Exception):
    pass


_prepared_on: weakref.WeakSet[psycopg.Connection[Any]] = weakref.WeakSet()

# Ids per connection (ids differ between databases): a till looks its outlet and SKU up once.
_ids: weakref.WeakKeyDictionary[psycopg.Connection[Any], dict[tuple[str, str], tuple[int, int]]]
_ids = weakref.WeakKeyDictionary()


def ids(conn: psycopg.Connection[Any], outlet: str, sku: str) -> tuple[int, int] | None:
    """The outlet's and the variation's integer ids, or None if either is unknown."""
    known = _ids.setdefault(conn, {})
    found = known.get((outlet, sku))
    if found is None:
        row = conn.execute(SELECT_IDS, (outlet, sku)).fetchone()
        if row is None:
            return None
        found = known[(outlet, sku)] = (int(row[0]), int(row[1]))
    return found


def ensure_ids(conn: psycopg.Connection[Any], outlet: str, sku: str) -> tuple[int, int]:
    """The outlet's and the variation's ids, creating their rows if need be."""
    conn.execute(ENSURE_IDS, (outlet, sku))
    found = ids(conn, outlet, sku)
    if found is None:  # the rows were created by the statement above
        raise RuntimeError(f"outlet {outlet} or variation {sku} missing after insert")
    return found


def create_schema(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(SCHEMA)
        conn.execute(DEDUCT_STOCK)


def seed_batches(conn: psycopg.Connection[Any], outlet: str, sku: str, count: int,
                 quantity: int, first_expiry: date, received_at: datetime | None = None) -> None:
    """Receive `count` batches of `quantity`, expiring one day apart per ten batches from
    `first_expiry`."""
    outlet_id, variation_id = ensure_ids(conn, outlet, sku)
    base = received_at or datetime.now().astimezone()
    with conn.transaction(), conn.cursor() as cur:
        with cur.copy("COPY batch (variation_id, outlet_id, quantity, expiry_date, received_at) "
                      "FROM STDIN") as copy:
            for i in range(count):
                copy.write_row((variation_id, outlet_id, quantity,
                                first_expiry + timedelta(days=i // 10),
                                base + timedelta(microseconds=i)))
        cur.execute(
            "INSERT INTO location_stock (variation_id, outlet_id, quantity) VALUES (%s, %s, 0) "
            "ON CONFLICT DO NOTHING", (variation_id, outlet_id))
        cur.execute(RESUM_STOCK, (variation_id, outlet_id, date.today(), variation_id,
                                  outlet_id))


def sell(conn: psycopg.Connection[Any], outlet: str, sku: str, quantity: int,
         reference: str) -> None:
    """One sale line, all or nothing, FEFO, as the old `deduct_stock()` did it: one call of
    `deduct_stock`, prepared once per connection and sent over libpq with text parameters;
    `conn` is in autocommit, so the call is its own transaction."""
    found = ids(conn, outlet, sku)
    if found is None:
        raise InsufficientStock(f"{outlet}/{sku}: asked {quantity}, no such stock item")
    outlet_id, variation_id = found
    pgconn = conn.pgconn
    if conn not in _prepared_on:
        _check(pgconn.prepare(PREPARED_NAME, PREPARED_DEDUCT_STOCK))
        _prepared_on.add(conn)
    result = pgconn.exec_prepared(PREPARED_NAME, [
        str(variation_id).encode(), str(outlet_id).encode(), str(quantity).encode(),
        reference.encode(), date.today().isoformat().encode()])
    if result.status == pq.ExecStatus.FATAL_ERROR:
        error = error_from_result(result)
        if error.sqlstate == INSUFFICIENT_STOCK_STATE:
            raise InsufficientStock(f"{outlet}/{sku}: {error.diag.message_primary}") from None
        raise error
    _check(result)


def _check(result: pq.abc.PGresult) -> None:
    if result.status not in (pq.ExecStatus.COMMAND_OK, pq.ExecStatus.TUPLES_OK):
        raise error_from_result(result)


def available(conn: psycopg.Connection[Any], outlet: str, sku: str) -> int:
    found = ids(conn, outlet, sku)
    if found is None:
        return 0
    outlet_id, variation_id = found
    row = conn.execute(AVAILABLE, (variation_id, outlet_id, date.today())).fetchone()
    return int(row[0]) if row else 0


def stock_row(conn: psycopg.Connection[Any], outlet: str, sku: str) -> int:
    found = ids(conn, outlet, sku)
    if found is None:
        return 0
    outlet_id, variation_id = found
    row = conn.execute("SELECT quantity FROM location_stock "
                       "WHERE variation_id = %s AND outlet_id = %s",
                       (variation_id, outlet_id)).fetchone()
    return int(row[0]) if row else 0


def units_sold(conn: psycopg.Connection[Any], outlet: str, sku: str) -> int:
    found = ids(conn, outlet, sku)
    if found is None:
        return 0
    outlet_id, variation_id = found
    row = conn.execute("SELECT COALESCE(-SUM(quantity), 0) FROM stock_movement "
                       "WHERE variation_id = %s AND outlet_id = %s AND movement_type = 'sale'",
                       (variation_id, outlet_id)).fetchone()
    return int(row[0]) if row else 0
