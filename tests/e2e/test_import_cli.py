"""`ledger import` as an operator types it: a CSV file of opening balances, then the reads and
`audit verify`; a bad file refused with every bad line named; a run killed half-way and run
again; and the old CRUD module's database imported with its stored totals reconciled."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner

from benchmarks.crud_baseline import SCHEMA as CRUD_SCHEMA
from benchmarks.crud_baseline import ensure_ids
from cli.main import main
from ledger.app.crud_import import BATCHES_QUERY, LOCATION_STOCK_QUERY
from ledger.app.service import Ledger
from ledger.domain import identity
from ledger.domain.balance_import import BalanceImport
from ledger.events import BatchReceived
from tests.databases import fresh_database
from tests.executables import ledger_executable

ROOT = Path(__file__).resolve().parents[2]
HEADER = "outlet,sku,batch,quantity,expires_on,unit_cost,received_at\n"
BALANCES = HEADER + "".join([
    "NAIROBI-1,AMOX-500,L1,40,2027-03-01,0.12,2025-11-02T09:00:00+03:00\n",
    "NAIROBI-1,AMOX-500,L2,25,2027-01-15,0.11,2025-10-20T09:00:00+03:00\n",
    "NAIROBI-1,PARA-1G,P7,100,,,\n",
    "MOMBASA-2,AMOX-500,L1,10,2027-03-01,0.12,2025-11-03T10:00:00Z\n",
    "NAIROBI-1,AMOX-500,L1,5,2027-03-01,0.13,2025-11-20T09:00:00+03:00\n",
    "NAIROBI-1,AMOX-500,L3,7,2027-06-30,0.125,2025-12-01T08:00:00+03:00\n",
])


@dataclass(frozen=True)
class Done:
    returncode: int
    stdout: str
    stderr: str


def environment(home: Path) -> dict[str, str | None]:
    return {"LEDGER_DATABASE_URL": None, "XDG_DATA_HOME": str(home / "xdg"),
            "HOME": str(home), "LEDGER_ACTOR": "e2e-test"}


def ledger_cli(url: str, home: Path, *args: str) -> Done:
    """`ledger --db URL ARGS...` in this process, as the other end-to-end tests run it."""
    result = CliRunner().invoke(main, ["--db", url, *args], env=environment(home),
                                catch_exceptions=False)
    return Done(result.exit_code, result.stdout, result.stderr)


def ok_json(url: str, home: Path, *args: str) -> dict[str, Any]:
    done = ledger_cli(url, home, *args, "--json")
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("\n") == 1, done.stdout
    payload: dict[str, Any] = json.loads(done.stdout)
    return payload


@pytest.fixture
def cli_url(store_url: str, tmp_path: Path) -> str:
    """A store as `ledger init` leaves it, on either backend."""
    assert ledger_cli(store_url, tmp_path, "init").returncode == 0
    return store_url


def head(url: str) -> int:
    with Ledger.open(url) as ledger:
        return ledger.head_position()


def test_a_csv_import_then_reads_history_and_verify(cli_url: str, tmp_path: Path) -> None:
    path = tmp_path / "balances.csv"
    path.write_text(BALANCES, encoding="utf-8")
    done = ledger_cli(cli_url, tmp_path, "import", "balances", str(path), "--progress")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("imported 6 rows of balances.csv (sha256 ")
    assert "read models caught up to position" in done.stdout
    assert "recording    [" in done.stderr and "rows/s" in done.stderr  # the progress bar

    stock = ok_json(cli_url, tmp_path, "stock", "--outlet", "NAIROBI-1")
    assert {r["sku"]: (r["on_hand"], r["available"]) for r in stock["stock"]} == {
        "AMOX-500": (77, 77), "PARA-1G": (100, 100)}
    batches = ok_json(cli_url, tmp_path, "batches", "--outlet", "NAIROBI-1", "--sku",
                      "AMOX-500")
    assert [(b["batch_id"], b["quantity"], b["expires_on"]) for b in batches["batches"]] == [
        ("L2", 25, "2027-01-15"), ("L1", 45, "2027-03-01"), ("L3", 7, "2027-06-30")]
    history = ok_json(cli_url, tmp_path, "history", "--outlet", "NAIROBI-1", "--sku",
                      "AMOX-500")
    assert sorted((m["kind"], m["reference"], m["quantity"]) for m in history["movements"]) == [
        ("received", "balances.csv:2", 40), ("received", "balances.csv:3", 25),
        ("received", "balances.csv:6", 5), ("received", "balances.csv:7", 7)]
    assert ok_json(cli_url, tmp_path, "audit", "verify")["ok"] is True

    recorded = head(cli_url)
    again = ok_json(cli_url, tmp_path, "import", "balances", str(path))
    assert (again["rows_recorded"], again["rows_recorded_before"]) == (0, 6)
    assert head(cli_url) == recorded
    text = ledger_cli(cli_url, tmp_path, "import", "balances", str(path))
    assert text.stdout.startswith("nothing new: all 6 rows of balances.csv")


BAD = HEADER + "".join([
    "NAIROBI-1,AMOX-500,L1,40,2027-03-01,0.12,2025-11-02\n",           # 2 good
    "NAIROBI-1,AMOX-500,L2,25,2027-01-15\n",                           # 3 missing columns
    "NAIROBI-1,PARA-1G,P7,100,2027-02-30,,\n",                         # 4 bad date
    "NAIROBI-1,PARA-1G,P8,-5,,,\n",                                    # 5 negative quantity
    "NAIROBI-1,PARA-1G,P9,5,,0.1234567,\n",                            # 6 cost: 7 places
    "NAIROBI-1,AMOX-500,L1,5,2027-04-01,0.13,2025-11-20\n",            # 7 other expiry
    "MOMBASA-2,ZINC-20,Z1,8,2026-12-31,1.5,2025-09-01\n",              # 8 good
])


def test_a_bad_file_is_refused_with_every_bad_line_named(cli_url: str, tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    with path.open("w", encoding="utf-8") as out:
        out.write(BAD)
        out.write("NAIROBI-1,AMOX-500," + "X" * 10_000_000 + ",1,,,\n")  # 9: 10 MB
        out.write("NAIROBI-1,IBU-200,I1,3,,,\n")                           # 10 good
    done = ledger_cli(cli_url, tmp_path, "import", "balances", str(path))
    assert done.returncode == 2 and done.stdout == ""
    lines = done.stderr.splitlines()
    assert [line.split(":")[1].strip() for line in lines[:-1]] == [
        "bad.csv line 3", "bad.csv line 4", "bad.csv line 5", "bad.csv line 6",
        "bad.csv line 7", "bad.csv line 9"]
    assert lines[0] == ("ledger: bad.csv line 3: unit_cost: is missing: the line has 5 "
                        "fields, the header 7")
    assert lines[1].startswith("ledger: bad.csv line 4: expires_on: ")
    assert lines[2].startswith("ledger: bad.csv line 5: quantity: ")
    assert "decimal places" in lines[3] and lines[3].split(": ")[2] == "unit_cost"
    assert lines[4].startswith("ledger: bad.csv line 7: expires_on: batch L1 of AMOX-500 at "
                               "NAIROBI-1 has expiry 2027-03-01 on line 2")
    assert lines[5] == "ledger: bad.csv line 9: line: is longer than 4096 bytes"
    assert lines[-1] == "ledger: 6 problems (bad lines) in bad.csv; nothing recorded"

    as_json = ledger_cli(cli_url, tmp_path, "import", "balances", str(path), "--json")
    assert as_json.returncode == 2
    report = json.loads(as_json.stdout)
    assert report["ok"] is False and report["recorded_rows"] == 0
    assert [(p["line"], p["field"]) for p in report["problems"]] == [
        (3, "unit_cost"), (4, "expires_on"), (5, "quantity"), (6, "unit_cost"),
        (7, "expires_on"), (9, "line")]
    assert head(cli_url) == 0


def test_a_batch_the_ledger_holds_is_refused_exit_1(cli_url: str, tmp_path: Path) -> None:
    assert ledger_cli(cli_url, tmp_path, "receive", "--outlet", "NAIROBI-1", "--sku",
                      "PARA-1G", "--batch", "P7", "--qty", "3").returncode == 0
    path = tmp_path / "balances.csv"
    path.write_text(BALANCES, encoding="utf-8")
    recorded = head(cli_url)
    done = ledger_cli(cli_url, tmp_path, "import", "balances", str(path))
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        "ledger: balances.csv line 4: batch: batch P7 of PARA-1G at NAIROBI-1 is already "
        "recorded in the ledger: an opening balance is a batch's first record",
        "ledger: 1 problems (rows refused by the ledger) in balances.csv; nothing recorded"]
    assert head(cli_url) == recorded


def test_a_dry_run_checks_everything_and_records_nothing(cli_url: str,
                                                         tmp_path: Path) -> None:
    path = tmp_path / "balances.csv"
    path.write_text(BALANCES, encoding="utf-8")
    done = ok_json(cli_url, tmp_path, "import", "balances", str(path), "--dry-run")
    assert (done["dry_run"], done["rows"], done["rows_recorded"]) == (True, 6, 0)
    assert done["read_models"] == {"caught_up": False}
    assert head(cli_url) == 0
    text = ledger_cli(cli_url, tmp_path, "import", "balances", str(path), "--dry-run")
    assert text.stdout == ("dry run: 6 rows of balances.csv checked, 6 would be recorded; "
                           "nothing recorded\n")


def test_an_unreadable_file_is_bad_input(cli_url: str, tmp_path: Path) -> None:
    done = ledger_cli(cli_url, tmp_path, "import", "balances", str(tmp_path / "none.csv"))
    assert done.returncode == 2
    assert done.stderr == f"ledger: invalid file: {tmp_path / 'none.csv'} is not a file " \
                          "that can be read\n"


# --------------------------------------------------------------------------- killed mid-way


ROWS = 12_000
CHUNK = 100


def _many_rows(path: Path) -> None:
    with path.open("w", encoding="utf-8") as out:
        out.write(HEADER)
        for n in range(ROWS):
            out.write(f"OUT-{n % 4},SKU-{n % 1500:04d},B{n:06d},{1 + n % 20},"
                      f"2027-0{1 + n % 9}-10,0.{n % 100:02d},2025-12-0{1 + n % 9}T08:00:00Z\n")


def _chunks_recorded(url: str, digest: str) -> int:
    with Ledger.open(url) as ledger:
        progress = ledger.application.load(identity.balance_import_id(digest))
        return progress.chunks_recorded if isinstance(progress, BalanceImport) else 0


def _script(url: str, home: Path, *args: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k != "LEDGER_DATABASE_URL"}
    env.update({k: v for k, v in environment(home).items() if v is not None})
    return subprocess.Popen([ledger_executable(), "--db", url, *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _children(pid: int) -> set[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return {int(p) for p in path.read_text().split()} if path.exists() else set()


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.parametrize("workers", ["0", "1"])
def test_an_import_killed_half_way_finishes_on_a_rerun(cli_url: str, tmp_path: Path,
                                                       workers: str) -> None:
    path = tmp_path / "many.csv"
    _many_rows(path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    args = ("import", "balances", str(path), "--chunk-rows", str(CHUNK), "--workers", workers,
            "--no-catch-up")
    child = _script(cli_url, tmp_path, *args)
    deadline = time.monotonic() + 300
    while _chunks_recorded(cli_url, digest) < 3:
        assert child.poll() is None, child.communicate()
        assert time.monotonic() < deadline, "the import recorded no chunk in time"
        time.sleep(0.02)
    helpers = _children(child.pid)
    child.send_signal(signal.SIGKILL)
    child.communicate()
    assert child.returncode == -signal.SIGKILL
    if workers != "0":
        assert helpers, "the import started no worker process"
        deadline = time.monotonic() + 10
        while any(_alive(pid) for pid in helpers):  # workers leave with their parent
            assert time.monotonic() < deadline, [p for p in helpers if _alive(p)]
            time.sleep(0.1)
    with Ledger.open(cli_url) as ledger:
        progress = ledger.application.load(identity.balance_import_id(digest))
        assert isinstance(progress, BalanceImport) and not progress.complete, \
            "the import finished before it was killed: make the file longer"
        recorded = [e for e in _events(ledger) if isinstance(e, BatchReceived)]
        assert len(recorded) == progress.rows_recorded  # whole chunks only
        stopped_at = progress.rows_recorded

    rerun = ok_json(cli_url, tmp_path, *args)
    assert (rerun["rows_recorded_before"], rerun["rows_recorded"]) == (
        stopped_at, ROWS - stopped_at)
    with Ledger.open(cli_url) as ledger:
        lines = Counter(e.reference for e in _events(ledger) if isinstance(e, BatchReceived))
    assert set(lines) == {f"many.csv:{n}" for n in range(2, ROWS + 2)}  # no gap
    assert set(lines.values()) == {1}  # no duplicate
    assert ok_json(cli_url, tmp_path, "audit", "verify")["ok"] is True
    assert ok_json(cli_url, tmp_path, "import", "balances", str(path))["rows_recorded"] == 0


def test_two_runs_of_one_file_at_once_record_each_row_once(cli_url: str,
                                                            tmp_path: Path) -> None:
    path = tmp_path / "many.csv"
    _many_rows(path)
    args = ("import", "balances", str(path), "--chunk-rows", str(CHUNK), "--workers", "0",
            "--no-catch-up", "--json")
    runs = [_script(cli_url, tmp_path, *args) for _ in range(2)]
    outcomes = [run.communicate(timeout=600) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], [err for _, err in outcomes]
    summaries = [json.loads(out) for out, _ in outcomes]
    assert sum(s["rows_recorded"] for s in summaries) == ROWS
    with Ledger.open(cli_url) as ledger:
        lines = Counter(e.reference for e in _events(ledger) if isinstance(e, BatchReceived))
    assert len(lines) == ROWS and set(lines.values()) == {1}
    assert ok_json(cli_url, tmp_path, "audit", "verify")["ok"] is True


def _events(ledger: Ledger) -> list[Any]:
    app = ledger.application
    found = []
    start = 1
    while True:
        page = app.recorder.select_notifications(start, 5000)
        found.extend(app.mapper.to_domain_event(n) for n in page)
        if len(page) < 5000:
            return found
        start = page[-1].id + 1


# --------------------------------------------------------------------------- the old system


TODAY = date(2026, 6, 1)


def _seed_crud(url: str) -> None:
    """The old module's tables, its batches and stored totals, with three deliberate drifts."""
    received = datetime(2025, 12, 1, 8, 0)
    batches: Sequence[tuple[str, str, int, date | None]] = [
        ("AMOX-500", "NAIROBI-1", 40, date(2027, 3, 1)),
        ("AMOX-500", "NAIROBI-1", 25, date(2027, 1, 15)),
        ("AMOX-500", "NAIROBI-1", 0, date(2026, 12, 1)),       # used up: not imported
        ("AMOX-500", "NAIROBI-1", 6, date(2026, 5, 1)),        # expired before TODAY
        ("PARA-1G", "NAIROBI-1", 100, date(2028, 1, 1)),
        ("PARA-1G", "MOMBASA-2", 30, date(2027, 8, 1)),
        ("ZINC-20", "MOMBASA-2", 12, None),                      # no expiry
        ("IBU-200", "MOMBASA-2", 9, date(2027, 2, 1)),
    ]
    stored = [
        ("AMOX-500", "NAIROBI-1", 65),   # 40 + 25: the expired 6 are not on the shelf
        ("PARA-1G", "NAIROBI-1", 100),
        ("PARA-1G", "MOMBASA-2", 33),    # drifted: 3 more than its batches
        ("ZINC-20", "MOMBASA-2", 12),
        ("CALM-5", "MOMBASA-2", 4),      # drifted: a total without batches
        # IBU-200 at MOMBASA-2 has batches and no stored total: drifted too
    ]
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute(CRUD_SCHEMA)
        for n, (variation, outlet, quantity, expiry) in enumerate(batches):
            outlet_id, variation_id = ensure_ids(connection, outlet, variation)
            connection.execute(
                "INSERT INTO batch (variation_id, outlet_id, quantity, expiry_date, "
                "received_at) VALUES (%s, %s, %s, %s, %s)",
                (variation_id, outlet_id, quantity, expiry, received + timedelta(days=n)))
        for variation, outlet, quantity in stored:
            outlet_id, variation_id = ensure_ids(connection, outlet, variation)
            connection.execute(
                "INSERT INTO location_stock (variation_id, outlet_id, quantity) "
                "VALUES (%s, %s, %s)",
                (variation_id, outlet_id, quantity))


@pytest.mark.postgres
def test_the_old_system_is_imported_and_its_drifted_totals_listed(cli_url: str,
                                                                  tmp_path: Path) -> None:
    with fresh_database() as crud_url:
        _seed_crud(crud_url)
        report = tmp_path / "reconciliation.csv"
        args = ("import", "crud", "--from", crud_url, "--as-of", TODAY.isoformat())
        done = ok_json(cli_url, tmp_path, *args, "--report", str(report))
        again = ok_json(cli_url, tmp_path, *args)
    assert (done["rows"], done["rows_recorded"], done["stock_items"]) == (7, 7, 5)
    assert done["source"].startswith("crud-") and done["source"].endswith("-batches.csv")
    reconciliation = done["reconciliation"]
    assert reconciliation["stock_items"] == 6 and reconciliation["as_of"] == "2026-06-01"
    assert [(d["outlet"], d["sku"], d["location_stock"], d["imported_available"], d["drift"])
            for d in reconciliation["drifted"]] == [
        ("MOMBASA-2", "CALM-5", 4, 0, 4),
        ("MOMBASA-2", "IBU-200", None, 9, -9),
        ("MOMBASA-2", "PARA-1G", 33, 30, 3)]
    rows = report.read_text(encoding="utf-8").splitlines()
    assert rows[0] == "outlet,sku,location_stock,batches,imported,imported_available,drift"
    assert "NAIROBI-1,AMOX-500,65,3,71,65,0" in rows and len(rows) == 7
    # The same snapshot of the old system again: nothing new, the same reconciliation.
    assert (again["rows_recorded"], again["rows_recorded_before"]) == (0, 7)
    assert again["reconciliation"] == reconciliation

    stock = ok_json(cli_url, tmp_path, "stock", "--outlet", "NAIROBI-1", "--sku", "AMOX-500")
    assert [(r["on_hand"], r["available"]) for r in stock["stock"]] == [(71, 65)]
    history = ok_json(cli_url, tmp_path, "history", "--outlet", "MOMBASA-2", "--sku",
                      "ZINC-20")
    [zinc] = history["movements"]
    assert zinc["reference"] == f"{done['source']}:7" and zinc["batch_id"] == "7"
    assert ok_json(cli_url, tmp_path, "audit", "verify")["ok"] is True


def test_the_documented_queries_are_the_ones_the_import_runs() -> None:
    guide = (ROOT / "docs" / "import.md").read_text(encoding="utf-8")
    assert BATCHES_QUERY in guide and LOCATION_STOCK_QUERY in guide
