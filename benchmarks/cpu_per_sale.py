"""Where a sale's CPU goes: client process and PostgreSQL server, per sale, by number of clients.

    python -m benchmarks.cpu_per_sale [--seconds 5] [--clients 1,8] [--database-per-client]
                                      [--postgres-url URL]

On a 2-core machine, sales per second from 8 clients is bounded by 2 cores divided by the CPU
one sale costs, client and server together. This prints that split for stockledger and for
the CRUD baseline in the same run: each client's CPU time over its selling loop
(`time.process_time`) and the server's over the same window (the summed utime+stime of every
`postgres` process, read from /proc, so the server must run on this machine), both divided by
the sales made. Distinct SKUs, one per client.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time
from typing import Any

from benchmarks import crud_baseline as crud
from benchmarks import scenarios as s
from benchmarks import throughput
from benchmarks.database import admin_url, throwaway_database
from benchmarks.workers import run_parallel


def server_cpu_seconds() -> float:
    """CPU seconds used so far by every process named postgres on this machine."""
    total = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/comm") as comm:
                if not comm.read().startswith("postgres"):
                    continue
            with open(f"/proc/{pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the process ended while we looked
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


# Module-level, so that spawned workers can unpickle them. Worker 0 also reads the server's
# CPU at the start and at the deadline; every worker keeps its connections open a while after
# the deadline, so that no backend has exited when it does (one that has takes its CPU time
# with it).
LINGER_SECONDS = 1.0
def _ledger_work(index: int, state: dict[str, Any], start: float,
                 deadline: float) -> dict[str, Any]:
    try:
        return _sampled(index, deadline, throughput.ledger_sale(index, state))
    finally:
        state["ledger"].close()


def _crud_work(index: int, state: dict[str, Any], start: float,
               deadline: float) -> dict[str, Any]:
    with state["conn"]:
        return _sampled(index, deadline, throughput.crud_sale(index, state))


def _sampled(index: int, deadline: float, sell: Any) -> dict[str, Any]:
    server = server_cpu_seconds() if index == 0 else 0.0
    outcome = throughput.sell_until(index, deadline, sell)
    if index == 0:
        outcome["server_cpu"] = server_cpu_seconds() - server
    time.sleep(max(0.0, deadline + LINGER_SECONDS - time.perf_counter()))
    return outcome


def measure(system: str, urls: list[str], clients: int, seconds: float) -> dict[str, float]:
    """Client `i` sells its own SKU in `urls[i % len(urls)]`."""
    prepare, client = ((throughput._prepare_ledger, _ledger_work) if system == "ledger"
                       else (throughput._prepare_crud, _crud_work))
    args = [(urls[i % len(urls)], s.distinct_sku(i), f"cpu-{system}-{clients}-{time.time_ns()}")
            for i in range(clients)]
    outcomes = run_parallel(prepare, client, args, seconds)
    sold = sum(o["sold"] for o in outcomes)
    return {
        "sales_per_s": sold / max(o["seconds"] for o in outcomes),
        "client_ms": 1000 * sum(o["cpu"] for o in outcomes) / sold,
        "server_ms": 1000 * outcomes[0]["server_cpu"] / sold,
    }


def _seeded(system: str, url: str, clients: int) -> None:
    if system == "ledger":
        from ledger import Ledger

        Ledger.open(url, create_tables=True).close()
        throughput.seed_ledger(url, clients)
    else:
        crud.create_schema(url)
        throughput.seed_crud(url, clients)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.cpu_per_sale",
                                     description=__doc__)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--clients", default="1,8",
                        help="comma-separated client counts (default 1,8)")
    parser.add_argument("--database-per-client", action="store_true",
                        help="give every client its own database, so that no two share a "
                             "table, its sequence or its indexes")
    parser.add_argument("--postgres-url", default=None)
    options = parser.parse_args(argv)
    counts = [int(n) for n in options.clients.split(",")]
    url_of_server = admin_url(options.postgres_url)
    databases = max(counts) if options.database_per_client else 1
    print(f"databases: {'one per client' if databases > 1 else 'one shared'}")
    print("| system | clients | sales/s | client CPU ms/sale | server CPU ms/sale "
          "| total ms/sale |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for system in ("crud", "ledger"):
        with contextlib.ExitStack() as stack:
            urls = [stack.enter_context(throwaway_database(url_of_server, f"cpu_{system}"))
                    for _ in range(databases)]
            for url in urls:
                _seeded(system, url, max(counts))
            for clients in counts:
                m = measure(system, urls, clients, options.seconds)
                print(f"| {system} | {clients} | {m['sales_per_s']:,.0f} | "
                      f"{m['client_ms']:.3f} | {m['server_ms']:.3f} | "
                      f"{m['client_ms'] + m['server_ms']:.3f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
