"""The `ledger` command: parse, call one API function, print.

Exit status: 0 success (an idempotent repeat included), 1 the ledger refused the command,
2 malformed input. `--json` prints exactly one JSON object on stdout.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Callable
from typing import Any, NoReturn

import click
from eventsourcing.persistence import PersistenceError
from pydantic import BaseModel

from ledger.app.service import Ledger
from ledger.domain.errors import InvalidInput, LedgerError, Refusal
from ledger.store.settings import parse_url
from ledger.store.sqlite_recorder import setup_lock

EXIT_REFUSED = 1
EXIT_INVALID = 2
EXIT_STORE = 3
REPEAT_NOTE = " (repeat, nothing new recorded)"


class LedgerContext:
    """Opens the ledger on first use, so `--help` and bad input never touch the database."""

    def __init__(self, url: str | None) -> None:
        self.url = url
        self._ledger: Ledger | None = None

    @property
    def ledger(self) -> Ledger:
        if self._ledger is None:
            self._ledger = run(lambda: open_ledger(self.url))
        return self._ledger

    def close(self) -> None:
        if self._ledger is not None:
            self._ledger.close()


pass_context = click.make_pass_decorator(LedgerContext)


def open_ledger(url: str | None) -> Ledger:
    """Open the store; the embedded SQLite default sets itself up on first use, once: a file
    that has its tables opens without DDL (which would take SQLite's write lock from the
    tills), and one open read-only is never written."""
    ledger = Ledger.open(url)
    if ledger.application.config.backend == "sqlite" and not _embedded_ready(ledger):
        ledger.close()
        set_up_store(url, if_missing=True)
        ledger = Ledger.open(url)
    return ledger


def set_up_store(url: str | None, *, if_missing: bool = False) -> str:
    """Create the event store's and the read models' tables (each statement creates only what
    is missing), on SQLite one process at a time; return the store's URL."""
    from projections.runner import create_read_models

    config = parse_url(url)
    embedded = config.backend == "sqlite"
    with setup_lock(config.dbname) if embedded else contextlib.nullcontext():
        if if_missing:
            with Ledger.open(url) as ledger:
                if _embedded_ready(ledger):
                    return ledger.application.config.url
        ledger = Ledger.open(url, create_tables=True)
        try:
            create_read_models(ledger.application)
            return ledger.application.config.url
        finally:
            ledger.close()


def _embedded_ready(ledger: Ledger) -> bool:
    from projections.runner import PROJECTIONS, ReadModels

    models = ReadModels(ledger.application)
    return ledger.application.is_set_up(
        view for name in PROJECTIONS for view in models.views(name).values())


def fail(code: int, message: str) -> NoReturn:
    click.echo(f"ledger: {message}", err=True)
    sys.exit(code)


def run(action: Callable[[], Any]) -> Any:
    """Run an API call, turning ledger errors into the CLI's exit codes."""
    try:
        return action()
    except InvalidInput as error:
        fail(EXIT_INVALID, f"invalid {error.field}: {error.message}")
    except Refusal as error:
        fail(EXIT_REFUSED, f"refused ({error.rule}): {error}")
    except LedgerError as error:
        fail(EXIT_REFUSED, str(error))
    except PersistenceError as error:
        message = str(error)
        # A missing table is a store not set up yet; a missing database or role is not.
        if ("does not exist" in message and not message.startswith("connection failed")) \
                or "no such table" in message:
            fail(EXIT_STORE, "the store is not initialised here: run `ledger init` first")
        fail(EXIT_STORE, f"store unavailable: {message.splitlines()[0]}")


def emit(result: BaseModel | dict[str, Any], as_json: bool, summary: str) -> None:
    if as_json:
        payload = result.model_dump(mode="json") if isinstance(result, BaseModel) else result
        click.echo(json.dumps(payload, sort_keys=True))
    else:
        click.echo(summary)


def parse_lines(values: tuple[str, ...], option: str = "line") -> list[dict[str, str]]:
    lines = []
    for value in values:
        sku, sep, quantity = value.rpartition("=")
        if not sep or not sku:
            fail(EXIT_INVALID, f"invalid {option}: expected SKU=QUANTITY, got {value!r}")
        lines.append({"sku": sku, "quantity": quantity})
    return lines


def common_fields(actor: str | None, at: str | None, key: str | None) -> dict[str, Any]:
    fields: dict[str, Any] = {"actor": actor or os.environ.get("LEDGER_ACTOR")
                              or f"cli:{os.environ.get('USER', 'unknown')}"}
    if at is not None:
        fields["occurred_at"] = at
    if key is not None:
        fields["key"] = key
    return fields


def movement_options(function: Callable[..., Any]) -> Callable[..., Any]:
    """--key, --at, --actor and --json, shared by every command that records a movement."""
    function = click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")(
        function)
    function = click.option("--actor", help="Who or what caused it (default: cli:$USER).")(
        function)
    function = click.option("--at", "at", help="Business time (ISO 8601); default now.")(
        function)
    function = click.option("--key", help="Idempotency key (default: the command's own id).")(
        function)
    return function


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--db", envvar="LEDGER_DATABASE_URL", metavar="URL",
              help="postgresql://... or sqlite:///path (default: $LEDGER_DATABASE_URL, else "
                   "a SQLite file in your data directory).")
@click.pass_context
def cli(context: click.Context, db: str | None) -> None:
    """stockledger: an event-sourced stock ledger for retail and pharmacy outlets."""
    ledger_context = LedgerContext(db)
    context.obj = ledger_context
    context.call_on_close(ledger_context.close)


@cli.command()
@click.pass_obj
def init(obj: LedgerContext) -> None:
    """Create the event store and read-model tables (safe to run again)."""
    url = run(lambda: set_up_store(obj.url))
    click.echo(f"ledger: store ready at {url}")


@cli.command()
@click.option("--outlet", required=True)
@click.option("--sku", required=True)
@click.option("--batch", "batch_id", required=True)
@click.option("--qty", "quantity", required=True)
@click.option("--expires", "expires_on", help="Expiry date, YYYY-MM-DD.")
@click.option("--cost", "unit_cost", help="Unit cost, a decimal.")
@click.option("--reference", help="Delivery note or purchase order.")
@movement_options
@pass_context
def receive(obj: LedgerContext, /, key: str | None, at: str | None, actor: str | None,
            as_json: bool, **fields: Any) -> None:
    """Record a batch arriving at an outlet."""
    fields = {k: v for k, v in fields.items() if v is not None}
    result = run(lambda: obj.ledger.receive(**fields, **common_fields(actor, at, key)))
    emit(result, as_json, f"received {result.quantity} of {result.sku} batch {result.batch_id} "
                          f"at {result.outlet}: on hand {result.stock.on_hand}"
                          + REPEAT_NOTE * result.replayed)


@cli.command()
@click.option("--outlet", required=True)
@click.option("--sale", "sale_id", required=True)
@click.option("--line", "lines", multiple=True, required=True, metavar="SKU=N")
@movement_options
@pass_context
def sell(obj: LedgerContext, outlet: str, sale_id: str, lines: tuple[str, ...],
         key: str | None, at: str | None, actor: str | None, as_json: bool) -> None:
    """Record a sale; all lines or none."""
    parsed = parse_lines(lines)
    result = run(lambda: obj.ledger.sell(outlet=outlet, sale_id=sale_id, lines=parsed,
                                         **common_fields(actor, at, key)))
    described = ", ".join(
        f"{line.sku} x{line.quantity} from "
        + "+".join(f"{t.batch_id}:{t.quantity}" for t in line.takes)
        + (f" (+{line.unallocated} unallocated)" if line.unallocated else "")
        for line in result.lines)
    emit(result, as_json, f"sale {result.sale_id}: {described}"
                          + REPEAT_NOTE * result.replayed)


@cli.command()
@click.option("--sale", "sale_id", required=True)
@click.option("--refund", "refund_id", required=True)
@click.option("--line", "lines", multiple=True, required=True, metavar="SKU=N")
@click.option("--write-off", is_flag=True, help="Write the returned units off, not restock.")
@movement_options
@pass_context
def refund(obj: LedgerContext, sale_id: str, refund_id: str, lines: tuple[str, ...],
           write_off: bool, key: str | None, at: str | None, actor: str | None,
           as_json: bool) -> None:
    """Return units of a sale to the batches they came from."""
    parsed = parse_lines(lines)
    result = run(lambda: obj.ledger.refund(sale_id=sale_id, refund_id=refund_id, lines=parsed,
                                           write_off=write_off,
                                           **common_fields(actor, at, key)))
    described = ", ".join(f"{line.sku} x{line.quantity}" for line in result.lines)
    emit(result, as_json, f"refund {result.refund_id} of sale {result.sale_id}: {described}"
                          + REPEAT_NOTE * result.replayed)


@cli.command()
@click.option("--outlet")
@click.option("--sku")
@click.option("--as-of", "as_of", help="Date, YYYY-MM-DD (default today).")
@click.option("--actor")
@click.option("--json", "as_json", is_flag=True)
@pass_context
def expire(obj: LedgerContext, outlet: str | None, sku: str | None, as_of: str | None,
           actor: str | None, as_json: bool) -> None:
    """Write off every batch whose expiry date has come."""
    fields: dict[str, Any] = {"outlet": outlet, "sku": sku, **common_fields(actor, None, None)}
    if as_of is not None:
        fields["as_of"] = as_of
    result = run(lambda: obj.ledger.expire(**fields))
    emit(result, as_json, f"expired {len(result.expired)} batch(es) as of {result.as_of}: "
                          + ", ".join(f"{e.outlet}/{e.sku}/{e.batch_id} x{e.quantity}"
                                      for e in result.expired))


@cli.command()
@click.option("--outlet", required=True)
@click.option("--sku", required=True)
@click.option("--batch", "batch_id", required=True)
@click.option("--counted", required=True)
@click.option("--count-id", help="The stock take's id (makes the default key retry-safe).")
@movement_options
@pass_context
def count(obj: LedgerContext, outlet: str, sku: str, batch_id: str, counted: str,
          count_id: str | None, key: str | None, at: str | None, actor: str | None,
          as_json: bool) -> None:
    """Record a stock take of one batch; the variance is recorded with it."""
    fields: dict[str, Any] = {"outlet": outlet, "sku": sku, "counts": {batch_id: counted}}
    if count_id:
        fields["count_id"] = count_id
    result = run(lambda: obj.ledger.count(**fields, **common_fields(actor, at, key)))
    described = ", ".join(f"{x.batch_id}: expected {x.expected}, counted {x.counted}, "
                          f"variance {x.variance:+d}" for x in result.counts)
    emit(result, as_json, f"count at {outlet}/{sku}: {described}")


@cli.command("write-off")
@click.option("--outlet", required=True)
@click.option("--sku", required=True)
@click.option("--qty", "quantity", required=True)
@click.option("--batch", "batch_id")
@click.option("--reason", required=True)
@movement_options
@pass_context
def write_off(obj: LedgerContext, /, key: str | None, at: str | None, actor: str | None,
              as_json: bool, **fields: Any) -> None:
    """Take stock off the shelf for a reason (damage, theft, samples)."""
    fields = {k: v for k, v in fields.items() if v is not None}
    result = run(lambda: obj.ledger.write_off(**fields, **common_fields(actor, at, key)))
    emit(result, as_json, f"wrote off {fields['quantity']} of {result.sku} at {result.outlet}: "
                          + "+".join(f"{t.batch_id}:{t.quantity}" for t in result.takes))


@cli.command()
@click.option("--from", "from_outlet", required=True)
@click.option("--to", "to_outlet", required=True)
@click.option("--sku", required=True)
@click.option("--qty", "quantity", required=True)
@click.option("--transfer", "transfer_id", required=True)
@click.option("--in-transit", is_flag=True,
              help="Record the dispatch only; `transfer-receive` records the arrival.")
@movement_options
@pass_context
def transfer(obj: LedgerContext, /, key: str | None, at: str | None, actor: str | None,
             as_json: bool, **fields: Any) -> None:
    """Move stock between outlets, keeping batch identity and expiry."""
    result = run(lambda: obj.ledger.transfer(**fields, **common_fields(actor, at, key)))
    emit(result, as_json, f"transfer {result.transfer_id}: {result.sku} "
                          f"{result.from_outlet} -> {result.to_outlet} "
                          + ("received" if result.received else "in transit")
                          + REPEAT_NOTE * result.replayed)


@cli.command("transfer-receive")
@click.option("--transfer", "transfer_id", required=True)
@movement_options
@pass_context
def transfer_receive(obj: LedgerContext, transfer_id: str, key: str | None, at: str | None,
                     actor: str | None, as_json: bool) -> None:
    """Record the arrival of a transfer dispatched with --in-transit."""
    result = run(lambda: obj.ledger.receive_transfer(transfer_id=transfer_id,
                                                     **common_fields(actor, at, key)))
    emit(result, as_json, f"transfer {result.transfer_id} received at {result.to_outlet}"
                          + REPEAT_NOTE * result.replayed)


@cli.command("outlet")
@click.option("--outlet", required=True)
@click.option("--policy", "allocation_policy", type=click.Choice(["fefo", "fifo"]),
              default="fefo", show_default=True)
@click.option("--allow-negative/--no-allow-negative", default=False, show_default=True)
@click.option("--actor")
@click.option("--json", "as_json", is_flag=True)
@pass_context
def outlet_policy(obj: LedgerContext, outlet: str, allocation_policy: str,
                  allow_negative: bool, actor: str | None, as_json: bool) -> None:
    """Open an outlet or set its allocation policy and negative-stock rule."""
    result = run(lambda: obj.ledger.set_outlet_policy(
        outlet=outlet, allocation_policy=allocation_policy, allow_negative=allow_negative,
        **common_fields(actor, None, None)))
    emit(result, as_json, f"outlet {outlet}: {allocation_policy}, "
                          f"{'allows' if allow_negative else 'refuses'} negative stock")


def register_subcommands() -> None:
    from cli import audit, demo, reads

    reads.register(cli)
    audit.register(cli)
    demo.register(cli)


register_subcommands()


def main() -> None:
    cli(prog_name="ledger")
