"""Which generation of each projection is live: one state row per projection.

Every projection's tables are versioned by generation (`ledger_batches_g3`), and readers use
views (`ledger_batches`) that point at the live one. The state row names it, and is also what
live runners and a rebuild's switch-over lock to serialise with each other: each live batch
locks its projections' rows, so none commits to a generation a rebuild has just replaced.
(The same row carries the runner's last outage, written and read by `projections.status`.)
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from projections.store import ReadStore

CREATE_STATE = """CREATE TABLE IF NOT EXISTS {state} (
    name TEXT PRIMARY KEY, generation INTEGER NOT NULL, updated_at TEXT,
    last_error TEXT, last_error_at TEXT, reconnects INTEGER NOT NULL DEFAULT 0)"""
INSERT_STATE = ("INSERT INTO {state} (name, generation, reconnects) VALUES (%s, 1, 0) "
                "ON CONFLICT (name) DO NOTHING")
SELECT_GENERATIONS = "SELECT name, generation FROM {state} ORDER BY name"
LOCK_STATE = "UPDATE {state} SET updated_at = %s WHERE name = %s RETURNING generation"
SET_GENERATION = "UPDATE {state} SET generation = %s WHERE name = %s"


def create_state(store: ReadStore, cursor: Any, names: Iterable[str]) -> None:
    """The state table, with a row at generation 1 for each of `names` that has none."""
    cursor.execute(store.sql(CREATE_STATE))
    for name in names:
        cursor.execute(store.sql(INSERT_STATE), (name,))


def generations(store: ReadStore) -> dict[str, int]:
    """The live generation of each projection, by name."""
    with store.transaction() as cursor:
        cursor.execute(store.sql(SELECT_GENERATIONS))
        return {row["name"]: int(row["generation"]) for row in cursor.fetchall()}


def lock(store: ReadStore, cursor: Any, name: str) -> int | None:
    """Lock projection `name`'s state row until the caller's transaction ends (noting the
    time); its live generation, or None if it has no row."""
    cursor.execute(store.sql(LOCK_STATE), (now(), name))
    row = cursor.fetchone()
    return None if row is None else int(row["generation"])


def set_generation(store: ReadStore, cursor: Any, name: str, generation: int) -> None:
    """Make `generation` projection `name`'s live one, in the caller's transaction."""
    cursor.execute(store.sql(SET_GENERATION), (generation, name))


def now() -> str:
    return datetime.now(UTC).isoformat()
