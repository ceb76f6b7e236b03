"""The `ledger` command: the root group with its `--db` option, and every command under it.

The commands live in one module per kind (`cli.writes`, `cli.reads`, `cli.projections`,
`cli.audit`, `cli.demo`); what they share is `cli.context`. Imports run one way: this module
imports the command modules, they import `cli.context`, and that imports no `cli` module.
"""

from __future__ import annotations

from typing import Any

import click

from cli import audit, demo, projections, reads, writes
from cli.context import LedgerContext
from cli.http import commands as http


class LedgerGroup(click.Group):
    """The root group: it calls itself `ledger` in usage lines and errors, however started
    (the console script, `python -c`, click's test runner)."""

    def make_context(self, info_name: str | None, args: list[str],
                     parent: click.Context | None = None, **extra: Any) -> click.Context:
        return super().make_context("ledger", args, parent, **extra)


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
# Reads over the projections.
main.add_command(reads.stock)
main.add_command(reads.batches)
main.add_command(reads.low_stock)
main.add_command(reads.history)
# The operator's and the auditor's groups, and the demo.
main.add_command(projections.projections_group)
main.add_command(audit.audit_group)
main.add_command(demo.demo)
# The HTTP service and its tokens.
main.add_command(http.serve)
main.add_command(http.tokens_group)
