"""The spill's stock items, counted from three columns, are the runs `by_stock_item` makes of
its rows, and a stock item is flagged for the expiry check exactly when a batch id repeats in
it (the only case in which `expiry_conflicts` can find anything)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.app.import_files import Spill
from ledger.domain.opening_balances import by_stock_item, expiry_conflicts

_ROW = st.tuples(st.sampled_from(["O1", "O2", "o1"]), st.sampled_from(["A", "B", "AB"]),
                 st.sampled_from(["B1", "B2", "b1"]),
                 st.sampled_from([None, "2027-01-01", "2027-02-01"]),
                 st.integers(min_value=0, max_value=3))


@settings(max_examples=60, deadline=None)
@given(st.lists(_ROW, max_size=40))
def test_stock_items_in_order_are_the_runs_of_the_rows(
        rows: list[tuple[str, str, str, str | None, int]]) -> None:
    spill = Spill()
    try:
        spill.add_rows([(line, outlet, sku, batch, 1, expires, None, None, key)
                        for line, (outlet, sku, batch, expires, key) in enumerate(rows, 2)])
        spill.order()
        runs = list(by_stock_item(spill.rows_in_order()))
        expected, first = [], 1
        for run in runs:
            batches = [row.batch_id for row in run]
            expected.append((first, len(run), run[0].outlet, run[0].sku,
                             len(set(batches)) < len(batches)))
            first += len(run)
            if len(set(batches)) == len(batches):
                assert list(expiry_conflicts(run)) == []
        assert list(spill.stock_items_in_order()) == expected
    finally:
        spill.close()
