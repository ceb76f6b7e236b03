"""`ledger webhooks`: subscribe URLs to the change feed, and deliver to them.

The subscriptions and their positions live in the store (`cli.http.webhooks`), so `ledger
serve`'s workers and any `ledger webhooks run` share them. A secret is stored because every
delivery is signed with it; it is never printed back.
"""

from __future__ import annotations

import math
import signal
import sys
import threading

import click

from cli.bounds import POSITION
from cli.context import EXIT_INVALID, LedgerContext, emit, fail, pass_context, run
from cli.display import printable
from cli.http.webhooks import DeliverySettings, DeliveryWorker, WebhookStore


class _Seconds(click.FloatRange):
    """A finite number of seconds within the option's range."""

    def convert(self, value: object, param: click.Parameter | None,
                ctx: click.Context | None) -> float:
        seconds: float = click.FLOAT.convert(value, param, ctx)
        if not math.isfinite(seconds):
            self.fail(f"{value!r} is not a finite number of seconds.", param, ctx)
        return super().convert(seconds, param, ctx)


@click.group("webhooks")
def webhooks_group() -> None:
    """Subscribe URLs to stock movements, and deliver them (signed, in order, at least once)."""


@webhooks_group.command("add")
@click.option("--url", required=True, help="Where to POST the movements (http or https).")
@click.option("--secret", required=True,
              help="The signing secret shared with the receiver (at least 16 characters); "
                   "`-` reads it from stdin, out of the shell's history.")
@click.option("--outlet", "outlets", multiple=True,
              help="Only this outlet's movements (repeat); default: every outlet.")
@click.option("--after", type=POSITION, default=None,
              help="Deliver the movements after this position (0: all of history); "
                   "default: only those recorded from now on.")
@pass_context
def add(obj: LedgerContext, url: str, secret: str, outlets: tuple[str, ...],
        after: int | None) -> None:
    """Subscribe a URL; print the subscription's id."""
    if secret == "-":
        secret = sys.stdin.readline().rstrip("\r\n")
    store = WebhookStore(obj.ledger.application)
    identifier = run(lambda: store.add(url, secret, list(outlets), after))
    click.echo(identifier)
    click.echo(f"ledger: webhook {identifier} added for {printable(url)}", err=True)


@webhooks_group.command("list")
@click.option("--json", "as_json", is_flag=True)
@pass_context
def list_webhooks(obj: LedgerContext, as_json: bool) -> None:
    """Every subscription: id, URL, outlets, position (never the secret)."""
    rows = run(lambda: WebhookStore(obj.ledger.application).listing())
    emit({"webhooks": rows}, as_json, "\n".join(
        f"{w['id']:<16} {w['url']}  outlets {','.join(w['outlets'] or []) or '*'}  "
        f"position {w['position']}" for w in rows) or "no webhooks")


@webhooks_group.command("remove")
@click.argument("identifier", metavar="ID")
@pass_context
def remove(obj: LedgerContext, identifier: str) -> None:
    """Remove a subscription: nothing more is delivered to it."""
    store = WebhookStore(obj.ledger.application)
    run(lambda: store.remove(identifier))
    click.echo(f"ledger: webhook {printable(identifier)} removed", err=True)


@webhooks_group.command("status")
@click.option("--json", "as_json", is_flag=True)
@pass_context
def status(obj: LedgerContext, as_json: bool) -> None:
    """Each subscription's position, lag, deliveries, failures in a row and last error."""
    report = run(lambda: WebhookStore(obj.ledger.application).status())
    emit({"webhooks": report}, as_json, "\n".join(
        f"{w['id']:<16} position {w['position']}  head {w['head']}  lag {w['lag_events']} "
        f"events / {w['lag_seconds']}s  delivered {w['delivered']}"
        + (f"  failing x{w['failures']} (next attempt {w['next_attempt_at']})"
           if w["failures"] else "")
        + (f"  last error {w['last_error_at']}: {w['last_error']}" if w["last_error"] else "")
        for w in report) or "no webhooks")


@webhooks_group.command("run")
@click.option("--timeout", type=_Seconds(0.1, 120), default=10.0, show_default=True,
              help="Seconds one delivery attempt may take.")
@click.option("--backoff", type=_Seconds(0.01, 3600), default=1.0, show_default=True,
              help="Seconds to wait after a first failure; doubled after each one...")
@click.option("--max-backoff", type=_Seconds(0.01, 86400), default=300.0, show_default=True,
              help="... up to this.")
@click.option("--poll", type=_Seconds(0.01, 60), default=0.5, show_default=True,
              help="Seconds between looks for new movements when idle.")
@pass_context
def run_webhooks(obj: LedgerContext, timeout: float, backoff: float, max_backoff: float,
                 poll: float) -> None:
    """Deliver webhooks until interrupted (as `ledger serve` does unless --no-webhooks)."""
    if max_backoff < backoff:
        fail(EXIT_INVALID, "invalid --max-backoff: less than --backoff")
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    settings = DeliverySettings(timeout_seconds=timeout, backoff_seconds=backoff,
                                max_backoff_seconds=max_backoff, poll_seconds=poll)
    worker = DeliveryWorker(obj.ledger.application, settings)
    run(lambda: worker.store.ensure_table())
    click.echo("ledger: delivering webhooks; Ctrl-C to stop", err=True)
    worker.run(stop)
