"""How soon a follower sees an append: appends NOTIFY at most once per `NOTIFY_SECONDS` per
session, and whoever listens polls for `notification_window()` after each notification."""

from __future__ import annotations

import hashlib
import time

from eventsourcing.postgres import PostgresSubscription
from psycopg.sql import SQL, Identifier

NOTIFY_SECONDS = 0.1
"""A session's appends NOTIFY the store's channel at most once in this many seconds.

A follower woken by a notification therefore keeps polling for this long (plus the time a
commit may take) before it sleeps on the channel again: `notification_window`."""

COMMIT_MARGIN_SECONDS = 0.5
"""How long after its append function ran an append is assumed to have committed, for the
polling window. A slower commit (an I/O stall) is picked up by the followers' fallback poll."""


def notification_window() -> float:
    """How long after a notification a follower polls before it relies on notifications again:
    an append that skipped its NOTIFY ran within `NOTIFY_SECONDS` of one that sent it."""
    return NOTIFY_SECONDS + COMMIT_MARGIN_SECONDS


class NotificationWindow:
    """When someone listening for appends must poll: for `notification_window()` after each
    notification, and after listening starts (an append may have skipped its NOTIFY just
    before the LISTEN)."""

    def __init__(self) -> None:
        self.notified()

    def notified(self) -> None:
        """A notification came: poll for another `notification_window()`."""
        self.until = time.monotonic() + notification_window()

    def is_open(self) -> bool:
        """Whether a follower must still poll."""
        return time.monotonic() < self.until


def notified_at_setting(channel: str) -> str:
    """The session setting in which the append function keeps the time it last notified
    `channel` (custom settings need a dotted name; the hash keeps it a plain identifier)."""
    return "stockledger.notified_" + hashlib.sha256(channel.encode()).hexdigest()[:16]


class WindowedPostgresSubscription(PostgresSubscription):
    """The library's LISTEN/NOTIFY subscription, which also polls for `notification_window()`
    after each notification (and after it starts): appends within `NOTIFY_SECONDS` of a
    session's last NOTIFY send none."""

    def _listen(self) -> None:
        try:
            with self._recorder.datastore.get_connection() as connection:
                connection.execute(SQL("LISTEN {0}").format(
                    Identifier(self._recorder.channel_name)))
                window = NotificationWindow()
                while not self._has_been_stopped and not self._thread_error:
                    if any(True for _ in connection.notifies(timeout=0.1, stop_after=1)):
                        window.notified()
                        self._has_been_notified.set()
                    elif window.is_open():
                        self._has_been_notified.set()
        except BaseException as error:
            if self._thread_error is None:
                self._thread_error = error
            self.stop()
