"""Each projection's position: a record in the `eventsourcing` library's tracking table.

The library's `TrackingRecorder` creates the table (`create_table`, public, used here), but
its public `insert_tracking` and `max_tracking_id` each run in a transaction of their own,
while a batch's rows, the check of the position it starts from and its new position must be
one transaction: a crash in between would leave rows and position apart. Doing that inside
another transaction is the library's private `_insert_tracking`, so positions are read and
written here instead, by our own statements against the library's table, in the caller's
transaction. This module is the one place that reads or writes that table.

The statements are for the library's single-row tracking table (its default: one row per
application name, `PRIMARY KEY (application_name)`), and the upsert is the library's own: it
only ever moves a position forward, and returns nothing when the stored position is already
at or past the new one. That is the guarantee against a second runner: of two transactions
that applied the same events from the same position, the later one's upsert waits for the
earlier one's row, then finds it moved, and the transaction is rolled back with its rows.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from eventsourcing.persistence import IntegrityError

from projections.store import ReadStore

SELECT_POSITION = "SELECT notification_id FROM {tracking} WHERE application_name = %s"
RECORD_POSITION = """
    INSERT INTO {tracking} (application_name, notification_id) VALUES (%s, %s)
    ON CONFLICT (application_name) DO UPDATE SET notification_id = excluded.notification_id
    WHERE {tracking}.notification_id < excluded.notification_id
    RETURNING notification_id"""
DELETE_POSITION = "DELETE FROM {tracking} WHERE application_name = %s"


def tracking_name(name: str, generation: int) -> str:
    """The application name a projection's generation is tracked under (`stock@g3`)."""
    return f"{name}@g{generation}"


def create_table(store: ReadStore) -> None:
    """The library's tracking table, created (or migrated) by the library."""
    store.tracking_recorder.create_table()


def position(store: ReadStore, cursor: Any, name: str, generation: int) -> int:
    """The last position applied to `generation` of projection `name` (0 if none)."""
    cursor.execute(store.sql(SELECT_POSITION), (tracking_name(name, generation),))
    row = cursor.fetchone()
    return 0 if row is None or row["notification_id"] is None else int(row["notification_id"])


def positions(store: ReadStore, generations: Mapping[str, int]) -> dict[str, int]:
    """The positions of the projections in `generations`, read in one transaction."""
    with store.transaction() as cursor:
        return {name: position(store, cursor, name, g) for name, g in generations.items()}


def record(store: ReadStore, cursor: Any, name: str, generation: int, end: int) -> None:
    """Move the position of `generation` of projection `name` to `end`, in the caller's
    transaction; `IntegrityError` (as the library raises) if it already stands at or past."""
    cursor.execute(store.sql(RECORD_POSITION), (tracking_name(name, generation), end))
    if cursor.fetchone() is None:
        raise IntegrityError(f"Failed to record tracking for {tracking_name(name, generation)} "
                             f"{end}")


def forget(store: ReadStore, cursor: Any, name: str, generation: int) -> None:
    """Remove the position of `generation` of projection `name`, in the caller's
    transaction."""
    cursor.execute(store.sql(DELETE_POSITION), (tracking_name(name, generation),))
