"""`python -m benchmarks.http [--quick] [--workers N] [--json] [--postgres-url URL]`.

Starts `ledger serve` on a fresh PostgreSQL database (127.0.0.1, a free port), drives it with
wrk (`apt-get install wrk`) and prints, in one run: sales/s and latency with 8 connections
on distinct SKUs and on one hot SKU against the direct Python API's 8 processes and the CRUD
baseline's 8 clients on the hot SKU, one client's sale latency over HTTP against the direct
call, and the server's memory over a 60 s run (20 s with --quick), with the targets' verdicts.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from benchmarks.database import admin_url
from benchmarks.http.report import render
from benchmarks.http.suite import run

DEFAULT_WORKERS = 2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.http", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="shorter cases, one repeat: about three minutes")
    parser.add_argument("--workers", type=int, default=DEFAULT_WORKERS,
                        help=f"ledger serve --workers (default {DEFAULT_WORKERS})")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object on stdout; the table goes to stderr")
    parser.add_argument("--postgres-url", default=None,
                        help="server to create throwaway databases on "
                             "(default $LEDGER_BENCH_POSTGRES_URL or "
                             "postgresql://postgres@127.0.0.1:5432/postgres)")
    args = parser.parse_args(argv)
    result = run(admin_url(args.postgres_url), quick=args.quick, workers=args.workers)
    table = render(result)
    if args.json:
        print(table, file=sys.stderr)
        print(json.dumps(_json(result), default=str))
    else:
        print(table)
    return 0


def _json(result: dict[str, Any]) -> dict[str, Any]:
    return {**{k: v for k, v in result.items() if k != "checks"},
            "checks": {c.name: c.as_json() for c in result["checks"]},
            "all_targets_pass": all(c.passed is not False for c in result["checks"])}


if __name__ == "__main__":
    sys.exit(main())
