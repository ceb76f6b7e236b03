"""`ledger settings` (the store's currency) and `ledger report` (valuation and the cost of
goods sold), read by replay of the events (`ledger.app.valuation`)."""

from __future__ import annotations

import csv
import json
import sys
from typing import Any

import click

from cli.context import (
    EXIT_INVALID,
    LedgerContext,
    day_option,
    emit,
    fail,
    moment_option,
    pass_context,
    run,
)
from cli.writes import common_fields
from ledger.app import valuation
from ledger.app.results import StoreSettingsResult


def describe_store(settings: StoreSettingsResult) -> str:
    if settings.currency is None:
        return (f"store currency: not set (costs of up to {settings.cost_places} decimal "
                "places; `ledger settings --currency EUR --cost-places 2` names it)")
    return f"store currency: {settings.currency}, costs of up to {settings.cost_places} places"


@click.command("settings")
@click.option("--currency", help="The store's one currency, an ISO 4217 code (EUR, KES).")
@click.option("--cost-places", type=int,
              help="How many decimal places a unit cost may have (0 to 6).")
@click.option("--actor")
@click.option("--json", "as_json", is_flag=True)
@pass_context
def settings(obj: LedgerContext, currency: str | None, cost_places: int | None,
             actor: str | None, as_json: bool) -> None:
    """Name the store's currency and its costs' decimal places (once); with no option, show
    them. A receipt whose unit cost has more places is refused."""
    if currency is None and cost_places is None:
        shown = run(lambda: obj.ledger.store_settings())
        emit(shown, as_json, describe_store(shown))
        return
    if currency is None or cost_places is None:
        fail(EXIT_INVALID, "invalid currency: --currency and --cost-places go together")
    result = run(lambda: obj.ledger.set_store_currency(
        currency=currency, cost_places=cost_places,
        actor=common_fields(actor, None, None)["actor"]))
    emit(result, as_json, describe_store(result))


@click.group("report")
def report_group() -> None:
    """Period reports: movements (from the read models), valuation and the cost of goods
    sold (by replay of the events)."""


@report_group.command("valuation")
@click.option("--outlet")
@click.option("--as-of", "as_of", help="A past moment (ISO 8601): what was recorded by then.")
@click.option("--json", "as_json", is_flag=True)
@pass_context
def valuation_command(obj: LedgerContext, outlet: str | None, as_of: str | None,
                      as_json: bool) -> None:
    """Quantity and value on hand per stock item and per outlet, with totals; stock in
    transit apart; units without a cost are unvalued, never zero."""
    moment = moment_option("as-of", as_of)
    report = run(lambda: valuation.valuation_report(obj.ledger.application, outlet=outlet,
                                                    as_of=moment))
    currency = report["currency"] or "(no currency set)"
    lines = [f"valuation in {currency}" + (f" as of {report['as_of']}" if as_of else "")]
    lines += [f"  {row['outlet']} {row['sku']}: {_worth(row)}" for row in report["items"]]
    lines += [f"outlet {row['outlet']}: {_worth(row)}" for row in report["outlets"]]
    lines += [f"in transit {row['transfer_id']} {row['from_outlet']}->{row['to_outlet']} "
              f"{row['sku']}: {row['quantity']} worth {row['value']}"
              for row in report["in_transit"]]
    lines += [f"pending valuation: sale {row['sale_id']} {row['sku']} at {row['outlet']}: "
              f"{row['quantity']} sold into negative stock"
              for row in report["pending_valuation"]]
    lines += [f"valued late: sale {row['sale_id']} {row['sku']} at {row['outlet']}: "
              f"{row['quantity']} valued when their shortfall was settled"
              for row in report["valued_late"]]
    totals = report["totals"]
    lines.append(f"total: {_worth(totals)}"
                 + (f"; in transit {totals['in_transit_quantity']} worth "
                    f"{totals['in_transit_value']}" if totals["in_transit_quantity"] else ""))
    emit(report, as_json, "\n".join(lines))


def _worth(row: dict[str, Any]) -> str:
    """`12 worth 1.20, 4 unvalued`: units without a cost are never shown as worth zero."""
    valued = row["quantity"] - row["unvalued"]
    return (f"{row['quantity']}" + (f" worth {row['value']}" if valued or not row["unvalued"]
                                    else "")
            + (f", {row['unvalued']} unvalued (no cost recorded)" if row["unvalued"] else ""))


@report_group.command("cogs")
@click.option("--from", "from_date", required=True, help="First business day (inclusive).")
@click.option("--to", "to_date", required=True, help="Last business day (inclusive).")
@click.option("--outlet")
@click.option("--format", "output_format", type=click.Choice(["csv", "jsonl"]), default="csv")
@pass_context
def cogs_command(obj: LedgerContext, from_date: str, to_date: str, outlet: str | None,
                 output_format: str) -> None:
    """The cost of goods sold: a row per sale line (sale, SKU, batches, quantity, cost), per
    refund line restocked (negative), per sale into negative stock valued late, then a total
    per business day."""
    first, last = day_option("from", from_date), day_option("to", to_date)
    if last < first:
        fail(EXIT_INVALID, f"invalid to: {to_date} is before --from {from_date}")
    rows = valuation.cogs_rows(obj.ledger.application, from_date=first, to_date=last,
                               outlet=outlet)

    def write() -> None:
        writer = csv.writer(sys.stdout) if output_format == "csv" else None
        if writer is not None:
            writer.writerow(valuation.COGS_COLUMNS)
        for row in rows:
            if writer is not None:
                writer.writerow(["" if row[c] is None else row[c]
                                 for c in valuation.COGS_COLUMNS])
            else:
                sys.stdout.write(json.dumps(row, sort_keys=True) + "\n")

    run(write)
