"""Commands that read the projections: stock, batches, low stock and the movement history."""

from __future__ import annotations

from datetime import UTC, datetime
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
from ledger.app.results import BatchHeld, StockItemBatches
from ledger.domain.errors import UnknownStockItem
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
@click.option("--outlet", help="One outlet; without it, --sku at every outlet, with a total.")
@click.option("--sku")
@click.option("--as-of-position", type=POSITION,
              help="Wait until the projections include this position (read-your-writes).")
@click.option("--timeout", type=SECONDS, default=DEFAULT_WAIT_SECONDS, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@pass_context
def stock(obj: LedgerContext, outlet: str | None, sku: str | None,
          as_of_position: int | None, timeout: float, as_json: bool) -> None:
    """On hand and available stock per SKU at an outlet, or of one SKU at every outlet."""
    if outlet is None and sku is None:
        fail(EXIT_INVALID, "invalid outlet: give --outlet, --sku, or both")
    reads, stuck = run(lambda: _fresh_reads(obj, as_of_position, timeout))
    position = min(reads.models.positions().values())
    if outlet is None:
        assert sku is not None
        _stock_of_sku(reads, sku, position, stuck, as_json)
        return
    rows = run(lambda: reads.stock(outlet, sku))
    emit({"outlet": outlet, "position": position, "stock": _json_rows(rows),
          "stuck": _stuck(stuck)}, as_json,
         "\n".join(f"{r['sku']:<20} on hand {r['on_hand']:>8}  available {r['available']:>8}"
                   + _held(r) for r in map(shown, rows)) or f"no stock recorded at {outlet}")


def _held(row: dict[str, Any]) -> str:
    return f"  held {row['held']:>8}" if row.get("held") else ""


def _stock_of_sku(reads: Reads, sku: str, position: int, stuck: Stuck | None,
                  as_json: bool) -> None:
    rows = run(lambda: reads.stock_of_sku(sku))
    total = {"on_hand": sum(r["on_hand"] for r in rows),
             "available": sum(r["available"] for r in rows),
             "held": sum(r["held"] for r in rows)}
    lines = [f"{r['outlet']:<20} on hand {r['on_hand']:>8}  available {r['available']:>8}"
             + _held(r) for r in map(shown, rows)]
    if rows:
        lines.append(f"{'total':<20} on hand {total['on_hand']:>8}  "
                     f"available {total['available']:>8}" + _held(total))
    emit({"sku": sku, "position": position, "stock": _json_rows(rows), "total": total,
          "stuck": _stuck(stuck)}, as_json,
         "\n".join(lines) or f"no stock of {sku} recorded at any outlet")


@click.command()
@click.option("--outlet", required=True)
@click.option("--sku", required=True)
@click.option("--json", "as_json", is_flag=True)
@pass_context
def batches(obj: LedgerContext, outlet: str, sku: str, as_json: bool) -> None:
    """Batches of a SKU at an outlet, first expiry first, with their cost layers.

    Read from the stock item itself, which keeps one cost layer per arrival; "expired" is
    reckoned on today's date (UTC), whether the expiry sweep has written the batch off yet
    or not. Like the other reads, it warns (and says in `stuck`) when the read models stop
    before an unreadable event; an unreadable event of this stock item's own stream fails
    the read (exit 3), since its batches cannot be known without it."""
    def read() -> StockItemBatches | None:
        try:
            return obj.ledger.batches(outlet, sku)
        except UnknownStockItem:
            return None

    _, stuck = run(lambda: _fresh_reads(obj, None, DEFAULT_WAIT_SECONDS))
    held = run(read)
    if held is None:
        emit({"outlet": outlet, "sku": sku, "on_date": datetime.now(UTC).date().isoformat(),
              "batches": [], "stuck": _stuck(stuck)}, as_json,
             f"no batches of {sku} at {outlet}")
        return
    emit({**held.model_dump(mode="json"), "stuck": _stuck(stuck)}, as_json,
         "\n".join(_describe_batch(b) for b in held.batches)
         or f"no batches of {sku} at {outlet}")


def _describe_batch(batch: BatchHeld) -> str:
    expired = ("  (expired)" if batch.written_off_as_expired
               else "  (expired, not yet written off)" if batch.expired else "")
    expired += "  (held)" if batch.on_hold else ""
    layers = " + ".join(f"{layer.quantity} @ {layer.unit_cost or 'no cost'}"
                        for layer in batch.layers)
    value = "" if batch.value is None else f"  value {batch.value}"
    unvalued = f" ({batch.unvalued} unvalued)" if batch.unvalued and batch.value else ""
    return (f"{printable(batch.batch_id):<20} {batch.quantity:>8}  expires "
            f"{batch.expires_on}{expired}{value}{unvalued}  [{printable(layers)}]")


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
                   f"{r['batch_id'] or '-':<12} {r['quantity']:>+8}  {_cost_text(r['cost'])}  "
                   f"{r['reference']}  by {r['actor']}" for r in map(shown, rows))
         or "no movements")


def _cost_text(cost: str | None) -> str:
    # None is not zero: the events do not record this movement's cost.
    return "cost not recorded" if cost is None else f"cost {cost}"



@click.command()
@click.option("--outlet", help="One outlet (default: every outlet).")
@click.option("--json", "as_json", is_flag=True)
@pass_context
def discrepancies(obj: LedgerContext, outlet: str | None, as_json: bool) -> None:
    """Shortfalls no receipt or count has settled yet: late sales that found too little on
    the shelf, and sales into negative stock, newest first."""
    reads, stuck = run(lambda: _fresh_reads(obj, None, DEFAULT_WAIT_SECONDS))
    rows = run(lambda: reads.discrepancies(outlet))
    lines = []
    for row in rows:
        lines.append(f"{printable(row['outlet'])}/{printable(row['sku'])}: short "
                     f"{row['shortfall']}")
        lines += [f"  sale {printable(sale['sale_id'])} at {sale['occurred_at'].isoformat()}: "
                  f"{sale['short']} short" + (" (late)" if sale["late"] else "")
                  for sale in row["sales"]]
    emit({"outlet": outlet, "discrepancies": [
        {**row, "sales": _json_rows(row["sales"])} for row in rows],
        "stuck": _stuck(stuck)}, as_json, "\n".join(lines) or "no discrepancies")


@click.command()
@click.option("--sku")
@click.option("--outlet", help="Holds that apply at this outlet (its own and everywhere).")
@click.option("--json", "as_json", is_flag=True)
@pass_context
def holds(obj: LedgerContext, sku: str | None, outlet: str | None, as_json: bool) -> None:
    """Lots held now, and where."""
    reads, stuck = run(lambda: _fresh_reads(obj, None, DEFAULT_WAIT_SECONDS))
    rows = run(lambda: reads.holds(sku, outlet))
    emit({"holds": _json_rows(rows), "stuck": _stuck(stuck)}, as_json,
         "\n".join(f"{r['sku']:<20} batch {r['batch_id']:<12} "
                    f"{'everywhere' if r['outlet'] is None else 'at ' + r['outlet']}: "
                    f"{r['reason']} (by {r['actor']}, since {r['held_at']})"
                    for r in map(shown, rows)) or "no lots held")
