"""Render one run of the HTTP benchmark as Markdown tables."""

from __future__ import annotations

from typing import Any

from benchmarks.report import _num

LABELS = {
    "direct.distinct": "direct API, 8 processes, distinct SKUs",
    "http.distinct": "HTTP, 8 connections, distinct SKUs",
    "crud.hot": "CRUD baseline, 8 clients, hot SKU",
    "direct.hot": "direct API, 8 processes, hot SKU",
    "http.hot": "HTTP, 8 connections, hot SKU (batched)",
}


def _latency(case: dict[str, Any]) -> str:
    if "p50_ms" not in case:
        return "- | - | -"
    return f"{_num(case['p50_ms'])} | {_num(case['p99_ms'])} | {_num(case['max_ms'])}"


def render(result: dict[str, Any]) -> str:
    meta, runs = result["meta"], result["runs"]
    postgres = ", ".join(f"{k}={v}" for k, v in meta["postgres"].items())
    m = meta["machine"]
    lines = [
        f"mode: {meta['mode']}, total {meta['seconds']:.0f} s, ledger serve --workers "
        f"{meta['workers']}, wrk {meta['sizes']['clients']} threads x 1 connection",
        f"machine: {m['nproc']} cores, {m['memory']}, {m['cpu']}, Python {m['python']}",
        f"load average (1, 5, 15 min): {meta['load average at start']} at the start, "
        f"{meta['load average at end']} at the end",
        f"PostgreSQL {postgres}",
        "",
        "## Throughput (one-unit sales, each its own sale id and Idempotency-Key)",
        "| case | sales/s (runs) | sold | p50 ms | p99 ms | max ms | non-2xx | "
        "units sold == decrease == journal |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for label, case in runs.items():
        rates = ", ".join(f"{r:,.0f}" for r in case["rates"])
        lines.append(f"| {LABELS.get(label, label)} | {case['rate']:,.0f} ({rates}) | "
                     f"{case['sold']:,} | {_latency(case)} | {case['failed']} | "
                     f"{case['consistent']} |")
    for label in ("http.distinct", "http.hot"):
        grouped = runs[label].get("sales_per_transaction")
        if grouped and grouped["transactions"]:
            lines += ["", f"{LABELS[label]}: {grouped['mean']:.2f} sales per transaction "
                          f"(at most {grouped['max']}; {grouped['alone']:.0%} of transactions "
                          "held one sale), in the median run"]
    for case in ("distinct", "hot"):
        http, direct = runs[f"http.{case}"]["rate"], runs[f"direct.{case}"]["rate"]
        lines.append("")
        lines.append(f"HTTP / direct API, {case} SKUs: {http / direct:.0%}" if direct else "")
    crud_hot = runs["crud.hot"]["rate"]
    if crud_hot:
        lines += ["", f"hot SKU, HTTP (batched) / CRUD: {runs['http.hot']['rate'] / crud_hot:.2f}x"
                      f"; direct API / CRUD: {runs['direct.hot']['rate'] / crud_hot:.2f}x"]
    one = result["one_client"]
    lines += [
        "", "## One client",
        "| sale | p50 ms | p99 ms |", "| --- | ---: | ---: |",
        f"| direct call (`Ledger.sell`, this process) | {one['direct_p50_ms']:.3f} | "
        f"{one['direct_p99_ms']:.3f} |",
        f"| HTTP, one wrk connection | {one['http_p50_ms']:.3f} | {one['http_p99_ms']:.3f} |",
        "", f"difference (p50): {one['difference_ms']:+.3f} ms",
    ]
    memory = result["memory"]
    lines += [
        "", f"## Server memory over a {memory['seconds']:.0f} s run, 8 connections, "
            "distinct SKUs",
        f"RSS of the server's processes: start {memory['start_mib']:.1f} MiB, end "
        f"{memory['end_mib']:.1f} MiB, max {memory['max_mib']:.1f} MiB "
        f"({memory['samples']} samples); {memory['case']['rate']:,.0f} sales/s",
        "", "## Targets (issue 19)",
        "| check | target | measured | verdict |", "| --- | --- | --- | --- |",
    ]
    lines += [f"| {c.name} | {c.target} | {c.measured} | {c.verdict} |"
              for c in result["checks"]]
    return "\n".join(lines)
