"""`ledger projections run`: follow the store as events are appended, until stopped.

On PostgreSQL the runner sleeps on the channel the event recorder NOTIFYs on every append (no
busy polling) and wakes at least every few seconds in case a notification was missed. If the
connection or the server goes away it backs off, reconnects, records the outage where
`projections status` shows it, and resumes from the recorded position. SQLite has no
notifications; there the runner checks for new events twice a second.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import psycopg
from eventsourcing.persistence import PersistenceError

from ledger.store import LedgerApplication
from projections.runner import ReadModels

WAKE_SECONDS = 5.0
SQLITE_POLL_SECONDS = 0.5
MAX_BACKOFF_SECONDS = 10.0


def follow(app: LedgerApplication, stop: threading.Event,
           on_progress: Callable[[int], None] | None = None) -> None:
    """Apply events as they arrive until `stop` is set."""
    models = ReadModels(app)
    backoff = 0.5
    outage: BaseException | None = None
    while not stop.is_set():
        try:
            if outage is not None:
                models.record_outage(outage)
                outage = None
            if app.config.backend == "sqlite":
                _poll(models, stop, on_progress)
            else:
                _listen(app, models, stop, on_progress)
            backoff = 0.5
        except (PersistenceError, psycopg.OperationalError, psycopg.InterfaceError) as error:
            outage = error
            stop.wait(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)


def _poll(models: ReadModels, stop: threading.Event,
          on_progress: Callable[[int], None] | None) -> None:
    while not stop.is_set():
        applied = models.catch_up()
        if applied and on_progress:
            on_progress(applied)
        stop.wait(SQLITE_POLL_SECONDS)


def _listen(app: LedgerApplication, models: ReadModels, stop: threading.Event,
            on_progress: Callable[[int], None] | None) -> None:
    config = app.config
    channel = app.recorder.channel_name  # type: ignore[attr-defined]
    with psycopg.connect(host=config.host, port=config.port, dbname=config.dbname,
                         user=config.user, password=config.password, autocommit=True,
                         connect_timeout=5) as connection:
        connection.execute(f'LISTEN "{channel}"')
        # Catch up after LISTEN: anything appended before it is in the table by now.
        notified, last_catch_up = True, 0.0
        while not stop.is_set():
            if notified or time.monotonic() - last_catch_up > WAKE_SECONDS:
                applied = models.catch_up()
                last_catch_up = time.monotonic()
                if applied and on_progress:
                    on_progress(applied)
            # Wake every second only to notice `stop`; a notification wakes at once.
            notified = any(True for _ in connection.notifies(timeout=1.0, stop_after=1))
