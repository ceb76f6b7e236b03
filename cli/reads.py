"""Read commands over the projections, and the operator's `projections` group."""

from __future__ import annotations

import signal
import sys
import threading
import time
from datetime import datetime
from typing import Any

import click

from cli.main import (
    EXIT_INVALID,
    LedgerContext,
    common_fields,
    emit,
    fail,
    pass_context,
    run,
)
from projections.follow import follow
from projections.parallel import MIN_EVENTS
from projections.queries import Reads
from projections.runner import PROJECTIONS, ReadModels

DEFAULT_WAIT_SECONDS = 10.0


def _fresh_reads(obj: LedgerContext, as_of_position: int | None, timeout: float) -> Reads:
    """Reads that include every append made so far (or up to `as_of_position`).

    The read models are brought up to date here, under the same exactly-once locks as the
    runner, so a read after an append sees it whether or not a runner daemon is going.
    """
    models = ReadModels(obj.ledger.application)
    if as_of_position is not None:
        if not models.wait_for(as_of_position, timeout):
            fail(1, f"projections did not reach position {as_of_position} in {timeout}s")
    else:
        models.catch_up()
    return Reads(obj.ledger.application)


def _json_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in row.items()}
            for row in rows]


def register(group: click.Group) -> None:
    @group.command()
    @click.option("--outlet", required=True)
    @click.option("--sku")
    @click.option("--as-of-position", type=int,
                  help="Wait until the projections include this position (read-your-writes).")
    @click.option("--timeout", type=float, default=DEFAULT_WAIT_SECONDS, show_default=True)
    @click.option("--json", "as_json", is_flag=True)
    @pass_context
    def stock(obj: LedgerContext, outlet: str, sku: str | None, as_of_position: int | None,
              timeout: float, as_json: bool) -> None:
        """On hand and available stock per SKU at an outlet."""
        reads = run(lambda: _fresh_reads(obj, as_of_position, timeout))
        rows = run(lambda: reads.stock(outlet, sku))
        position = min(reads.models.positions().values())
        emit({"outlet": outlet, "position": position, "stock": _json_rows(rows)}, as_json,
             "\n".join(f"{r['sku']:<20} on hand {r['on_hand']:>8}  available {r['available']:>8}"
                       for r in rows) or f"no stock recorded at {outlet}")

    @group.command()
    @click.option("--outlet", required=True)
    @click.option("--sku", required=True)
    @click.option("--json", "as_json", is_flag=True)
    @pass_context
    def batches(obj: LedgerContext, outlet: str, sku: str, as_json: bool) -> None:
        """Batches of a SKU at an outlet, in expiry order."""
        reads = run(lambda: _fresh_reads(obj, None, DEFAULT_WAIT_SECONDS))
        rows = run(lambda: reads.batches(outlet, sku))
        emit({"outlet": outlet, "sku": sku, "batches": _json_rows(rows)}, as_json,
             "\n".join(f"{r['batch_id']:<20} {r['quantity']:>8}  expires {r['expires_on']}"
                       + ("  (expired)" if r["expired"] else "") for r in rows)
             or f"no batches of {sku} at {outlet}")

    @group.command("low-stock")
    @click.option("--outlet", required=True)
    @click.option("--json", "as_json", is_flag=True)
    @pass_context
    def low_stock(obj: LedgerContext, outlet: str, as_json: bool) -> None:
        """Stock items at or below their reorder level."""
        reads = run(lambda: _fresh_reads(obj, None, DEFAULT_WAIT_SECONDS))
        rows = run(lambda: reads.low_stock(outlet))
        emit({"outlet": outlet, "low_stock": _json_rows(rows)}, as_json,
             "\n".join(f"{r['sku']:<20} available {r['available']:>8}  reorder at "
                       f"{r['reorder_level']}" for r in rows) or "nothing low")

    @group.command()
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
        reads = run(lambda: _fresh_reads(obj, None, DEFAULT_WAIT_SECONDS))
        rows = run(lambda: reads.history(outlet, sku, reference, since_time, limit))
        emit({"outlet": outlet, "movements": _json_rows(rows)}, as_json,
             "\n".join(f"{r['occurred_at']}  {r['kind']:<20} {r['sku']:<14} "
                       f"{r['batch_id'] or '-':<12} {r['quantity']:>+8}  {r['reference']}  "
                       f"by {r['actor']}" for r in rows) or "no movements")

    @group.command("reorder-level")
    @click.option("--outlet", required=True)
    @click.option("--sku", required=True)
    @click.option("--level", required=True, help="A quantity, or 'none' to clear it.")
    @click.option("--actor")
    @click.option("--json", "as_json", is_flag=True)
    @pass_context
    def reorder_level(obj: LedgerContext, outlet: str, sku: str, level: str,
                      actor: str | None, as_json: bool) -> None:
        """Set the level at or below which a stock item shows as low."""
        value = None if level.lower() == "none" else level
        result = run(lambda: obj.ledger.set_reorder_level(
            outlet=outlet, sku=sku, level=value, **common_fields(actor, None, None)))
        emit(result, as_json, f"reorder level of {sku} at {outlet}: {result.level}")

    @group.group()
    def projections() -> None:
        """Run, inspect and rebuild the read models."""

    workers_option = click.option(
        "--workers", type=click.IntRange(min=1),
        help="Worker processes that prepare events (default: one per core, up to 4, when "
             f"{MIN_EVENTS:,} or more events are waiting; else 1). PostgreSQL only.")

    @projections.command("catch-up")
    @workers_option
    @pass_context
    def catch_up(obj: LedgerContext, workers: int | None) -> None:
        """Apply every event up to the head, then exit."""
        models = ReadModels(obj.ledger.application)
        applied = run(lambda: models.catch_up(progress=_Progress("catch-up"), workers=workers))
        click.echo(f"ledger: projections at position {min(models.positions().values())} "
                   f"({applied} events applied)", err=True)

    @projections.command("run")
    @pass_context
    def run_projections(obj: LedgerContext) -> None:
        """Follow new events as they are appended, until interrupted."""
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        click.echo("ledger: following the store; Ctrl-C to stop", err=True)
        follow(obj.ledger.application, stop)

    @projections.command()
    @click.option("--json", "as_json", is_flag=True)
    @pass_context
    def status(obj: LedgerContext, as_json: bool) -> None:
        """Position, head and lag of each projection, and its last outage."""
        report = run(lambda: ReadModels(obj.ledger.application).status())
        emit({"projections": report}, as_json, "\n".join(
            f"{p['name']:<8} generation {p['generation']}  position {p['position']}  head "
            f"{p['head']}  lag {p['lag_events']} events / {p['lag_seconds']}s"
            + (f"  last outage {p['last_error_at']}: {p['last_error']} "
               f"({p['reconnects']} reconnects)" if p["last_error"] else "")
            for p in report))

    @projections.command()
    @click.argument("name", required=False, type=click.Choice(sorted(PROJECTIONS)))
    @workers_option
    @pass_context
    def rebuild(obj: LedgerContext, name: str | None, workers: int | None) -> None:
        """Rebuild from the first event into fresh tables, then switch readers over."""
        names = [name] if name else sorted(PROJECTIONS)
        models = ReadModels(obj.ledger.application)
        applied = run(lambda: models.rebuild(names, progress=_Progress("rebuild"),
                                             workers=workers))
        click.echo(f"ledger: rebuilt {', '.join(names)} from {applied} events", err=True)


class _Progress:
    """A progress line on stderr with the rate, at most a few times a second."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.started = time.monotonic()
        self.shown = 0.0
        self.finished = False

    def __call__(self, applied: int, head: int) -> None:
        now = time.monotonic()
        if self.finished or (now - self.shown < 0.25 and applied < head):
            return
        self.shown = now
        rate = applied / max(now - self.started, 1e-9)
        width = 30
        done = int(width * min(applied / head, 1.0)) if head else width
        sys.stderr.write(f"\r{self.label} [{'#' * done}{'.' * (width - done)}] "
                         f"{applied}/{head} events, {rate:,.0f} ev/s")
        sys.stderr.flush()
        if applied >= head:
            # Workers and the last batches may report the end more than once; show it once.
            self.finished = True
            sys.stderr.write("\n")
