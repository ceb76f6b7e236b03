"""The CRUD baselines the benchmarks compare against sell as the old `deduct_stock()` did:
first expiry first out over the live batches, all or nothing, movements and stock row kept."""

from __future__ import annotations

from datetime import date, timedelta

import psycopg
import pytest

from benchmarks import crud_variants
from benchmarks.crud_baseline import InsufficientStock

pytestmark = pytest.mark.postgres

NAMES = ["baseline", *crud_variants.VARIANTS]


def _quantities(conn: psycopg.Connection[object]) -> list[int]:
    """Every batch's quantity, in the order received."""
    return [int(q) for (q,) in conn.execute("SELECT quantity FROM batch ORDER BY id")]


@pytest.mark.parametrize("name", NAMES)
def test_a_sale_takes_the_earliest_expiry_first_across_batches(postgres_url: str,
                                                               name: str) -> None:
    variant = crud_variants.variant(name)
    variant.create_schema(postgres_url)
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        # Ten batches per expiry day: the first ten expire in 30 days, the next two in 31.
        variant.seed_batches(conn, "NAIROBI-1", "AMOX-500", 12, 2,
                             date.today() + timedelta(days=30))
        variant.seed_batches(conn, "NAIROBI-1", "IBU-200", 1, 5,
                             date.today() + timedelta(days=1))
        variant.sell(conn, "NAIROBI-1", "AMOX-500", 5, "S-1")
        variant.sell(conn, "NAIROBI-1", "AMOX-500", 1, "S-2")
        assert _quantities(conn) == [0, 0, 0, 2, 2, 2, 2, 2, 2, 2,
                                                             2, 2, 5]
        assert variant.available(conn, "NAIROBI-1", "AMOX-500") == 24 - 6
        assert variant.available(conn, "NAIROBI-1", "IBU-200") == 5
        movements = conn.execute("SELECT batch_id, quantity, reference FROM stock_movement "
                                 "ORDER BY id").fetchall()
        assert movements == [(1, -2, "S-1"), (2, -2, "S-1"), (3, -1, "S-1"), (3, -1, "S-2")]
        stock = conn.execute("SELECT quantity FROM location_stock").fetchall()
        assert sorted(int(q) for (q,) in stock) == [5, 18]


@pytest.mark.parametrize("name", NAMES)
def test_a_sale_short_of_stock_changes_nothing(postgres_url: str, name: str) -> None:
    variant = crud_variants.variant(name)
    variant.create_schema(postgres_url)
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        variant.seed_batches(conn, "NAIROBI-1", "AMOX-500", 3, 2,
                             date.today() + timedelta(days=30))
        with pytest.raises(InsufficientStock, match="asked 7"):
            variant.sell(conn, "NAIROBI-1", "AMOX-500", 7, "S-1")
        assert variant.available(conn, "NAIROBI-1", "AMOX-500") == 6
        assert conn.execute("SELECT count(*) FROM stock_movement").fetchone() == (0,)
        # The connection is usable again, for a sale that fits.
        variant.sell(conn, "NAIROBI-1", "AMOX-500", 6, "S-2")
        assert variant.available(conn, "NAIROBI-1", "AMOX-500") == 0


@pytest.mark.parametrize("name", NAMES)
def test_expired_batches_are_never_sold(postgres_url: str, name: str) -> None:
    variant = crud_variants.variant(name)
    variant.create_schema(postgres_url)
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        variant.seed_batches(conn, "NAIROBI-1", "AMOX-500", 1, 4, date.today())
        variant.seed_batches(conn, "NAIROBI-1", "AMOX-500", 1, 3,
                             date.today() + timedelta(days=1))
        assert variant.available(conn, "NAIROBI-1", "AMOX-500") == 3
        with pytest.raises(InsufficientStock):
            variant.sell(conn, "NAIROBI-1", "AMOX-500", 4, "S-1")
        variant.sell(conn, "NAIROBI-1", "AMOX-500", 3, "S-2")
        assert _quantities(conn) == [4, 0]
