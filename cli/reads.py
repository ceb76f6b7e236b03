"""Commands that read the projections: stock, batches, low stock and the movement history."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import click

from cli.bounds import POSITION, SECONDS
from cli.context import (
    EXIT_INVALID,
    EXIT_REFUSED,
    EXIT_STORE,
    LedgerContext,
    emit,
    fail,
    pass_context,
    run,
)
from cli.display import printable, shown
from projections.queries import Reads
from projections.runner import ReadModels
from projections.stuck import ProjectionStuck, Stuck

DEFAULT_WAIT_SECONDS = 10.0


def _fresh_reads(obj: LedgerContext, as_of_position: int | None,
                 timeout: float) -> tuple[Reads, Stuck | None]:
    """Reads that include every append made so far (or up to `as_of_position`), and the
    event the projections are stuck before, if one cannot be read.

    The read models are brought up to date here, under the same exactly-once locks as the
    runner, so a read after an append sees it whether or not a runner daemon is going. A read
    of a store with an unreadable event answers from the read models as far as they got,
    with a warning on stderr naming the event (and `stuck` in its JSON): what it shows
    before that event is right, and the event's own effect is unknown.
    """
    models = ReadModels(obj.ledger.application)
    stuck: Stuck | None = None
    try:
        if as_of_position is not None:
            if not models.wait_for(as_of_position, timeout):
                fail(EXIT_REFUSED,
                     f"projections did not reach position {as_of_position} in {timeout}s")
        else:
            behind = models.catch_up_if_permitted()
            if behind is not None:
                # A role that may only read (the auditor's) reads the models as they stand,
                # which `projections run` keeps up to date; it says how far behind they are.
                click.echo(f"ledger: the read models are {behind} events behind the head; "
                           "this role may not bring them up to date (`projections run` does)",
                           err=True)
    except ProjectionStuck as error:
        if as_of_position is not None:
            fail(EXIT_STORE, f"cannot reach position {as_of_position}: {error.describe()}")
        stuck = error.stuck
        click.echo(printable(f"ledger: warning: read models stop before {stuck.describe()}; "
                             "this shows the events before it (see `ledger projections "
                             "status`)"), err=True)
    return Reads(obj.ledger.application), stuck


def _stuck(stuck: Stuck | None) -> dict[str, Any] | None:
    """The event the read models stop before, for `--json` (null when they do not)."""
    return None if stuck is None else stuck.as_dict()


def _json_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in row.items()}
            for row in rows]


@click.command()
@click.option("--outlet", required=True)
@click.option("--sku")
@click.option("--as-of-position", type=POSITION,
              help="Wait until the projections include this position (read-your-writes).")
@click.option("--timeout", type=SECONDS, default=DEFAULT_WAIT_SECONDS, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@pass_context
def stock(obj: LedgerContext, outlet: str, sku: str | None, as_of_position: int | None,
          timeout: float, as_json: bool) -> None:
    """On hand and available stock per SKU at an outlet."""
    reads, stuck = run(lambda: _fresh_reads(obj, as_of_position, timeout))
    rows = run(lambda: reads.stock(outlet, sku))
    position = min(reads.models.positions().values())
    emit({"outlet": outlet, "position": position, "stock": _json_rows(rows),
          "stuck": _stuck(stuck)}, as_json,
         "\n".join(f"{r['sku']:<20} on hand {r['on_hand']:>8}  available {r['available']:>8}"
                   for r in map(shown, rows)) or f"no stock recorded at {outlet}")


@click.command()
@click.option("--outlet", required=True)
@click.option("--sku", required=True)
@click.option("--json", "as_json", is_flag=True)
@pass_context
def batches(obj: LedgerContext, outlet: str, sku: str, as_json: bool) -> None:
    """Batches of a SKU at an outlet, in expiry order."""
    reads, stuck = run(lambda: _fresh_reads(obj, None, DEFAULT_WAIT_SECONDS))
    rows = run(lambda: reads.batches(outlet, sku))
    emit({"outlet": outlet, "sku": sku, "batches": _json_rows(rows), "stuck": _stuck(stuck)},
         as_json,
         "\n".join(f"{r['batch_id']:<20} {r['quantity']:>8}  expires {r['expires_on']}"
                   + ("  (expired)" if r["expired"] else "") for r in map(shown, rows))
         or f"no batches of {sku} at {outlet}")


@click.command("low-stock")
@click.option("--outlet", required=True)
@click.option("--json", "as_json", is_flag=True)
@pass_context
def low_stock(obj: LedgerContext, outlet: str, as_json: bool) -> None:
    """Stock items at or below their reorder level."""
    reads, stuck = run(lambda: _fresh_reads(obj, None, DEFAULT_WAIT_SECONDS))
    rows = run(lambda: reads.low_stock(outlet))
    emit({"outlet": outlet, "low_stock": _json_rows(rows), "stuck": _stuck(stuck)}, as_json,
         "\n".join(f"{r['sku']:<20} available {r['available']:>8}  reorder at "
                   f"{r['reorder_level']}" for r in map(shown, rows)) or "nothing low")


@click.command()
@click.option("--outlet", required=True)
@click.option("--sku")
@click.option("--reference", help="A sale, refund, count or transfer id.")
@click.option("--since", help="Business time (ISO 8601) from which to list.")
@click.option("--limit", type=click.IntRange(1, 10_000), default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@pass_context
def history(obj: LedgerContext, outlet: str, sku: str | None, reference: str | None,
            since: str | None, limit: int, as_json: bool) -> None:
    """Movements at an outlet, newest first."""
    since_time = None
    if since is not None:
        try:
            since_time = datetime.fromisoformat(since)
        except ValueError:
            fail(EXIT_INVALID, f"invalid since: not an ISO 8601 time: {since!r}")
    reads, stuck = run(lambda: _fresh_reads(obj, None, DEFAULT_WAIT_SECONDS))
    rows = run(lambda: reads.history(outlet, sku, reference, since_time, limit))
    emit({"outlet": outlet, "movements": _json_rows(rows), "stuck": _stuck(stuck)}, as_json,
         "\n".join(f"{r['occurred_at']}  {r['kind']:<20} {r['sku']:<14} "
                   f"{r['batch_id'] or '-':<12} {r['quantity']:>+8}  {r['reference']}  "
                   f"by {r['actor']}" for r in map(shown, rows)) or "no movements")
