"""`ledger serve` and `ledger tokens`: run the HTTP service, and say who may call it."""

from __future__ import annotations

import os
import re
from typing import Literal, cast

import click

from cli.context import EXIT_INVALID, LedgerContext, emit, fail, pass_context, run
from cli.http.tokens import ROLES, Role, TokenStore

GRACEFUL_SHUTDOWN_SECONDS = 30
"""How long a stopping server lets requests in flight finish before it closes them."""


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True)
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Worker processes; each opens its own ledger on the same store.")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["critical", "error", "warning", "info", "debug"]))
@click.option("--webhooks/--no-webhooks", default=True, show_default=True,
              help="Deliver webhooks from each worker (else run `ledger webhooks run`).")
@pass_context
def serve(obj: LedgerContext, host: str, port: int, workers: int, log_level: str,
          webhooks: bool) -> None:
    """Serve the JSON API (/v1, OpenAPI at /openapi.json, docs at /docs) until stopped, and
    deliver webhooks.

    On SIGTERM or Ctrl-C it stops accepting, lets requests in flight finish, then exits."""
    import uvicorn

    # Fail here, with the CLI's exit codes, rather than in every worker: and on the embedded
    # default this sets the store up, so `ledger serve` works with no `ledger init`.
    ledger = obj.ledger
    run(lambda: TokenStore(ledger.application).ensure_table())
    if obj.url is not None:
        # The workers are fresh processes that build the app from its import string: the
        # store reaches them as the environment every `ledger` command reads.
        os.environ["LEDGER_DATABASE_URL"] = obj.url
    factory = "create_app" if webhooks else "create_app_without_webhooks"
    uvicorn.run(f"cli.http.app:{factory}", factory=True, host=host, port=port,
                workers=workers, log_level=log_level,
                timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS)


@click.group("tokens")
def tokens_group() -> None:
    """Create, list and revoke the API tokens of the HTTP service."""


NAME_PATTERN = r"^[^\s\x00-\x1f\x7f]{1,100}$"
"""As the ledger's identifiers: a name is recorded as an actor and shown in the journal."""


@tokens_group.command("create")
@click.option("--name", required=True, help="Recorded as the actor of what the token does.")
@click.option("--role", required=True, type=click.Choice(ROLES))
@click.option("--outlet", "outlets", multiple=True,
              help="An outlet the token may act at (till and store roles; repeat).")
@pass_context
def create(obj: LedgerContext, name: str, role: str, outlets: tuple[str, ...]) -> None:
    """Make a token and print it once: only its hash is stored."""
    if not re.match(NAME_PATTERN, name):
        fail(EXIT_INVALID, "invalid name: 1-100 printable characters, no spaces")
    store = TokenStore(obj.ledger.application)
    token = run(lambda: store.create(name, cast(Role, role), list(outlets)))
    click.echo(token)
    click.echo(f"ledger: token {name} ({role}) created; it is not shown again", err=True)


@tokens_group.command("list")
@click.option("--json", "as_json", is_flag=True)
@pass_context
def list_tokens(obj: LedgerContext, as_json: bool) -> None:
    """Every token's name, role, outlets and state (never the token itself)."""
    rows = run(lambda: TokenStore(obj.ledger.application).listing())
    state: dict[bool, Literal["live", "revoked"]] = {False: "live", True: "revoked"}
    emit({"tokens": rows}, as_json, "\n".join(
        f"{t['name']:<20} {t['role']:<8} {state[bool(t['revoked_at'])]:<8} "
        f"{','.join(t['outlets']) or '*'}" for t in rows) or "no tokens")


@tokens_group.command("revoke")
@click.argument("name")
@pass_context
def revoke(obj: LedgerContext, name: str) -> None:
    """Revoke a token: its next request is refused (401)."""
    store = TokenStore(obj.ledger.application)
    run(lambda: store.revoke(name))
    click.echo(f"ledger: token {name} revoked", err=True)
