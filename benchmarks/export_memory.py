"""Peak memory of `ledger audit export` at two history sizes: it must stay flat.

`python -m benchmarks.export_memory [--events N ...]` seeds a stock item with N past events
per size in a throwaway PostgreSQL database, exports every movement as CSV in a fresh process,
and prints each run's rows, seconds and peak RSS, and the ratio of the largest to the smallest.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from datetime import date

from benchmarks.database import throwaway_database
from benchmarks.ledger_seed import seed_history
from ledger.app.service import Ledger

EXPORT_IN_CHILD = """
import sys
from benchmarks.machine import peak_rss_mib
from ledger.app.service import Ledger
from ledger.app.audit import export_rows
import csv
with Ledger.open(sys.argv[1]) as ledger, open('/dev/null', 'w', newline='') as sink:
    writer = csv.writer(sink)
    rows = 0
    for row in export_rows(ledger.application):
        writer.writerow(row)
        rows += 1
print(rows, int(peak_rss_mib()))
"""


def measure(admin_url: str, events: int) -> dict[str, float]:
    with throwaway_database(admin_url, "export") as url:
        with Ledger.open(url, create_tables=True) as ledger:
            seed_history(ledger, "EXPORT-1", "AMOX-500", events, date(2099, 1, 1))
        started = time.perf_counter()
        output = subprocess.run([sys.executable, "-c", EXPORT_IN_CHILD, url], check=True,
                                capture_output=True, text=True).stdout.split()
        return {"events": events, "rows": int(output[0]), "peak_rss_mib": int(output[1]),
                "seconds": round(time.perf_counter() - started, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, nargs="+", default=[10_000, 1_000_000])
    parser.add_argument("--postgres-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    arguments = parser.parse_args()
    runs = [measure(arguments.postgres_url, n) for n in arguments.events]
    for run in runs:
        print(json.dumps(run))
    print(json.dumps({"peak_rss_ratio_largest_to_smallest":
                      round(runs[-1]["peak_rss_mib"] / runs[0]["peak_rss_mib"], 2)}))


if __name__ == "__main__":
    main()
