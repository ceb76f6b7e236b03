"""`ledger projections`: the operator's commands to run, inspect and rebuild the read models."""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import click

from cli.bounds import WORKERS
from cli.context import EXIT_STORE, LedgerContext, emit, fail, pass_context, run
from projections.follow import follow
from projections.parallel import MIN_EVENTS
from projections.runner import PROJECTIONS, ReadModels
from projections.stuck import ProjectionStuck

workers_option = click.option(
    "--workers", type=WORKERS,
    help="Worker processes that prepare events (default: one per core, up to 4, when "
         f"{MIN_EVENTS:,} or more events are waiting; else 1). PostgreSQL only.")


class _Progress:
    """A progress line on stderr with the rate, at most a few times a second."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.started = time.monotonic()
        self.shown = 0.0
        self.finished = False

    def end_line(self) -> None:
        """End a progress line left open (by a run that stopped short)."""
        if self.shown and not self.finished:
            self.finished = True
            sys.stderr.write("\n")

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


def _ending_line(progress: _Progress, action: Callable[[], int]) -> int:
    """`action`, ending its progress line if it stops at an event that cannot be read, so
    that the reason goes on a line of its own."""
    try:
        return action()
    except ProjectionStuck:
        progress.end_line()
        raise


@click.group("projections")
def projections_group() -> None:
    """Run, inspect and rebuild the read models."""


@projections_group.command("catch-up")
@workers_option
@pass_context
def catch_up(obj: LedgerContext, workers: int | None) -> None:
    """Apply every event up to the head, then exit.

    Exit 3 if an event cannot be read: the events before it are applied, and the
    projections wait there (see `projections status`) until the row is repaired."""
    models = ReadModels(obj.ledger.application)
    progress = _Progress("catch-up")
    applied = run(lambda: _ending_line(progress, lambda: models.catch_up(
        progress=progress, workers=workers)))
    click.echo(f"ledger: projections at position {min(models.positions().values())} "
               f"({applied} events applied)", err=True)


@projections_group.command("run")
@pass_context
def run_projections(obj: LedgerContext) -> None:
    """Follow new events as they are appended, until interrupted.

    Exit 3 if an event cannot be read: waiting would not make it readable, so the runner
    stops there (see `projections status`) rather than retry it like a lost server."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    click.echo("ledger: following the store; Ctrl-C to stop", err=True)
    try:
        follow(obj.ledger.application, stop)
    except ProjectionStuck as error:
        fail(EXIT_STORE, error.describe())


@projections_group.command()
@click.option("--json", "as_json", is_flag=True)
@pass_context
def status(obj: LedgerContext, as_json: bool) -> None:
    """Position, head and lag of each projection, its last outage, the event it is stuck
    before if it met one it cannot read, and what holds the horizon back."""
    models = ReadModels(obj.ledger.application)
    report = run(models.status)
    horizon = run(models.horizon)
    lines = [
        f"{p['name']:<8} generation {p['generation']}  position {p['position']}  head "
        f"{p['head']}  lag {p['lag_events']} events / "
        + ("?" if p["lag_seconds"] is None else f"{p['lag_seconds']}s")
        + (f"  last outage {p['last_error_at']}: {p['last_error']} "
           f"({p['reconnects']} reconnects)" if p["last_error"] else "")
        + (f"  STUCK before position {p['stuck']['position']} (topic "
           f"{p['stuck']['topic']!r}): {p['stuck']['reason']}" if p["stuck"] else "")
        for p in report]
    lines += _horizon_lines(horizon)
    emit({"projections": report, "horizon": horizon}, as_json, "\n".join(lines))


def _horizon_lines(horizon: dict[str, Any] | None) -> list[str]:
    """What holds the horizon back, for `status`: lag 0 means nothing while it is held."""
    if horizon is None:
        return []
    lines = []
    if (holder := horizon["holder"]) is not None:
        lines.append(f"horizon held at {horizon['held_at']} by pid {holder['pid']} (role "
                     f"{holder['role']}, transaction open {holder['seconds']}s"
                     + (", older than the lock timeout: an append held open" if holder["stale"]
                        else "") + "): later events are not shown until it ends")
    lines += [f"ignored: lock on position {r['position']}'s key by pid {r['pid']} (role "
              f"{r['role']}, which may not append)" for r in horizon["registrations"]
              if not r["honoured"]]
    lines += [f"allocation lock held by pid {a['pid']} (role {a['role']}"
              + ("" if a["honoured"] else ", which may not append: appends are failing")
              + ")" for a in horizon["allocation"]]
    lines += [f"seal lock held by pid {a['pid']} (role {a['role']}"
              + ("" if a["honoured"] else ", which may not seal: sealing is failing")
              + ")" for a in horizon["seal"]]
    lines += [f"foreign advisory lock {a['key']} ({a['mode']}) held by pid {a['pid']} (role "
              f"{a['role']}, which may not append): appends to a stream fail if it is that "
              "stream's key" for a in horizon["foreign"]]
    return lines


@projections_group.command()
@click.argument("name", required=False, type=click.Choice(sorted(PROJECTIONS)))
@workers_option
@pass_context
def rebuild(obj: LedgerContext, name: str | None, workers: int | None) -> None:
    """Rebuild from the first event into fresh tables, then switch readers over.

    Exit 3 if an event cannot be read: readers keep the projections they had."""
    names = [name] if name else sorted(PROJECTIONS)
    models = ReadModels(obj.ledger.application)
    progress = _Progress("rebuild")
    applied = run(lambda: _ending_line(progress, lambda: models.rebuild(
        names, progress=progress, workers=workers)))
    click.echo(f"ledger: rebuilt {', '.join(names)} from {applied} events", err=True)
