"""Render one run: the machine, the server settings, the figures with their spread, the checks."""

from __future__ import annotations

import statistics
from typing import Any

from benchmarks import waits
from benchmarks.stats import Figure
from benchmarks.targets import Check


def _num(value: float) -> str:
    if value >= 1000:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.3f}"


def figure_rows(figures: dict[str, Figure]) -> list[str]:
    lines = ["| figure | median | p99 | min-max | n | unit |",
             "| --- | ---: | ---: | ---: | ---: | --- |"]
    for figure in figures.values():
        p99 = _num(figure.p99) if figure.unit == "ms" and figure.n >= 20 else "-"
        lines.append(f"| {figure.name} | {_num(figure.median)} | {p99} | "
                     f"{_num(figure.low)}-{_num(figure.high)} | {figure.n} | {figure.unit} |")
    return lines


def ratio_rows(figures: dict[str, Figure]) -> list[str]:
    pairs = [
        ("sale, 1-batch span of 100", "crud.sale.span1_of_100", "ledger.sale.span1_of_100"),
        ("sale, 100-batch span", "crud.sale.span100", "ledger.sale.span100"),
        ("sale, 10,000 live batches", "crud.sale.10k_batches", "ledger.sale.10k_batches"),
        ("available, 1 batch (write model)", "crud.read.1_batch",
         "ledger.read.write_model.1_batch"),
        ("available, 10,000 batches (write model)", "crud.read.10k_batches",
         "ledger.read.write_model.10k_batches"),
        ("available, 1 batch (projection)", "crud.read.1_batch",
         "ledger.read.projection.1_batch"),
        ("available, 10,000 batches (projection)", "crud.read.10k_batches",
         "ledger.read.projection.10k_batches"),
    ]
    lines = ["| comparison (median) | CRUD | stockledger | CRUD / stockledger |",
             "| --- | ---: | ---: | ---: |"]
    for label, crud_key, ledger_key in pairs:
        crud = figures.get(crud_key)
        ledger = figures.get(ledger_key)
        if crud is None or ledger is None:
            lines.append(f"| {label} | {_num(crud.median) if crud else 'n/a'} ms | n/a | n/a |")
            continue
        lines.append(f"| {label} | {_num(crud.median)} ms | {_num(ledger.median)} ms | "
                     f"{crud.median / ledger.median:.2f}x |")
    return lines


CASE_NAMES = {"distinct": "distinct SKUs", "hot": "one hot SKU", "single": "distinct SKUs"}


def _case(label: str, run: dict[str, Any]) -> str:
    clients = run.get("clients", 8)
    return f"{clients} client{'s' if clients != 1 else ''}, {CASE_NAMES.get(label, label)}"


def _rates(rates: list[float]) -> str:
    return ", ".join(f"{r:,.0f}" for r in rates)


def run_rows(runs: dict[str, dict[str, Any]], raw: dict[str, Figure]) -> list[str]:
    """The throughput cases: each system's rates, stockledger's over CRUD's repetition by
    repetition, then every run's integrity check and latencies."""
    labels = list(dict.fromkeys(key.split(".", 1)[1] for key in runs))
    lines = ["| case | stockledger sales/s (runs) | CRUD sales/s (runs) | "
             "stockledger / CRUD per repetition | median ratio |",
             "| --- | ---: | ---: | --- | ---: |"]
    for label in labels:
        ledger, crud = runs.get(f"ledger.{label}"), runs.get(f"crud.{label}")
        if ledger is None or crud is None:
            continue
        ratios = [a / b for a, b in zip(ledger["rates"], crud["rates"], strict=True)]
        lines.append(f"| {_case(label, ledger)} | {ledger['rate']:,.0f} "
                     f"({_rates(ledger['rates'])}) | {crud['rate']:,.0f} "
                     f"({_rates(crud['rates'])}) | {', '.join(f'{r:.2f}' for r in ratios)} | "
                     f"{statistics.median(ratios):.2f}x |")
    lines.append("")
    lines.append("| run | sold | retries (runs) | failed | decrease == sold | p50 ms | p99 ms "
                 "(runs) | peak RSS/client | load average at each start |")
    lines.append("| --- | ---: | ---: | ---: | --- | ---: | ---: | ---: | --- |")
    for key, run in runs.items():
        retries = ", ".join(f"{r:,}" for r in run.get("retries_per_run", []))
        p99s = ", ".join(f"{p:.1f}" for p in run.get("p99_ms_per_run", []))
        loads = "; ".join(f"{load[0]:.1f}" for load in run.get("load_average_per_run", []))
        lines.append(f"| {key} | {run['sold']:,} | {run['retries']:,} ({retries}) | "
                     f"{run['failed']} | {run['consistent']} | {run.get('p50_ms', 0):.2f} | "
                     f"{run.get('p99_ms', 0):.1f} ({p99s}) | {run['rss_mib']:.0f} MiB | "
                     f"{loads} |")
    ceiling = raw.get("raw.insert.8")
    dist = runs.get("ledger.distinct")
    if ceiling and dist:
        lines.append("")
        lines.append(f"stockledger distinct-SKU sales/s as a share of the raw 8-process insert "
                     f"ceiling: {dist['rate'] / ceiling.median:.1%}")
    append = raw.get("append.8")
    if append and dist:
        lines.append("")
        lines.append(f"stockledger distinct-SKU sales/s as a share of its own append statement "
                     f"sent alone from 8 processes: {dist['rate'] / append.median:.1%}")
    return lines


def wait_rows(runs: dict[str, dict[str, Any]]) -> list[str]:
    """Each sampled run's wait events and CPU (`waits.render`)."""
    lines: list[str] = []
    for key, run in runs.items():
        for index, result in enumerate(run.get("waits", [])):
            sales = run["rates"][index] * result.get("window_seconds", 0.0)
            lines.extend(waits.render(f"{key}, repetition {index + 1}", result, sales))
            lines.append("")
    return lines


def render(meta: dict[str, Any], figures: dict[str, Figure], raw: dict[str, Figure],
           runs: dict[str, dict[str, Any]], extras: dict[str, Any],
           checks: list[Check]) -> str:
    out: list[str] = []
    machine, pg = meta["machine"], meta["postgres"]
    out.append(f"mode: {meta['mode']}, total {meta['seconds']:.0f} s")
    out.append(f"machine: {machine['nproc']} cores, {machine['memory']}, {machine['cpu']}, "
               f"Python {machine['python']}")
    out.append("PostgreSQL " + ", ".join(f"{k}={v}" for k, v in pg.items()))
    load = meta.get("load_average_at_start")
    if load:
        out.append("load average at the start: " + ", ".join(f"{x:.1f}" for x in load))
    if raw:
        out.append("")
        out.append("## Ceilings: raw psycopg, and stockledger's append statement alone")
        out.extend(figure_rows(raw))
    if figures:
        out.append("")
        out.append("## Latency (one client)")
        out.extend(figure_rows(figures))
        out.append("")
        out.extend(ratio_rows(figures))
    out.append("")
    out.append(f"## Throughput ({meta['sizes']['throughput_repeats']} repetitions of "
               f"{meta['sizes']['throughput_seconds']:g} s; the systems take turns, which "
               "goes first alternating by case and by repetition; every case on a fresh "
               "database after a CHECKPOINT and a "
               f"{meta['sizes']['settle_seconds']:g} s pause)")
    out.extend(run_rows(runs, raw))
    sampled = wait_rows(runs)
    if sampled:
        out.append("")
        out.append("## Where the time went (sampled wait events, CPU from /proc)")
        out.append("")
        out.extend(sampled)
    if extras:
        out.append("")
        out.append("## Replay, projections, memory")
        for key, value in extras.items():
            out.append(f"- {key}: {value}")
    out.append("")
    out.append("## Targets (issues 6 and 22)")
    out.append("| check | target | measured | verdict |")
    out.append("| --- | --- | --- | --- |")
    for c in checks:
        out.append(f"| {c.name} | {c.target} | {c.measured} | {c.verdict} |")
    return "\n".join(out)
