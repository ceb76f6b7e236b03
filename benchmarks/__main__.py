"""`python -m benchmarks [--quick] [--json] [--no-docs] [--postgres-url URL]`.

A full run also writes its table into `docs/performance.md` (its "Full run (latest)" section);
a quick run only prints."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from benchmarks.database import admin_url
from benchmarks.docs_table import PERFORMANCE_DOC, write_latest_run
from benchmarks.report import render
from benchmarks.suite import run


def _json(result: dict[str, Any]) -> dict[str, Any]:
    figures = {k: v.as_json() for k, v in {**result["raw"], **result["figures"]}.items()}
    return {
        "meta": result["meta"],
        "figures": figures,
        "throughput": result["runs"],
        "extras": result["extras"],
        "checks": {c.name: c.as_json() for c in result["checks"]},
        "all_targets_pass": all(c.passed is not False for c in result["checks"]),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a smaller run, under two minutes")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object on stdout; the table goes to stderr")
    parser.add_argument("--no-docs", action="store_true",
                        help=f"do not write a full run's table into {PERFORMANCE_DOC.name}")
    parser.add_argument("--postgres-url", default=None,
                        help="server to create throwaway databases on "
                             "(default $LEDGER_BENCH_POSTGRES_URL or "
                             "postgresql://postgres@127.0.0.1:5432/postgres)")
    args = parser.parse_args(argv)
    result = run(admin_url(args.postgres_url), quick=args.quick)
    table = render(result["meta"], result["figures"], result["raw"], result["runs"],
                   result["extras"], result["checks"])
    if args.json:
        print(table, file=sys.stderr)
        print(json.dumps(_json(result), default=str))
    else:
        print(table)
    if not (args.quick or args.no_docs) and PERFORMANCE_DOC.exists():
        written = write_latest_run(f"```\npython -m benchmarks\n```\n\n{table}")
        print(f"[bench] the table is written into {written}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
