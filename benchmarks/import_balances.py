"""The import of opening balances on PostgreSQL, against the raw COPY of the same rows.

`python -m benchmarks.import_balances [--rows N] [--workers auto,0,1,2] [--chunk-rows N]
[--json]` writes an import file of N rows (default 1,000,000: four batches per stock item over
50 outlets, in the interleaved order an old system's export by batch id has), then in one run:

1. the raw ceiling: the same rows copied into a plain table of seven columns in a throwaway
   database, as `benchmarks/raw_ceiling.py` measures its COPY (100 rows per transaction,
   one client), and once more as one COPY of the whole file;
2. for each worker setting, `ledger import balances FILE --json --no-catch-up` into a fresh
   store (`ledger init`), as a user runs it, timed from start to exit; then `ledger
   projections catch-up`, and `ledger audit verify --json`, which must pass;
3. the raw COPY again: the machine drifts, so the imports are compared with the mean of the
   two.

It prints the figures and the targets (issue 21: a million rows in under 90 s, at no less
than 20% of the raw COPY rate), a smaller run's time for a million rows projected from its
rate."""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg

from benchmarks.database import admin_url, server_settings, throwaway_database
from benchmarks.machine import describe

HEADER = "outlet,sku,batch,quantity,expires_on,unit_cost,received_at\n"
OUTLETS = 50
BATCHES_PER_ITEM = 4
TARGET_ROWS = 1_000_000
TARGET_SECONDS = 90.0
TARGET_SHARE_OF_COPY = 0.20
RAW_TABLE = ("CREATE TABLE raw_balances (outlet text, sku text, batch text, quantity integer, "
             "expires_on date, unit_cost numeric, received_at timestamptz)")
RAW_COLUMNS = "outlet, sku, batch, quantity, expires_on, unit_cost, received_at"
CLI = "import sys; from cli.main import main; sys.exit(main())"
CLI_REPORTING_PEAK = """
import atexit, sys
def _peak():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                print(f"[peak-rss-kib] {line.split()[1]}", file=sys.stderr)
atexit.register(_peak)
from cli.main import main
sys.exit(main())
"""
"""The `ledger` command, reporting its own peak RSS (`VmHWM`) on stderr as it exits."""


def write_rows(path: Path, rows: int) -> None:
    """An import file of `rows` rows: stock items of four batches each, over `OUTLETS`
    outlets, the rows of one stock item far apart (as an export in batch id order)."""
    items = max(1, rows // BATCHES_PER_ITEM)
    stride = 7919 if items % 7919 else 7907  # coprime with the item count: every item
    with path.open("w", encoding="utf-8", newline="") as out:
        out.write(HEADER)
        for n in range(rows):
            item = (n * stride) % items
            outlet, sku = item % OUTLETS, item // OUTLETS
            out.write(f"OUTLET-{outlet:02d},SKU-{sku:06d},B{n:08d},{1 + n % 500},"
                      f"2027-{1 + n % 12:02d}-{1 + n % 28:02d},{n % 999 / 100 + 0.01:.2f},"
                      f"2025-{1 + n % 12:02d}-{1 + n % 28:02d}T{n % 24:02d}:00:00+03:00\n")


def _rows_of(path: Path) -> list[tuple[str, ...]]:
    with path.open(newline="", encoding="utf-8") as stream:
        reader = csv.reader(stream)
        next(reader)
        return [tuple(row) for row in reader]


def raw_copy(admin: str, path: Path) -> dict[str, float]:
    """The same rows into a plain table: 100 rows per COPY transaction from one client, as
    the raw ceiling measures it, and the whole file as one COPY; rows per second."""
    rows = _rows_of(path)
    figures: dict[str, float] = {}
    with throwaway_database(admin, "raw_import") as url, \
            psycopg.connect(url, autocommit=True) as connection:
        connection.execute(RAW_TABLE)
        started = time.perf_counter()
        with connection.cursor() as cursor:
            for first in range(0, len(rows), 100):
                with connection.transaction(), cursor.copy(
                        f"COPY raw_balances ({RAW_COLUMNS}) FROM STDIN") as copy:
                    for row in rows[first:first + 100]:
                        copy.write_row([value or None for value in row])
        figures["copy_100_per_txn"] = len(rows) / (time.perf_counter() - started)
        connection.execute("TRUNCATE raw_balances")
        started = time.perf_counter()
        with connection.cursor() as cursor, path.open("rb") as stream, cursor.copy(
                f"COPY raw_balances ({RAW_COLUMNS}) FROM STDIN WITH (FORMAT csv, HEADER)"
                ) as copy:
            while block := stream.read(1 << 20):
                copy.write(block)
        figures["copy_one_statement"] = len(rows) / (time.perf_counter() - started)
    return figures


def _ledger(url: str, *args: str, program: str = CLI) -> tuple[float, str, str]:
    """`ledger --db URL ARGS...` in a child process; its seconds, stdout and stderr."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", program, "--db", url, *args], check=False,
                          capture_output=True, text=True, env=os.environ.copy())
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"ledger {' '.join(args)} failed ({done.returncode}): "
                         f"{done.stderr[-2000:]}")
    return seconds, done.stdout, done.stderr


def import_once(admin: str, path: Path, rows: int, workers: int | None,
                chunk_rows: int | None) -> dict[str, Any]:
    """`ledger import balances` of `path` into a fresh store, then catch-up and verify."""
    options = ["--json", "--no-catch-up", "--no-progress"]
    if workers is not None:
        options += ["--workers", str(workers)]
    if chunk_rows is not None:
        options += ["--chunk-rows", str(chunk_rows)]
    with throwaway_database(admin, "import") as url:
        _ledger(url, "init")
        print(f"[bench] ledger import balances (workers {workers})", file=sys.stderr,
              flush=True)
        import_seconds, out, err = _ledger(url, "import", "balances", str(path), *options,
                                           program=CLI_REPORTING_PEAK)
        peak_kib = next(int(line.split()[1]) for line in err.splitlines()
                        if line.startswith("[peak-rss-kib]"))
        summary = json.loads(out)
        print("[bench] projections catch-up", file=sys.stderr, flush=True)
        catch_up_seconds, _, _ = _ledger(url, "projections", "catch-up")
        print("[bench] audit verify", file=sys.stderr, flush=True)
        verify_seconds, verified, _ = _ledger(url, "audit", "verify", "--json")
        report = json.loads(verified)
    return {
        "workers": summary["workers"],
        "import_seconds": round(import_seconds, 2),
        "import_rows_per_second": round(rows / import_seconds),
        "check_seconds": summary["check_seconds"],
        "record_seconds": summary["record_seconds"],
        "chunks": summary["chunks"],
        "chunk_rows": summary["chunk_rows"],
        "events": summary["last_position"],
        "importing_process_peak_rss_mib": round(peak_kib / 1024, 1),
        "catch_up_seconds": round(catch_up_seconds, 2),
        "verify_seconds": round(verify_seconds, 2),
        "verify_ok": report["ok"],
        "verified_events": report["events"],
    }


def measure(admin: str, rows: int, workers: list[int | None], chunk_rows: int | None,
            scratch: Path) -> dict[str, Any]:
    """The raw COPY before and after the imports (the machine drifts), and one import per
    setting of `workers`."""
    path = scratch / "balances.csv"
    write_rows(path, rows)
    print(f"[bench] {rows:,} rows written ({path.stat().st_size / 1e6:.1f} MB); raw COPY",
          file=sys.stderr, flush=True)
    before = raw_copy(admin, path)
    imports = [import_once(admin, path, rows, setting, chunk_rows) for setting in workers]
    print("[bench] raw COPY again", file=sys.stderr, flush=True)
    after = raw_copy(admin, path)
    copy_100 = (before["copy_100_per_txn"] + after["copy_100_per_txn"]) / 2
    copy_one = (before["copy_one_statement"] + after["copy_one_statement"]) / 2
    for result in imports:
        rate = result["import_rows_per_second"]
        result["share_of_copy_100_per_txn"] = round(rate / copy_100, 3)
        result["share_of_copy_one_statement"] = round(rate / copy_one, 3)
        result["projected_seconds_for_1m_rows"] = round(TARGET_ROWS / rate, 1)
    return {
        "rows": rows,
        "file_mb": round(path.stat().st_size / 1e6, 1),
        "raw_copy_100_per_txn_rows_per_second": [round(before["copy_100_per_txn"]),
                                                 round(after["copy_100_per_txn"])],
        "raw_copy_one_statement_rows_per_second": [round(before["copy_one_statement"]),
                                                   round(after["copy_one_statement"])],
        "imports": imports,
    }


def targets(rows: int, result: dict[str, Any]) -> list[tuple[str, bool]]:
    """The issue's targets for one import of the run."""
    seconds = result["import_seconds"] if rows >= TARGET_ROWS else \
        result["projected_seconds_for_1m_rows"]
    return [
        (f"1,000,000 rows in under {TARGET_SECONDS:.0f} s"
         + ("" if rows >= TARGET_ROWS else " (projected from this run's rate)"),
         seconds < TARGET_SECONDS),
        (f"at least {TARGET_SHARE_OF_COPY:.0%} of the raw COPY rate (100 rows/txn, as the "
         "raw ceiling)", result["share_of_copy_100_per_txn"] >= TARGET_SHARE_OF_COPY),
        ("audit verify passes afterwards", bool(result["verify_ok"])),
    ]


def _workers(text: str) -> list[int | None]:
    return [None if part == "auto" else int(part) for part in text.split(",")]


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.import_balances",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=TARGET_ROWS)
    parser.add_argument("--workers", type=_workers, default=[None],
                        help="worker settings to run, one import each: 'auto' (the "
                             "import's own choice) or a number, comma-separated (0,1,2)")
    parser.add_argument("--chunk-rows", type=int, default=None)
    parser.add_argument("--postgres-url", default=None)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    arguments = parser.parse_args()
    admin = admin_url(arguments.postgres_url)
    with tempfile.TemporaryDirectory(prefix="bench-import-") as scratch:
        result = measure(admin, arguments.rows, arguments.workers, arguments.chunk_rows,
                         Path(scratch))
    checks = [targets(arguments.rows, run) for run in result["imports"]]
    if arguments.json:
        print(json.dumps({"machine": describe(), "server": server_settings(admin),
                          "figures": result,
                          "targets": [{name: passed for name, passed in run}
                                      for run in checks]}))
        return
    machine = describe()
    print(f"machine: {machine['nproc']} cores, {machine['cpu']}, Python {machine['python']}")
    print(f"rows {result['rows']:,} ({result['file_mb']} MB); raw COPY before/after: "
          f"{result['raw_copy_100_per_txn_rows_per_second']} rows/s at 100 rows/txn, "
          f"{result['raw_copy_one_statement_rows_per_second']} rows/s as one statement")
    for run, run_checks in zip(result["imports"], checks, strict=True):
        print(f"-- workers {run['workers']}")
        for name, value in run.items():
            print(f"   {name:<34} {value!s:>14}")
        for name, passed in run_checks:
            print(f"   {'PASS' if passed else 'FAIL'}  {name}")


if __name__ == "__main__":
    main()
