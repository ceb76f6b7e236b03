"""`ledger report movements`: a period's movements per stock item, from the periods read
model (`cli.main` adds it to the `report` group of `cli.reports`)."""

from __future__ import annotations

from datetime import date
from typing import Literal

import click

from cli.context import EXIT_INVALID, LedgerContext, emit, fail, pass_context, run
from cli.display import shown
from cli.reads import DEFAULT_WAIT_SECONDS, _fresh_reads, _stuck
from projections.lot_queries import LotReads

MAX_PERIOD_DAYS = 3_660


def parse_period(first: str, last: str) -> tuple[date, date]:
    """The first and last day of a period (ISO dates, inclusive); ValueError naming the
    field that is wrong."""
    days = []
    for field, text in (("from", first), ("to", last)):
        try:
            days.append(date.fromisoformat(text))
        except ValueError:
            raise ValueError(f"invalid {field}: not an ISO 8601 date (2026-11-01): "
                             f"{text!r}") from None
    if days[1] < days[0]:
        raise ValueError(f"invalid to: {days[1]} is before from {days[0]}")
    if (days[1] - days[0]).days >= MAX_PERIOD_DAYS:
        raise ValueError(f"invalid to: a period is at most {MAX_PERIOD_DAYS} days")
    return days[0], days[1]


@click.command("movements")
@click.option("--from", "first", required=True, metavar="DATE",
              help="First day of the period (ISO date, UTC).")
@click.option("--to", "last", required=True, metavar="DATE",
              help="Last day of the period, included (ISO date, UTC).")
@click.option("--outlet")
@click.option("--sku")
@click.option("--basis", type=click.Choice(["business", "recorded"]), default="business",
              show_default=True,
              help="Date movements by business time (occurred_at) or by when they were "
                   "recorded.")
@click.option("--json", "as_json", is_flag=True)
@pass_context
def movements(obj: LedgerContext, first: str, last: str, outlet: str | None,
              sku: str | None, basis: str, as_json: bool) -> None:
    """Per stock item: opening balance, each kind of movement, closing balance.

    The opening balance is the stock on hand at the start of --from (00:00 UTC), the closing
    balance at the end of --to; opening + received - sold + refunded_restocked - expired -
    written_off + count_variance + transferred_in - transferred_out + other = closing on
    every row (refunded_written_off units came back and left at once). Both balances are what
    `ledger audit replay --basis BASIS` gives at those moments."""
    try:
        first_day, last_day = parse_period(first, last)
    except ValueError as error:
        fail(EXIT_INVALID, str(error))
    chosen: Literal["business", "recorded"] = "recorded" if basis == "recorded" else "business"
    reads, stuck = run(lambda: _fresh_reads(obj, None, DEFAULT_WAIT_SECONDS))
    rows = run(lambda: LotReads(reads.models).movements(first_day, last_day, outlet, sku,
                                                        chosen))
    emit({"from": first_day.isoformat(), "to": last_day.isoformat(), "basis": chosen,
          "outlet": outlet, "sku": sku, "position": reads.models.positions()["periods"],
          "rows": rows, "stuck": _stuck(stuck)}, as_json,
         "\n".join(
             f"{r['outlet']:<14} {r['sku']:<14} open {r['opening']:>7}  in {r['received']:>6}"
             f"  sold {r['sold']:>6}  refunded {r['refunded_restocked']:>4}"
             f"(+{r['refunded_written_off']} w/o)  expired {r['expired']:>4}"
             f"  written off {r['written_off']:>4}  count {r['count_variance']:>+5}"
             f"  transfer +{r['transferred_in']}/-{r['transferred_out']}"
             + (f"  other {r['other']:+d}" if r["other"] else "")
             + f"  close {r['closing']:>7}" for r in map(shown, rows))
         or f"no stock moved or held from {first_day} to {last_day}")
