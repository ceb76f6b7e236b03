"""Commands that read by lot: a lot's trace for a recall, and what expires soon."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import click

from cli.context import EXIT_INVALID, LedgerContext, emit, fail, pass_context, run
from cli.display import shown
from cli.reads import DEFAULT_WAIT_SECONDS, _fresh_reads, _json_rows, _stuck
from projections.lot_queries import MAX_EXPIRING, LotReads

MAX_WITHIN_DAYS = 3_660
_WITHIN = re.compile(r"(\d{1,5})([dw]?)")


def parse_within(text: str) -> timedelta:
    """A window of days (`30d`, `4w`, `30`); ValueError saying what is wrong."""
    written = _WITHIN.fullmatch(text.strip().lower())
    if written is None:
        raise ValueError(f"expected a whole number of days or weeks (30d, 4w), not {text!r}")
    days = int(written.group(1)) * (7 if written.group(2) == "w" else 1)
    if days > MAX_WITHIN_DAYS:
        raise ValueError(f"{text} is more than {MAX_WITHIN_DAYS} days")
    return timedelta(days=days)


def json_ready(value: Any) -> Any:
    """Dates and times as ISO 8601 text, through nested lists and objects."""
    if isinstance(value, dict):
        return {k: json_ready(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_ready(v) for v in value]
    return value.isoformat() if hasattr(value, "isoformat") else value


@click.command()
@click.option("--sku", required=True)
@click.option("--batch", "batch_id", required=True, help="The lot's batch id.")
@click.option("--json", "as_json", is_flag=True)
@pass_context
def trace(obj: LedgerContext, sku: str, batch_id: str, as_json: bool) -> None:
    """Where a lot went, across every outlet, and where it is now: for a recall.

    Lists the lot's receipts, transfers (out, in, in transit), sales with the refunds
    against each, write-offs, counts and expiry, then what is on each outlet's shelves and
    in transit, and the holds on it. Read from the lots read model, indexed by lot."""
    reads, stuck = run(lambda: _fresh_reads(obj, None, DEFAULT_WAIT_SECONDS))
    report = run(lambda: LotReads(reads.models).trace(sku, batch_id))
    report["position"] = reads.models.positions()["lots"]
    report["stuck"] = _stuck(stuck)
    emit(json_ready(report), as_json, describe_trace(json_ready(report)))


def describe_trace(report: dict[str, Any]) -> str:
    """A trace as lines for a person."""
    if not report["found"]:
        return f"no movements of lot {report['batch_id']} of {report['sku']}"
    lines = [f"lot {report['batch_id']} of {report['sku']}, expires "
             f"{report['expires_on'] or 'never (or differs by outlet)'}"]
    lines += [f"  received   {r['occurred_at']}  {r['outlet']:<16} {r['quantity']:>8}  "
              f"({r['reference']})" for r in map(shown, report["received"])]
    for t in map(shown, report["transfers"]):
        lines.append(f"  transfer   {t['dispatched_at']}  {t['from_outlet']} -> "
                     f"{t['to_outlet']} {t['quantity']:>8}  {t['transfer_id']}  "
                     f"{t['status'].replace('_', ' ')}")
    for s in map(shown, report["sales"]):
        lines.append(f"  sold       {s.get('occurred_at', '?')}  {s['outlet']:<16} "
                     f"{s['quantity']:>8}  sale {s['sale_id']}")
        lines += [f"    refund {x['refund_id']} {x['occurred_at']} {x['quantity']} "
                  f"{'restocked' if x['restocked'] else 'written off'}"
                  for x in map(shown, s["refunds"])]
    for label, key in (("written off", "written_off"), ("expired", "expired")):
        lines += [f"  {label:<10} {r['occurred_at']}  {r['outlet']:<16} {r['quantity']:>8}"
                  for r in map(shown, report[key])]
    lines += [f"  counted    {r['occurred_at']}  {r['outlet']:<16} {r['variance']:>+8}  "
              f"{r['detail']}" for r in map(shown, report["counted"])]
    lines += [f"  {r['kind']:<10} {r['occurred_at']}  {r['outlet']:<16} {r['quantity']:>+8}"
              for r in map(shown, report["other"])]
    now = report["now"]
    lines.append(f"now: {now['on_shelves_total']} on shelves, {now['in_transit_total']} "
                 "in transit")
    lines += [f"  {s['outlet']:<20} {s['quantity']:>8}" for s in map(shown, now["on_shelves"])]
    lines += [f"  in transit {t['from_outlet']} -> {t['to_outlet']} {t['quantity']:>8}  "
              f"{t['transfer_id']}" for t in map(shown, now["in_transit"])]
    lines += [f"held {'at ' + h['outlet'] if h['outlet'] else 'everywhere'} since "
              f"{h['held_at']} by {h['actor']}: {h['reason']}"
              for h in map(shown, report["holds"])]
    return "\n".join(lines)


@click.command()
@click.option("--within", required=True, metavar="DAYS",
              help="How far ahead: 30d, 4w or a number of days (0: expired and expiring "
                   "today).")
@click.option("--outlet")
@click.option("--sku")
@click.option("--limit", type=click.IntRange(1, MAX_EXPIRING), default=MAX_EXPIRING,
              show_default=True)
@click.option("--json", "as_json", is_flag=True)
@pass_context
def expiring(obj: LedgerContext, within: str, outlet: str | None, sku: str | None,
             limit: int, as_json: bool) -> None:
    """Lots holding stock whose expiry date comes within the window (already expired ones
    too, flagged), across outlets, soonest first, with quantities.

    Dates are reckoned in UTC; a lot expires on its expiry date (it is not sellable from
    then)."""
    try:
        window = parse_within(within)
    except ValueError as error:
        fail(EXIT_INVALID, f"invalid within: {error}")
    reads, stuck = run(lambda: _fresh_reads(obj, None, DEFAULT_WAIT_SECONDS))
    today = datetime.now(UTC).date()
    rows = run(lambda: LotReads(reads.models).expiring(window, outlet, sku, today, limit))
    emit({"on_date": today.isoformat(), "until": (today + window).isoformat(),
          "position": reads.models.positions()["lots"], "expiring": _json_rows(rows),
          "stuck": _stuck(stuck)}, as_json,
         "\n".join(f"{r['expires_on']}  {r['sku']:<16} {r['batch_id']:<14} {r['outlet']:<16} "
                   f"{r['quantity']:>8}"
                   + ("  EXPIRED" if r["expired"] else f"  in {r['days_left']}d")
                   + ("  HELD" if r["held"] else "")
                   for r in map(shown, _json_rows(rows)))
         or f"nothing expires by {today + window}")
