"""The recorder's append, run in a test's own connection and transaction."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg
from eventsourcing.persistence import StoredEvent

from ledger.store.application import LedgerApplication
from ledger.store.postgres.recorder import ChainedPostgresRecorder


def append_in(connection: psycopg.Connection[Any], app: LedgerApplication,
              events: Sequence[StoredEvent]) -> list[int]:
    """Append `events` with the recorder's own append function, in `connection`'s current
    transaction (which the test may hold open, or abort); return their positions."""
    recorder = app.recorder
    assert isinstance(recorder, ChainedPostgresRecorder)
    rows = connection.execute(recorder.append_statement(events), prepare=False).fetchall()
    return [int(row[0]) for row in rows]
