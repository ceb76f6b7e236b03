"""The `ledger` command: the root group with its `--db` option, and every command under it.

The commands live in one module per kind (`cli.writes`, `cli.reads`, `cli.reports`, `cli.imports`,
`cli.projections`, `cli.audit`, `cli.demo`, `cli.webhooks`); what they share is `cli.context`,
the option types that bound a position, a wait or a worker count are `cli.bounds`, and how a
recorded string is printed is `cli.display`. Imports run one way: this module imports the
command modules, they import `cli.context`, `cli.bounds` and `cli.display`, `cli.context`
imports `cli.display`, and `cli.bounds` and `cli.display` import no `cli` module.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import click

from cli import audit, demo, imports, period_reports, projections, reads, reports, webhooks, writes
from cli import lots as lot_reads
from cli.bounds import undecodable_argument
from cli.context import EXIT_INVALID, LedgerContext, fail
from cli.http import commands as http


class LedgerGroup(click.Group):
    """The root group: it calls itself `ledger` in usage lines and errors, however started
    (the console script, `python -c`, click's test runner)."""

    def make_context(self, info_name: str | None, args: list[str],
                     parent: click.Context | None = None, **extra: Any) -> click.Context:
        return super().make_context("ledger", args, parent, **extra)

    def main(self, args: Sequence[str] | None = None, *extra_args: Any,
             **extra: Any) -> Any:
        """Run the command; an argument that is not UTF-8 is refused first (exit 2)."""
        undecodable = undecodable_argument(sys.argv[1:] if args is None else args)
        if undecodable is not None:
            fail(EXIT_INVALID, f"invalid {undecodable}: not UTF-8 text")
        return super().main(args, *extra_args, **extra)


@click.group(cls=LedgerGroup, name="ledger",
             context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--db", envvar="LEDGER_DATABASE_URL", metavar="URL",
              help="postgresql://... or sqlite:///path (default: $LEDGER_DATABASE_URL, else "
                   "a SQLite file in your data directory).")
@click.pass_context
def main(context: click.Context, db: str | None) -> None:
    """stockledger: an event-sourced stock ledger for retail and pharmacy outlets."""
    ledger_context = LedgerContext(db)
    context.obj = ledger_context
    context.call_on_close(ledger_context.close)


# Setting up the store and its outlets, and every stock movement.
main.add_command(writes.init)
main.add_command(writes.receive)
main.add_command(writes.sell)
main.add_command(writes.refund)
main.add_command(writes.count)
main.add_command(writes.write_off)
main.add_command(writes.transfer)
main.add_command(writes.transfer_receive)
main.add_command(writes.expire)
main.add_command(writes.outlet_policy)
main.add_command(writes.reorder_level)
main.add_command(writes.hold)
main.add_command(writes.release)
main.add_command(writes.correct_receipt)
main.add_command(reports.settings)
# Opening balances brought over from a file or the old system.
main.add_command(imports.import_group)
# Reads over the projections.
main.add_command(reads.stock)
main.add_command(reads.batches)
main.add_command(reads.low_stock)
main.add_command(reads.history)
main.add_command(reads.discrepancies)
main.add_command(reads.holds)
# Reads by lot: recalls and expiring stock.
main.add_command(lot_reads.trace)
main.add_command(lot_reads.expiring)
# Period reports: movements (read models), valuation and the cost of goods sold (replay).
reports.report_group.add_command(period_reports.movements)
main.add_command(reports.report_group)
# The operator's and the auditor's groups, and the demo.
main.add_command(projections.projections_group)
main.add_command(audit.audit_group)
main.add_command(demo.demo)
# The HTTP service, its tokens and its webhooks.
main.add_command(http.serve)
main.add_command(http.tokens_group)
main.add_command(webhooks.webhooks_group)


if __name__ == "__main__":  # `python -m cli.main`, as the `ledger` script runs it
    main()
