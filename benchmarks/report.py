"""Render one run: the machine, the server settings, the figures with their spread, the checks."""

from __future__ import annotations

from typing import Any

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


def run_rows(runs: dict[str, dict[str, Any]], raw: dict[str, Figure]) -> list[str]:
    lines = ["| 8 clients | sales/s (runs) | sold | retries | failed | decrease == sold | "
             "peak RSS/client |", "| --- | ---: | ---: | ---: | ---: | --- | ---: |"]
    for key, run in runs.items():
        rates = ", ".join(f"{r:,.0f}" for r in run["rates"])
        lines.append(f"| {key} | {run['rate']:,.0f} ({rates}) | {run['sold']:,} | "
                     f"{run['retries']:,} | {run['failed']} | {run['consistent']} | "
                     f"{run['rss_mib']:.0f} MiB |")
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


def render(meta: dict[str, Any], figures: dict[str, Figure], raw: dict[str, Figure],
           runs: dict[str, dict[str, Any]], extras: dict[str, Any],
           checks: list[Check]) -> str:
    out: list[str] = []
    machine, pg = meta["machine"], meta["postgres"]
    out.append(f"mode: {meta['mode']}, total {meta['seconds']:.0f} s")
    out.append(f"machine: {machine['nproc']} cores, {machine['memory']}, {machine['cpu']}, "
               f"Python {machine['python']}")
    out.append("PostgreSQL " + ", ".join(f"{k}={v}" for k, v in pg.items()))
    out.append("")
    out.append("## Ceilings: raw psycopg, and stockledger's append statement alone")
    out.extend(figure_rows(raw))
    out.append("")
    out.append("## Latency (one client)")
    out.extend(figure_rows(figures))
    out.append("")
    out.extend(ratio_rows(figures))
    out.append("")
    out.append("## Throughput")
    out.extend(run_rows(runs, raw))
    out.append("")
    out.append("## Replay, projections, memory")
    for key, value in extras.items():
        out.append(f"- {key}: {value}")
    out.append("")
    out.append("## Targets (issue 6)")
    out.append("| check | target | measured | verdict |")
    out.append("| --- | --- | --- | --- |")
    for c in checks:
        out.append(f"| {c.name} | {c.target} | {c.measured} | {c.verdict} |")
    return "\n".join(out)
