"""The ceiling: what plain psycopg inserts achieve on this server, with fsync on."""

from __future__ import annotations

import time
from typing import Any

import psycopg

from benchmarks.machine import peak_rss_mib
from benchmarks.stats import Figure
from benchmarks.workers import rate, run_parallel, same_args

PAYLOAD = "x" * 180  # with the id and row header, about a 200-byte row
SCHEMA = "CREATE TABLE IF NOT EXISTS raw_rows (id bigserial PRIMARY KEY, payload text NOT NULL)"


def _insert_loop(index: int, url: str, start: float, deadline: float) -> dict[str, Any]:
    with psycopg.connect(url, autocommit=True) as conn:
        count = 0
        while time.perf_counter() < deadline:
            conn.execute("INSERT INTO raw_rows (payload) VALUES (%s)", (PAYLOAD,))
            count += 1
        elapsed = time.perf_counter() - start
    return {"rows": count, "seconds": elapsed, "rss_mib": peak_rss_mib()}


def _copy_loop(index: int, url: str, start: float, deadline: float) -> dict[str, Any]:
    rows = [(PAYLOAD,)] * 100
    with psycopg.connect(url, autocommit=True) as conn:
        count = 0
        while time.perf_counter() < deadline:
            with conn.transaction(), conn.cursor() as cur, \
                    cur.copy("COPY raw_rows (payload) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
            count += len(rows)
        elapsed = time.perf_counter() - start
    return {"rows": count, "seconds": elapsed, "rss_mib": peak_rss_mib()}


def measure(url: str, duration: float, repeats: int) -> tuple[list[Figure], dict[str, float]]:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(SCHEMA)
    one: list[float] = []
    eight: list[float] = []
    copy: list[float] = []
    rss: dict[str, float] = {}
    for _ in range(repeats):
        one.append(rate([_insert_loop(0, url, time.perf_counter(),
                                      time.perf_counter() + duration)], "rows"))
        outcomes = run_parallel(same_args, _insert_loop, [url] * 8, duration)
        eight.append(rate(outcomes, "rows"))
        rss["raw insert worker"] = max(o["rss_mib"] for o in outcomes)
        copy.append(rate([_copy_loop(0, url, time.perf_counter(),
                                     time.perf_counter() + duration)], "rows"))
    return [
        Figure("raw insert, 1 client, autocommit", "rows/s", tuple(one)),
        Figure("raw insert, 8 processes, autocommit", "rows/s", tuple(eight)),
        Figure("raw COPY, 100 rows/txn, 1 client", "rows/s", tuple(copy)),
    ], rss
