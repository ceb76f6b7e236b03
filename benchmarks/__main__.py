"""`python -m benchmarks [--quick] [--json] [--no-docs] [--sample-waits] [--throughput-only]
[--postgres-url URL]`.

A full run also writes its table into `docs/performance.md` (its "Full run (latest)" section);
a quick run, a sampled one and a throughput-only one only print."""

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
    parser.add_argument("--sample-waits", action="store_true",
                        help="sample the server's wait events every 10 ms and read the "
                             "clients' and backends' CPU from /proc during every throughput "
                             "case, and print where the time went (the server must run on "
                             "this machine; the sampler costs some CPU itself)")
    parser.add_argument("--throughput-only", action="store_true",
                        help="run the throughput cases only")
    args = parser.parse_args(argv)
    result = run(admin_url(args.postgres_url), quick=args.quick,
                 sample_waits=args.sample_waits, throughput_only=args.throughput_only)
    table = render(result["meta"], result["figures"], result["raw"], result["runs"],
                   result["extras"], result["checks"])
    if args.json:
        print(table, file=sys.stderr)
        print(json.dumps(_json(result), default=str))
    else:
        print(table)
    partial = args.quick or args.no_docs or args.sample_waits or args.throughput_only
    if not partial and PERFORMANCE_DOC.exists():
        written = write_latest_run(f"```\npython -m benchmarks\n```\n\n{table}")
        print(f"[bench] the table is written into {written}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
