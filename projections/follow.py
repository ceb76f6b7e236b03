"""`ledger projections run`: follow the store as events are appended, until stopped.

On PostgreSQL the runner sleeps on the channel the event recorder NOTIFYs on (no busy
polling). A session notifies at most once per `NOTIFY_SECONDS`, so after each notification the
runner polls for `notification_window()` before it sleeps again, and it wakes at least every
second in case a notification was missed; after each catch-up it seals the hash chain up to
where appends have ended (`ChainedPostgresRecorder.seal`). If the
connection or the server goes away it backs off, reconnects, records the outage where
`projections status` shows it, and resumes from the recorded position. SQLite has no
notifications; there the runner checks for new events twice a second.

An event that cannot be read is no outage: waiting will not make it readable. The follower
applies everything before it, seals the chain (on PostgreSQL) and stops by raising
`ProjectionStuck`, recorded for `projections status`, rather than retry it like a lost
server; the operator repairs or removes the row and starts it again (docs/audit.md).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import psycopg
from eventsourcing.persistence import PersistenceError

from ledger.store.application import LedgerApplication
from ledger.store.postgres.notifications import NotificationWindow
from ledger.store.postgres.recorder import ChainedPostgresRecorder
from projections.runner import ReadModels
from projections.stuck import ProjectionStuck

WAKE_SECONDS = 1.0
POLL_SECONDS = 0.05
"""How often the runner polls during the window after a notification."""
SQLITE_POLL_SECONDS = 0.5
MAX_BACKOFF_SECONDS = 10.0


def follow(app: LedgerApplication, stop: threading.Event,
           on_progress: Callable[[int], None] | None = None) -> None:
    """Apply events as they arrive until `stop` is set; `ProjectionStuck` if one cannot be
    read (everything before it is applied)."""
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
    recorder = app.recorder
    assert isinstance(recorder, ChainedPostgresRecorder)
    channel = recorder.channel_name
    with psycopg.connect(host=config.host, port=config.port, dbname=config.dbname,
                         user=config.user, password=config.password, autocommit=True,
                         connect_timeout=5) as connection:
        connection.execute(f'LISTEN "{channel}"')
        # Catch up after LISTEN: anything appended before it is in the table by now, except
        # what a session appended without notifying, which the polling window picks up.
        notified, last_catch_up, first = True, 0.0, True
        window = NotificationWindow()
        while not stop.is_set():
            if notified:
                window.notified()
            if notified or window.is_open() or time.monotonic() - last_catch_up > WAKE_SECONDS:
                try:
                    applied = models.catch_up()
                except ProjectionStuck:
                    # Appends go on past it, and auditors need their heads sealed.
                    recorder.seal_all()
                    raise
                # The follower also keeps the hash chain sealed close behind the appends:
                # whatever it found on starting; after that, each catch-up that applied
                # events seals what it found itself (`projections.catch_up`), and a poll
                # that found nothing has nothing new to seal either.
                if first and not applied:
                    recorder.seal_all()
                first = False
                last_catch_up = time.monotonic()
                if applied and on_progress:
                    on_progress(applied)
            # A notification wakes at once; otherwise wake to poll while in the window, and
            # every second to notice `stop`.
            wait = POLL_SECONDS if window.is_open() else 1.0
            notified = any(True for _ in connection.notifies(timeout=wait, stop_after=1))
