"""The rules of an import of opening balances, as pure functions, and the reading of its file."""

from __future__ import annotations

import hashlib
import io
from datetime import UTC, date, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger.app.import_files import (
    MAX_LINE_BYTES,
    check_line,
    header,
    physical_lines,
)
from ledger.domain.balance_import import BalanceImport
from ledger.domain.errors import InvariantBroken
from ledger.domain.opening_balances import (
    BalanceRow,
    Chunk,
    ItemTotals,
    already_recorded,
    by_stock_item,
    expiry_conflicts,
    item_totals,
    plan_chunks,
    receive_rows,
    reconcile,
)
from ledger.domain.stock_item import MovementContext, StockItem

MARCH = date(2027, 3, 1)
APRIL = date(2027, 4, 1)


def row(line: int, batch: str = "B1", *, outlet: str = "NAIROBI-1", sku: str = "AMOX-500",
        quantity: int = 10, expires_on: date | None = MARCH,
        unit_cost: str | None = "0.12") -> BalanceRow:
    return BalanceRow(line, outlet, sku, batch, quantity, expires_on, unit_cost, None)


# --------------------------------------------------------------------------- file rules


def test_a_batch_given_two_expiries_names_the_later_line_and_the_first() -> None:
    rows = [row(2), row(3, "B2"), row(7, expires_on=APRIL)]
    problems = list(expiry_conflicts(rows))
    assert [(p.line, p.field) for p in problems] == [(7, "expires_on")]
    assert "expiry 2027-03-01 on line 2, not expiry 2027-04-01" in problems[0].message


def test_a_batch_received_twice_with_one_expiry_is_two_receipts_not_a_conflict() -> None:
    assert list(expiry_conflicts([row(2, unit_cost="0.12"), row(3, unit_cost="0.15")])) == []


def test_no_expiry_against_an_expiry_is_a_conflict() -> None:
    problems = list(expiry_conflicts([row(2, expires_on=None), row(3)]))
    assert [p.line for p in problems] == [3]
    assert "no expiry on line 2, not expiry 2027-03-01" in problems[0].message


def test_rows_come_in_runs_of_one_stock_item() -> None:
    rows = [row(2), row(3), row(4, sku="PARA-1G"), row(5, outlet="MOMBASA-2")]
    assert [[r.line for r in run] for run in by_stock_item(rows)] == [[2, 3], [4], [5]]


# --------------------------------------------------------------------------- store rules


def test_a_batch_the_store_holds_is_refused_unless_this_import_recorded_it() -> None:
    recorded = {"B1": MARCH, "B9": None}
    problems = list(already_recorded(recorded, {"B9"}, [row(2), row(3, "B9", expires_on=None),
                                                       row(4, "B5")]))
    assert [(p.line, p.field) for p in problems] == [(2, "batch")]
    assert "already recorded in the ledger" in problems[0].message


def test_a_batch_this_import_recorded_keeps_its_expiry() -> None:
    problems = list(already_recorded({"B1": MARCH}, {"B1"}, [row(5, expires_on=APRIL)]))
    assert [(p.line, p.field) for p in problems] == [(5, "expires_on")]


def test_rows_become_receipts_of_their_stock_item_settling_a_shortfall_first() -> None:
    item = StockItem.open("NAIROBI-1", "AMOX-500")
    item.shortfall = 4  # sold into negative before the opening balance came over
    when = datetime(2026, 1, 5, tzinfo=UTC)
    receive_rows(item, [row(2), row(3, "B2", quantity=5)],
                 lambda r: MovementContext(when, "migration", f"f.csv:{r.line}",
                                           f"import:d:{r.line}"))
    received = item.pending_events[1:]
    assert [e.reference for e in received] == ["f.csv:2", "f.csv:3"]  # type: ignore[attr-defined]
    assert [e.shortfall_settled for e in received] == [4, 0]  # type: ignore[attr-defined]
    assert item.batch_quantities() == {"B1": 6, "B2": 5}
    assert item.on_hand == 11


# --------------------------------------------------------------------------- chunks


def test_chunks_hold_whole_stock_items_and_split_only_one_too_big() -> None:
    assert list(plan_chunks([3, 4, 5000, 1, 2], 2000)) == [
        Chunk(0, 1, 7, False), Chunk(1, 8, 2000, False), Chunk(2, 2008, 2000, True),
        Chunk(3, 4008, 1003, True)]
    assert list(plan_chunks([2000, 1999, 1], 2000)) == [
        Chunk(0, 1, 2000, False), Chunk(1, 2001, 2000, False)]


@given(st.lists(st.integers(1, 50), max_size=60), st.integers(1, 40))
def test_chunks_cover_every_row_once_in_order(sizes: list[int], chunk_rows: int) -> None:
    chunks = list(plan_chunks(sizes, chunk_rows))
    assert [c.index for c in chunks] == list(range(len(chunks)))
    first = 1
    for chunk in chunks:
        assert chunk.first_row == first and 1 <= chunk.rows <= chunk_rows
        first += chunk.rows
    assert first == sum(sizes) + 1
    starts = {sum(sizes[:n]) + 1 for n in range(len(sizes))}
    for chunk in chunks:  # a chunk starts a stock item unless it goes on with a split one
        assert (chunk.first_row in starts) != chunk.continues_item
    assert list(plan_chunks(sizes, chunk_rows)) == chunks


def test_an_import_records_its_chunks_in_order_and_once() -> None:
    progress = BalanceImport.start("f.csv", "d" * 64, rows=5, chunks=2, chunk_rows=3,
                                   actor="migration")
    progress.record_chunk(0, 1, 3)
    with pytest.raises(InvariantBroken):
        progress.record_chunk(0, 1, 3)
    with pytest.raises(InvariantBroken):
        progress.record_chunk(1, 5, 1)  # a gap: rows 4 and 5 come next
    progress.record_chunk(1, 4, 2)
    assert progress.complete and progress.rows_recorded == 5
    with pytest.raises(InvariantBroken):
        BalanceImport.start("f.csv", "d" * 64, rows=7, chunks=2, chunk_rows=3, actor="m")


# --------------------------------------------------------------------------- reconciliation


def test_reconciliation_holds_the_stored_totals_against_the_available_batches() -> None:
    rows = [row(2, "B1", quantity=10), row(3, "B2", quantity=4, expires_on=date(2026, 1, 1)),
            row(4, "B1", sku="PARA-1G", quantity=7, expires_on=None),
            row(5, "B1", sku="ZINC-20", quantity=3)]
    totals = list(item_totals(rows, date(2026, 6, 1)))
    assert totals[0] == ItemTotals("NAIROBI-1", "AMOX-500", 2, 14, 10)
    stored = [("NAIROBI-1", "AMOX-500", 10), ("NAIROBI-1", "IBU-200", 5),
              ("NAIROBI-1", "PARA-1G", 8)]
    items = list(reconcile(stored, totals))
    assert [(i.sku, i.stored, i.imported, i.imported_available, i.drift) for i in items] == [
        ("AMOX-500", 10, 14, 10, 0),     # the expired batch was not in the stored total
        ("IBU-200", 5, 0, 0, 5),         # a stored total without batches
        ("PARA-1G", 8, 7, 7, 1),         # drifted by one
        ("ZINC-20", None, 3, 3, -3)]     # batches without a stored total
    assert [i.sku for i in items if i.drifted] == ["IBU-200", "PARA-1G", "ZINC-20"]


# --------------------------------------------------------------------------- reading


def test_a_line_longer_than_the_limit_is_dropped_unread_and_the_next_one_read() -> None:
    data = b"outlet,sku\n" + b"x" * 10_000_000 + b"\nO1,S1\r\nlast"
    digest = hashlib.sha256()
    lines = list(physical_lines(io.BytesIO(data), digest))
    assert lines == [(1, b"outlet,sku"), (2, None), (3, b"O1,S1"), (4, b"last")]
    assert digest.hexdigest() == hashlib.sha256(data).hexdigest()
    at_limit = b"y" * MAX_LINE_BYTES
    assert list(physical_lines(io.BytesIO(at_limit + b"\n"), hashlib.sha256())) == [
        (1, at_limit)]
    assert list(physical_lines(io.BytesIO(at_limit + b"z\n"), hashlib.sha256())) == [
        (1, None)]


def test_a_header_names_every_column_once() -> None:
    order, problems = header(b"sku,outlet,batch,quantity,expires_on,unit_cost,received_at")
    assert order == [1, 0, 2, 3, 4, 5, 6] and problems == []
    _, problems = header(b"outlet,sku,batch,qty,expires_on,unit_cost,outlet")
    assert [(p.field, p.message.split(" (")[0]) for p in problems] == [
        ("qty", "is not a column of an import"), ("outlet", "is named twice"),
        ("quantity", "is missing from the header row"),
        ("received_at", "is missing from the header row")]


ORDER = list(range(7))


def test_every_refused_field_of_a_row_is_reported_with_its_column() -> None:
    problems = check_line(9, b"NAIROBI-1,AMOX 500,B1,-3,2027-02-30,0.1234567,", ORDER)
    assert isinstance(problems, list)
    assert [(line, field) for line, field, _ in problems] == [
        (9, "sku"), (9, "quantity"), (9, "expires_on"), (9, "unit_cost")]
    assert "decimal places" in problems[3][2]


def test_a_row_is_checked_by_the_receipt_command_rules() -> None:
    spilled = check_line(2, b'NAIROBI-1,AMOX-500,"B1",12,,0.120,2026-01-05T08:00+03:00',
                         ORDER)
    moment = datetime(2026, 1, 5, 5, 0, tzinfo=UTC)
    assert spilled == (2, "NAIROBI-1", "AMOX-500", "B1", 12, None, "0.120",
                       "2026-01-05T08:00:00+03:00", int(moment.timestamp()) * 1_000_000)
    future = check_line(3, b"NAIROBI-1,AMOX-500,B1,12,,,2999-01-01", ORDER)
    assert future == [(3, "received_at", "lies in the future")]
    short = check_line(4, b"NAIROBI-1,AMOX-500,B1,12", ORDER)
    assert isinstance(short, list) and short[0][:2] == (4, "expires_on")
    assert check_line(5, b"\xff,b", ORDER) == [
        (5, "line", "is not UTF-8 text (byte 1)")]
