"""The import of opening balances against real stores: what it records, that a rerun records
nothing new, that a stopped run goes on without a duplicate or a gap, that a bad file records
nothing, and that checking a file takes the same memory whatever its length."""

from __future__ import annotations

import tracemalloc
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ledger.app import imports
from ledger.app.audit import verify_chain
from ledger.app.imports import BalanceImport, ImportSummary
from ledger.app.service import Ledger
from ledger.domain import identity
from ledger.domain.balance_import import BalanceImport as ImportProgress
from ledger.events import BatchReceived, OutletOpened, StockItemOpened
from projections.runner import ReadModels, create_read_models
from projections.verify import verify_read_models

HEADER = "outlet,sku,batch,quantity,expires_on,unit_cost,received_at\n"
BALANCES = HEADER + "".join([
    "NAIROBI-1,AMOX-500,L1,40,2027-03-01,0.12,2025-11-02T09:00:00+03:00\n",
    "NAIROBI-1,AMOX-500,L2,25,2027-01-15,0.11,2025-10-20T09:00:00+03:00\n",
    "NAIROBI-1,PARA-1G,P7,100,,,\n",
    "MOMBASA-2,AMOX-500,L1,10,2027-03-01,0.12,2025-11-03T10:00:00Z\n",
    "NAIROBI-1,AMOX-500,L1,5,2027-03-01,0.13,2025-11-20T09:00:00+03:00\n",
    "MOMBASA-2,ZINC-20,Z1,8,2026-12-31,1.5,2025-09-01\n",
    "\n",
    "NAIROBI-1,AMOX-500,L3,7,2027-06-30,0.125000,2025-12-01T08:00:00+03:00\n",
])


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def run_import(ledger: Ledger, path: Path, **options: Any) -> ImportSummary:
    with BalanceImport(ledger.application, path, actor="migration", **options) as run:
        run.check()
        assert not run.problems_found, list(run.problems())
        return run.record()


def stored(ledger: Ledger) -> list[tuple[int, Any]]:
    app = ledger.application
    return [(n.id, app.mapper.to_domain_event(n))
            for n in app.recorder.select_notifications(start=1, limit=10_000_000)]


def receipts(ledger: Ledger) -> list[BatchReceived]:
    return [e for _, e in stored(ledger) if isinstance(e, BatchReceived)]


def test_each_row_is_a_receipt_with_its_file_and_line(ledger: Ledger, tmp_path: Path) -> None:
    summary = run_import(ledger, write(tmp_path / "balances.csv", BALANCES), chunk_rows=2)
    assert (summary.rows, summary.lines, summary.rows_recorded, summary.stock_items,
            summary.outlets, summary.outlets_opened, summary.chunks) == (7, 9, 7, 4, 2, 2, 4)
    amox = ledger.stock_item("NAIROBI-1", "AMOX-500")
    assert amox.batch_quantities() == {"L1": 45, "L2": 25, "L3": 7}
    assert ledger.stock_level("MOMBASA-2", "ZINC-20").on_hand == 8
    assert ledger.stock_level("NAIROBI-1", "PARA-1G").available == 100
    by_line = {e.reference: e for e in receipts(ledger)}
    assert sorted(by_line) == [f"balances.csv:{n}" for n in (2, 3, 4, 5, 6, 7, 9)]
    second = by_line["balances.csv:6"]
    assert second.idempotency_key == f"import:{summary.digest[:16]}:6"
    assert second.batch.unit_cost == "0.13" and second.actor == "migration"
    assert by_line["balances.csv:9"].batch.unit_cost == "0.125000"
    assert by_line["balances.csv:7"].occurred_at.isoformat() == "2025-09-01T00:00:00+00:00"
    # Received in the order they came in: L2 (October) before L1 (November), then L1 again.
    assert [e.batch.batch_id for e in receipts(ledger)
            if e.outlet == "NAIROBI-1" and e.sku == "AMOX-500"] == ["L2", "L1", "L1", "L3"]
    progress = ledger.application.load(identity.balance_import_id(summary.digest))
    assert isinstance(progress, ImportProgress) and progress.complete
    assert progress.chunks == summary.chunks and progress.source == "balances.csv"
    positions = [p for p, _ in stored(ledger)]
    assert positions == list(range(1, len(positions) + 1))  # one import, no gap
    assert not verify_chain(ledger.application).findings
    create_read_models(ledger.application)
    ReadModels(ledger.application).catch_up()
    assert verify_read_models(ledger.application) == []


def test_the_same_file_again_records_nothing_new(ledger: Ledger, tmp_path: Path) -> None:
    path = write(tmp_path / "balances.csv", BALANCES)
    first = run_import(ledger, path)
    head = ledger.head_position()
    renamed = write(tmp_path / "copy-of-balances.csv", BALANCES)
    for again in (path, renamed):
        summary = run_import(ledger, again)
        assert (summary.rows_recorded, summary.rows_recorded_before) == (0, 7)
        assert summary.digest == first.digest and summary.lines is None  # known, not read
    assert ledger.head_position() == head


def test_a_stopped_import_goes_on_without_a_duplicate_or_a_gap(
        ledger: Ledger, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path / "balances.csv", BALANCES)
    recorder = ledger.application.recorder
    insert = recorder.insert_events
    appended = 0

    def fails_third(*args: Any, **kwargs: Any) -> Any:
        nonlocal appended
        appended += 1
        if appended == 3:
            raise KeyboardInterrupt  # as if stopped between two chunks' appends
        return insert(*args, **kwargs)

    monkeypatch.setattr(recorder, "insert_events", fails_third)
    with pytest.raises(KeyboardInterrupt):
        run_import(ledger, path, chunk_rows=2)
    monkeypatch.undo()
    # Two chunks of two rows: the Mombasa items, then half of Nairobi's AMOX-500.
    assert len(receipts(ledger)) == 4
    summary = run_import(ledger, path, chunk_rows=50)  # a rerun keeps the first chunking
    assert (summary.rows_recorded_before, summary.rows_recorded) == (4, 3)
    assert summary.chunk_rows == 2
    lines = Counter(e.reference for e in receipts(ledger))
    assert sorted(lines) == [f"balances.csv:{n}" for n in (2, 3, 4, 5, 6, 7, 9)]
    assert set(lines.values()) == {1}
    assert ledger.stock_item("NAIROBI-1", "AMOX-500").batch_quantities() == {
        "L1": 45, "L2": 25, "L3": 7}
    assert not verify_chain(ledger.application).findings


BAD = HEADER + "".join([
    "NAIROBI-1,AMOX-500,L1,40,2027-03-01,0.12,2025-11-02\n",           # 2 good
    "NAIROBI-1,AMOX-500,L2,25,2027-01-15\n",                           # 3 missing columns
    "NAIROBI-1,PARA-1G,P7,100,2027-02-30,,\n",                         # 4 bad date
    "NAIROBI-1,PARA-1G,P8,-5,,,\n",                                    # 5 negative quantity
    "NAIROBI-1,PARA-1G,P9,5,,0.1234567,\n",                            # 6 cost: 7 places
    "NAIROBI-1,AMOX-500,L1,5,2027-04-01,0.13,2025-11-20\n",            # 7 other expiry
    "MOMBASA-2,ZINC-20,Z1,8,2026-12-31,1.5,2025-09-01\n",              # 8 good
    "MOMBASA-2,ZINC-20,Z2,-1,2026-13-01,abc,yesterday\n",              # 9 four bad fields
])


def test_a_bad_file_names_every_bad_line_and_records_nothing(ledger: Ledger,
                                                              tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    with path.open("w", encoding="utf-8") as out:
        out.write(BAD)
        out.write("NAIROBI-1,AMOX-500," + "X" * 10_000_000 + ",1,,,\n")  # 10 a 10 MB line
        out.write("NAIROBI-1,IBU-200,I1,3,,,\n")                           # 11 good
    with BalanceImport(ledger.application, path, actor="migration") as run:
        run.check()
        found = [(p.line, p.field) for p in run.problems()]
        with pytest.raises(Exception, match="only once its check has passed"):
            run.record()
    assert found == [(3, "unit_cost"), (4, "expires_on"), (5, "quantity"), (6, "unit_cost"),
                     (7, "expires_on"), (9, "quantity"), (9, "expires_on"),
                     (9, "unit_cost"), (9, "received_at"), (10, "line")]
    assert ledger.head_position() == 0


def test_a_batch_the_store_holds_refuses_the_file(ledger: Ledger, tmp_path: Path) -> None:
    ledger.receive(outlet="MOMBASA-2", sku="ZINC-20", batch_id="Z1", quantity=3,
                   expires_on="2026-12-31")
    head = ledger.head_position()
    with BalanceImport(ledger.application, write(tmp_path / "b.csv", BALANCES),
                       actor="migration") as run:
        run.check()
        assert (run.problem_count, run.refusal_count) == (0, 1)
        [problem] = run.problems()
    assert (problem.line, problem.field) == (7, "batch")
    assert "already recorded" in problem.message
    assert ledger.head_position() == head


@pytest.mark.postgres
def test_worker_processes_record_what_one_process_records(tmp_path: Path) -> None:
    from tests.databases import fresh_database
    lines = [HEADER] + [
        f"OUT-{n % 3},SKU-{n % 41},B{n},{1 + n % 7},2027-0{1 + n % 9}-01,0.{n % 97:02d},"
        f"2025-1{n % 3}-0{1 + n % 9}T08:00:00Z\n" for n in range(3000)]
    path = write(tmp_path / "many.csv", "".join(lines))
    results = []
    for workers in (0, 2):
        with fresh_database() as url, Ledger.open(url, create_tables=True) as ledger:
            summary = run_import(ledger, path, workers=workers, chunk_rows=200)
            assert summary.workers == workers
            kinds = Counter(type(e).__name__ for _, e in stored(ledger))
            items = {(e.outlet, e.sku) for _, e in stored(ledger)
                     if isinstance(e, StockItemOpened)}
            stock = {item: ledger.stock_item(*item).batch_quantities() for item in items}
            assert not verify_chain(ledger.application).findings
            results.append((kinds, stock))
    assert results[0] == results[1]
    assert results[0][0]["BatchReceived"] == 3000
    assert results[0][0][OutletOpened.__name__] == 3


def _rows(count: int) -> Iterator[str]:
    yield HEADER
    for n in range(count):
        yield (f"OUTLET-{n % 7},SKU-{n % 997:05d},B{n:07d},{1 + n % 50},2027-0{1 + n % 9}-15,"
               f"0.{n % 100:02d},2025-12-{1 + n % 28:02d}T08:00:00Z\n")


def _check_peak(ledger: Ledger, path: Path) -> int:
    tracemalloc.start()
    try:
        with BalanceImport(ledger.application, path, actor="migration", workers=0) as run:
            run.check()
            assert not run.problems_found and run.rows > 0
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_checking_a_file_takes_the_same_memory_whatever_its_length(
        sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Smaller blocks than a real run's, so that files of modest size hold many of them.
    monkeypatch.setattr(imports, "BLOCK_LINES", 200)
    monkeypatch.setattr(imports, "SPILL_BATCH", 500)
    with Ledger.open(sqlite_url, create_tables=True) as ledger:
        peaks = {}
        for count in (4_000, 16_000):
            path = tmp_path / f"rows-{count}.csv"
            path.write_text("".join(_rows(count)), encoding="utf-8")
            peaks[count] = _check_peak(ledger, path)
    # Four times the rows, the same blocks in memory: what grows with the file (its rows,
    # its stock items) is on disk. (A copy of its rows in memory would be 4 MB more.)
    assert peaks[16_000] < 1.2 * peaks[4_000], peaks


def test_a_header_without_a_column_is_refused_before_any_row(ledger: Ledger,
                                                             tmp_path: Path) -> None:
    path = write(tmp_path / "h.csv", "outlet,sku,batch,quantity,expiry,unit_cost\n"
                                      "NAIROBI-1,AMOX-500,L1,40,2027-03-01,0.12\n")
    with BalanceImport(ledger.application, path, actor="migration") as run:
        run.check()
        assert [(p.line, p.field) for p in run.problems()] == [
            (1, "expiry"), (1, "expires_on"), (1, "received_at")]
        assert run.lines == 2
    assert ledger.head_position() == 0


def test_a_stock_item_split_over_chunks_is_snapshotted_as_a_command_would(
        ledger: Ledger, tmp_path: Path) -> None:
    from ledger.app.snapshot_audit import verify_snapshots
    lines = [HEADER] + [f"NAIROBI-1,AMOX-500,L{n:04d},{1 + n % 9},2027-0{1 + n % 9}-01,0.12,"
                        f"2025-11-{1 + n % 28:02d}T08:00:00Z\n" for n in range(450)]
    lines.append("NAIROBI-1,PARA-1G,P1,5,,,\n")
    summary = run_import(ledger, write(tmp_path / "big.csv", "".join(lines)), chunk_rows=200)
    assert (summary.chunks, summary.rows_recorded) == (3, 451)
    app = ledger.application
    snapshots = app.select_snapshots(None, 10)
    item = identity.stock_item_id("NAIROBI-1", "AMOX-500")
    # Taken as each chunk is recorded, at the version it leaves (the opening, then 200 and
    # 400 receipts), as a command's are when its version crosses a multiple of 200.
    assert [(s.originator_id, s.originator_version) for s in snapshots] == [
        (item, 201), (item, 401)]
    report = verify_snapshots(app)
    assert report.snapshots == 2 and report.findings == []
    app.evict(item)
    assert len(ledger.stock_item("NAIROBI-1", "AMOX-500").batches) == 450
