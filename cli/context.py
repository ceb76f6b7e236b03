"""What every `ledger` command shares: the ledger it opens, how it prints, how it exits.

Exit status: 0 success (an idempotent repeat included), 1 the ledger refused the command,
2 malformed input (the reason names the field), 3 the store is not initialised, cannot be
reached, or holds a row that is not one of the ledger's events where the command must read
(the reason names its position; an operator must repair it, as for a store that is down).
A reason is one line on stderr starting `ledger: `; `--json` prints exactly one JSON object
on stdout.

This module imports no other module of `cli` but `cli.display`, which imports none: the
command modules import it, never the reverse.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable
from datetime import date, datetime
from typing import Any, NoReturn, TypeVar

import click
from eventsourcing.persistence import PersistenceError
from pydantic import BaseModel

from cli.display import printable, printable_lines
from ledger.app.service import Ledger
from ledger.domain.errors import InvalidInput, LedgerError, Refusal, StoreNotInitialised
from ledger.store.decoding import UnreadableEvent
from ledger.store.privileges import permission_denied
from ledger.store.settings import parse_url
from ledger.store.sqlite_recorder import setup_lock
from projections.runner import PROJECTIONS, ReadModels, create_read_models
from projections.stuck import ProjectionStuck

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_INVALID = 2
EXIT_STORE = 3

T = TypeVar("T")


def open_ledger(url: str | None) -> Ledger:
    """Open the store; the embedded SQLite default sets itself up on first use, once: a file
    that has its tables opens without DDL (which would take SQLite's write lock from the
    tills), and one open read-only is never written. A PostgreSQL store is set up by
    `ledger init`."""
    try:
        ledger = Ledger.open(url)
    except StoreNotInitialised:
        if parse_url(url).backend != "sqlite":
            raise
        set_up_store(url, if_missing=True)
        return Ledger.open(url)
    if ledger.application.config.backend == "sqlite" and not _embedded_ready(ledger):
        ledger.close()
        set_up_store(url, if_missing=True)
        ledger = Ledger.open(url)
    return ledger


def set_up_store(url: str | None, *, if_missing: bool = False) -> str:
    """Create the event store's and the read models' tables (each statement creates only what
    is missing), on SQLite one process at a time; return the store's URL."""
    config = parse_url(url)
    embedded = config.backend == "sqlite"
    with setup_lock(config.dbname) if embedded else contextlib.nullcontext():
        if if_missing and _already_set_up(url):
            return config.url
        ledger = Ledger.open(url, create_tables=True)
        try:
            create_read_models(ledger.application)
            return ledger.application.config.url
        finally:
            ledger.close()


def _already_set_up(url: str | None) -> bool:
    # Another process may have set the store up while this one waited for the lock.
    try:
        with Ledger.open(url) as ledger:
            return _embedded_ready(ledger)
    except StoreNotInitialised:
        return False


def _embedded_ready(ledger: Ledger) -> bool:
    models = ReadModels(ledger.application)
    return ledger.application.is_set_up(
        view for name in PROJECTIONS for view in models.views(name).values())


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
"""Passes the command's LedgerContext (made by the `ledger` group) as its first argument."""


def fail(code: int, message: str) -> NoReturn:
    """Print a one-line reason on stderr and exit with `code`."""
    click.echo(f"ledger: {printable(message)}", err=True)
    sys.exit(code)


def run(action: Callable[[], T]) -> T:
    """Run an API call, turning ledger and store errors into the CLI's exit codes."""
    try:
        return action()
    except InvalidInput as error:
        fail(EXIT_INVALID, f"invalid {error.field}: {error.message}")
    except StoreNotInitialised:
        fail(EXIT_STORE, "the store is not initialised here: run `ledger init` first")
    except UnreadableEvent as error:
        fail(EXIT_STORE, f"{error}: repair or remove that row (docs/audit.md)")
    except ProjectionStuck as error:
        fail(EXIT_STORE, error.describe())
    except Refusal as error:
        fail(EXIT_REFUSED, f"refused ({error.rule}): {error}")
    except LedgerError as error:
        fail(EXIT_REFUSED, str(error))
    except PersistenceError as error:
        message = str(error)
        if permission_denied(error):
            # A role without the grant (the auditor's writing, say): a refusal, not a crash.
            fail(EXIT_STORE, f"{message.splitlines()[0]} (this database role may not do "
                             "that: docs/append_only_role.sql says which role may)")
        # A missing table is a store not set up yet; a missing database or role is not.
        if ("does not exist" in message and not message.startswith("connection failed")) \
                or "no such table" in message:
            fail(EXIT_STORE, "the store is not initialised here: run `ledger init` first")
        fail(EXIT_STORE, f"store unavailable: {message.splitlines()[0]}")


def emit(result: BaseModel | dict[str, Any], as_json: bool, summary: str) -> None:
    """Print the result as one JSON object with `--json`, else the human-readable `summary`."""
    if as_json:
        payload = result.model_dump(mode="json") if isinstance(result, BaseModel) else result
        click.echo(json.dumps(payload, sort_keys=True))
    else:
        click.echo(printable_lines(summary))


def moment_option(option: str, value: str | None) -> datetime | None:
    """The ISO 8601 `value` of `option` (None if not given), a bare one in the reader's local
    time; exit 2 naming the option if malformed."""
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        fail(EXIT_INVALID, f"invalid {option}: not an ISO 8601 date or time: {value!r}")
    if moment.tzinfo is None:
        moment = moment.astimezone()
    return moment


def day_option(option: str, value: str) -> date:
    """The ISO 8601 date `value` of `option`; exit 2 naming the option if malformed."""
    try:
        return date.fromisoformat(value)
    except ValueError:
        fail(EXIT_INVALID, f"invalid {option}: not an ISO 8601 date: {value!r}")
