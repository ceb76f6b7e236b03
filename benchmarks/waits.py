"""Where a throughput case's time goes: the server's wait events, sampled, and the CPU and
run-queue time of every process involved, from the kernel's accounting.

`python -m benchmarks --sample-waits` runs a `WaitSampler` in the suite's own process during
every throughput case (`workers.run_parallel`'s observer). Every `INTERVAL_SECONDS` it reads
`pg_stat_activity` for the client backends of the case's database: each backend's state and
wait event (`active` with no wait event is on a CPU or waiting for one). When one waits for an
advisory lock it also reads which one from `pg_locks` (the store's allocation lock, a queue's
lock, or a read-check lock: `ledger/store/postgres/lock_keys.py`) and what the lock's holder
was doing: its own sampled state, its process's state in `/proc` (`R`: running, or runnable
and waiting for a core; `S`: sleeping) and its client process's (found by the backend's
`client_port`).

At the start and the end of the case it reads, from `/proc`, the CPU time (utime + stime)
and the run-queue delay (`schedstat`: time spent runnable but not running) of the clients and
of their backends, the CPU of the server's other processes, and the machine's: so that the
case's share of two busy cores can be told from everyone else's. The sampler costs CPU too
(its own process and its backend): it is reported, and runs only when asked for.

Needs the server on this machine (its processes' `/proc` entries are read).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import psycopg

from ledger.store.postgres.lock_keys import ALLOCATION_LOCK

INTERVAL_SECONDS = 0.01
END_MARGIN_SECONDS = 0.02
"""The end readings are taken this long before the deadline, while every client still holds
its backend (a backend that has exited has taken its CPU time with it)."""

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

SAMPLE = """
SELECT pid, state, wait_event_type, wait_event,
       CASE WHEN wait_event_type = 'Lock' THEN left(query, 40) END
FROM pg_stat_activity
WHERE datname = %s AND backend_type = 'client backend' AND pid <> pg_backend_pid()
"""
ADVISORY_WAITS = """
SELECT w.pid, w.classid::bigint, w.objid::bigint, w.objsubid, h.pid
FROM pg_locks w
LEFT JOIN pg_locks h ON h.locktype = 'advisory' AND h.granted AND h.database = w.database
    AND h.classid = w.classid AND h.objid = w.objid AND h.objsubid = w.objsubid
WHERE w.locktype = 'advisory' AND NOT w.granted
  AND w.database = (SELECT oid FROM pg_database WHERE datname = %s)
"""
SERVER_PROCESSES = "SELECT pid, backend_type, datname, client_port FROM pg_stat_activity"
# A store's events table is the one its append function is named after (`sql_names`).
EVENTS_TABLES = """
SELECT c.oid::bigint FROM pg_class c
JOIN pg_proc p ON p.proname = c.relname || '_append' AND p.pronamespace = c.relnamespace
"""


def _stat_fields(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return None  # the process has ended


def cpu_seconds(pid: int) -> float | None:
    """The process's CPU time so far (utime + stime), or None if it has ended."""
    fields = _stat_fields(pid)
    return None if fields is None else (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def run_queue_seconds(pid: int) -> float | None:
    """How long the process has been runnable without a core so far (`schedstat`)."""
    try:
        with open(f"/proc/{pid}/schedstat") as schedstat:
            return int(schedstat.read().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return None


def process_state(pid: int) -> str:
    fields = _stat_fields(pid)
    return "gone" if fields is None else fields[0]


def postgres_pids() -> list[int]:
    """Every process on this machine named postgres."""
    pids = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/comm") as comm:
                if comm.read().startswith("postgres"):
                    pids.append(int(entry))
        except OSError:
            continue
    return pids


def socket_ports(pids: list[int]) -> dict[int, int]:
    """The local TCP port of every socket the processes hold, mapped to the process: so that
    a backend's `client_port` names its client process."""
    inodes: dict[str, int] = {}
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    target = os.readlink(f"/proc/{pid}/fd/{fd}")
                    if target.startswith("socket:["):
                        inodes[target[8:-1]] = pid
        except OSError:
            continue
    ports: dict[int, int] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as rows:
            next(rows)
            for row in rows:
                fields = row.split()
                if fields[9] in inodes:
                    ports[int(fields[1].rsplit(":", 1)[1], 16)] = inodes[fields[9]]
    return ports


def machine_seconds() -> dict[str, float]:
    """The machine's CPU seconds so far, all cores: busy, idle, iowait and stolen."""
    with open("/proc/stat") as stat:
        values = [int(v) / CLOCK_TICKS for v in stat.readline().split()[1:]]
    user, nice, system, idle, iowait, irq, softirq, steal = values[:8]
    return {"busy": user + nice + system + irq + softirq, "idle": idle, "iowait": iowait,
            "steal": steal}


def allocation_lock_keys(table_oids: list[int]) -> set[tuple[int, int]]:
    """The allocation lock as pg_locks shows it (classid, objid) for each events table."""
    keys = set()
    for oid in table_oids:
        key = (ALLOCATION_LOCK ^ oid) & 0xFFFF_FFFF_FFFF_FFFF
        keys.add((key >> 32, key & 0xFFFF_FFFF))
    return keys


@dataclass
class Readings:
    """CPU and run-queue seconds of each process at one moment."""

    at: float
    cpu: dict[int, float]
    run_queue: dict[int, float]
    machine: dict[str, float]
    own_cpu: float

    @classmethod
    def take(cls, pids: list[int]) -> Readings:
        cpu: dict[int, float] = {}
        run_queue: dict[int, float] = {}
        for pid in pids:
            seconds, queued = cpu_seconds(pid), run_queue_seconds(pid)
            if seconds is not None:
                cpu[pid] = seconds
            if queued is not None:
                run_queue[pid] = queued
        return cls(time.perf_counter(), cpu, run_queue, machine_seconds(), time.process_time())


def _delta(before: dict[int, float], after: dict[int, float], pids: set[int]) -> float:
    """Summed growth over `pids` seen at both ends; a process born in between counts from 0."""
    return sum(after[p] - before.get(p, 0.0) for p in pids if p in after)


@dataclass
class WaitSampler:
    """Samples one database's backends while a case runs; call it as the case's observer."""

    admin_url: str
    dbname: str
    interval: float = INTERVAL_SECONDS
    samples: int = 0
    waits: Counter[str] = field(default_factory=Counter)
    advisory: Counter[str] = field(default_factory=Counter)
    holder_states: Counter[str] = field(default_factory=Counter)
    result: dict[str, Any] = field(default_factory=dict)
    client_of: dict[int, int] = field(default_factory=dict)
    unmatched: set[int] = field(default_factory=set)
    clients: list[int] = field(default_factory=list)
    excluded: set[int] = field(default_factory=set)

    def __call__(self, client_pids: list[int], start: float, deadline: float) -> None:
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            sampler_backend = conn.info.backend_pid
            with psycopg.connect(_with_dbname(self.admin_url, self.dbname),
                                 autocommit=True) as case:
                oids = [int(r[0]) for r in case.execute(EVENTS_TABLES).fetchall()]
                # This connection's backend may still be listed a moment after it closes.
                self.excluded = {sampler_backend, case.info.backend_pid}
            allocation = allocation_lock_keys(oids)
            processes = conn.execute(SERVER_PROCESSES).fetchall()
            backends = {int(p) for p, kind, db, _ in processes
                        if kind == "client backend" and db == self.dbname
                        and int(p) not in self.excluded}
            server = set(postgres_pids())
            clients = set(client_pids)
            self.clients = list(client_pids)
            ports = socket_ports(client_pids)
            self.client_of = {int(p): ports[port] for p, _, db, port in processes
                              if db == self.dbname and port in ports}
            watched = sorted(clients | server)
            load = os.getloadavg()
            first = Readings.take(watched)
            began = time.perf_counter()
            while time.perf_counter() < deadline - END_MARGIN_SECONDS:
                self._sample(conn, allocation)
                pause = self.interval - (time.perf_counter() - began) % self.interval
                time.sleep(min(pause, max(0.0, deadline - END_MARGIN_SECONDS
                                          - time.perf_counter())))
            server |= set(postgres_pids())
            last = Readings.take(sorted(clients | server))
        window = last.at - first.at
        others = server - backends - {sampler_backend}
        read_twice = sum(1 for pid in backends if pid in first.cpu and pid in last.cpu)
        machine = {k: last.machine[k] - first.machine[k] for k in first.machine}
        self.result = {
            "window_seconds": window,
            "load_average": load,
            "backends": len(backends),
            "backends_read_at_both_ends": read_twice,
            "samples": self.samples,
            "waits": dict(self.waits),
            "advisory": dict(self.advisory),
            "lock_holder_states": dict(self.holder_states),
            "cpu_seconds": {
                "clients": _delta(first.cpu, last.cpu, clients),
                "backends": _delta(first.cpu, last.cpu, backends),
                "other postgres processes": _delta(first.cpu, last.cpu, others),
                "sampler (process and backend)": (last.own_cpu - first.own_cpu) + _delta(
                    first.cpu, last.cpu, {sampler_backend}),
                "machine busy": machine["busy"],
                "machine stolen": machine["steal"],
                "machine idle": machine["idle"],
            },
            "run_queue_seconds": {
                "clients": _delta(first.run_queue, last.run_queue, clients),
                "backends": _delta(first.run_queue, last.run_queue, backends),
            },
        }

    def _sample(self, conn: psycopg.Connection[Any], allocation: set[tuple[int, int]]) -> None:
        rows = [row for row in conn.execute(SAMPLE, (self.dbname,)).fetchall()
                if int(row[0]) not in self.excluded]
        self.samples += 1
        labels: dict[int, str] = {}
        advisory_queries: dict[int, str] = {}
        for pid, state, kind, event, query in rows:
            label = ("active: on CPU or runnable" if state == "active" and kind is None
                     else f"{state}: {kind}/{event}")
            labels[int(pid)] = label
            self.waits[label] += 1
            if kind == "Lock" and event == "advisory":
                advisory_queries[int(pid)] = query or ""
        if not advisory_queries:
            return
        for pid, classid, objid, objsubid, holder in conn.execute(ADVISORY_WAITS,
                                                                  (self.dbname,)).fetchall():
            query = advisory_queries.pop(int(pid), None)
            if query is None:
                continue
            if objsubid == 1 and (int(classid), int(objid)) in allocation:
                lock = "allocation lock"
            elif objsubid == 2:
                lock = "registration"
            elif query.lstrip().lower().startswith("select pg_advisory_lock"):
                lock = "queue lock (a loser taking its turn)"
            else:
                lock = "read-check lock (in the append)"
            self.advisory[lock] += 1
            # What the holder was doing: its sampled state, its process's (R: running or
            # runnable, S: sleeping) and its client's.
            held_by = "released"
            if holder:
                client = self._client(conn, int(holder))
                held_by = (f"{labels.get(int(holder), 'not sampled')}, /proc "
                           f"{process_state(int(holder))}, its client "
                           f"{process_state(client) if client else 'unknown'}")
            self.holder_states[f"{lock}: holder {held_by}"] += 1
        if advisory_queries:  # waits that ended between the two reads
            self.advisory["ended before pg_locks was read"] += len(advisory_queries)

    def _client(self, conn: psycopg.Connection[Any], backend: int) -> int | None:
        """The client process of `backend`, looked up again (once) for a backend opened
        after the start (a queued till's second connection)."""
        if backend not in self.client_of and backend not in self.unmatched:
            self.unmatched.add(backend)
            row = conn.execute("SELECT client_port FROM pg_stat_activity WHERE pid = %s",
                               (backend,)).fetchone()
            ports = socket_ports(self.clients)
            if row is not None and row[0] in ports:
                self.client_of[backend] = ports[row[0]]
        return self.client_of.get(backend)


def _with_dbname(url: str, dbname: str) -> str:
    from benchmarks.database import with_dbname

    return with_dbname(url, dbname)


def render(label: str, result: dict[str, Any], sales: float) -> list[str]:
    """The distribution of one case's samples and its CPU, as Markdown lines; `sales` is the
    number made in the sampled window (rate times window)."""
    if not result:
        return [f"{label}: not sampled"]
    total = sum(result["waits"].values()) or 1
    load = ", ".join(f"{x:.1f}" for x in result["load_average"])
    lines = [f"**{label}**: {result['samples']} samples of {result['backends']} backends over "
             f"{result['window_seconds']:.2f} s, load average {load}"
             + ("" if result.get("backends_read_at_both_ends", result["backends"])
                == result["backends"] else
                f" (CPU read at both ends for {result['backends_read_at_both_ends']} "
                "backends only)"), "",
             "| backend state: wait event | share of backend samples |", "| --- | ---: |"]
    for key, count in sorted(result["waits"].items(), key=lambda kv: -kv[1]):
        lines.append(f"| {key} | {count / total:.1%} |")
    if result["advisory"]:
        lines.append("")
        lines.append("advisory lock waits, by lock: " + ", ".join(
            f"{k} {v}" for k, v in sorted(result["advisory"].items(), key=lambda kv: -kv[1])))
    for key, count in sorted(result["lock_holder_states"].items(), key=lambda kv: -kv[1]):
        lines.append(f"- {key}: {count} waits")
    window = result["window_seconds"] or 1.0
    per_sale = 1000.0 / sales if sales else 0.0
    lines.append("")
    lines.append("| CPU over the window | cores | ms per sale |")
    lines.append("| --- | ---: | ---: |")
    cpu = result["cpu_seconds"]
    for key, seconds in cpu.items():
        lines.append(f"| {key} | {seconds / window:.2f} | {seconds * per_sale:.3f} |")
    if "machine busy" in cpu:
        ours = sum(v for k, v in cpu.items() if not k.startswith("machine"))
        rest = cpu["machine busy"] - ours
        lines.append(f"| machine busy, everything else (other work on the machine) | "
                     f"{rest / window:.2f} | {rest * per_sale:.3f} |")
    for key, seconds in result["run_queue_seconds"].items():
        lines.append(f"| {key}: runnable, waiting for a core | {seconds / window:.2f} | "
                     f"{seconds * per_sale:.3f} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    """`python -m benchmarks.waits`: stockledger's append statement alone from 8 processes
    (`append_ceiling`), sampled, on fresh databases: the append path with no Python deciding
    anything, where the store's locks matter most."""
    import argparse

    from benchmarks import append_ceiling
    from benchmarks.database import admin_url, throwaway_database

    parser = argparse.ArgumentParser(prog="python -m benchmarks.waits", description=main.__doc__)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--postgres-url", default=None)
    options = parser.parse_args(argv)
    server = admin_url(options.postgres_url)
    for repeat in range(options.repeats):
        with throwaway_database(server, "waits") as url:
            appends, result = append_ceiling.sampled(url, options.seconds, server, 1.0)
        print(f"append statement alone, 8 processes: {appends:,.0f} appends/s\n")
        print("\n".join(render(f"append statement alone, repetition {repeat + 1}", result,
                               appends * result.get("window_seconds", 0.0))))
        print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
