"""Where a projection stopped at an event it cannot read, for as long as it stands before it.

A projection that meets a row that is not one of the ledger's events (`UnreadableEvent`)
applies the events before it, commits, and stops there: going past it would leave the read
models wrong without anyone knowing. The position and the reason are recorded here, in a
transaction of their own after that commit, so that `projections status` shows them to the
operator whichever process met the row. A record counts only while its projection stands
before its position (`projections.status`): once the projection passes it (the row was
repaired) or the position is gone (a removed last row), it is history, overwritten by the
next.

Nothing on the way of an ordinary batch touches this table: a store set up before it existed
catches up as it did, and the table is created by `ledger init` or by the first record.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from eventsourcing.persistence import PersistenceError

from ledger.store.decoding import UnreadableEvent
from projections.generations import now
from projections.store import ReadStore

logger = logging.getLogger(__name__)

TABLE = "ledger_projection_stuck"
"""The table's name (`ReadStore.stuck` qualifies it)."""
CREATE_STUCK = """CREATE TABLE IF NOT EXISTS {stuck} (
    name TEXT PRIMARY KEY, generation INTEGER NOT NULL, position BIGINT NOT NULL,
    topic TEXT NOT NULL, stream TEXT NOT NULL, version BIGINT NOT NULL, reason TEXT NOT NULL,
    stuck_at TEXT NOT NULL)"""
RECORD_STUCK = """
    INSERT INTO {stuck} (name, generation, position, topic, stream, version, reason, stuck_at)
    VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
    ON CONFLICT (name) DO UPDATE SET generation = excluded.generation,
        position = excluded.position, topic = excluded.topic, stream = excluded.stream,
        version = excluded.version, reason = excluded.reason, stuck_at = excluded.stuck_at"""
SELECT_STUCK = ("SELECT name, generation, position, topic, stream, version, reason, stuck_at "
                "FROM {stuck}")


@dataclass(frozen=True)
class Stuck:
    """The event a projection cannot read: where it is, and why."""

    position: int
    topic: str
    stream: str
    version: int
    reason: str

    @classmethod
    def of(cls, error: UnreadableEvent) -> Stuck:
        assert error.position is not None, "a reader in position order knows the position"
        return cls(error.position, error.topic, str(error.originator_id),
                   error.originator_version, error.reason)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        return (f"position {self.position} (stream {self.stream} version {self.version}, "
                f"topic {self.topic!r}) cannot be read: {self.reason}")


class ProjectionStuck(Exception):
    """Projections stopped before an event they cannot read; everything before it is applied.

    `positions`: where each projection stands now; `applied`: how many events the call that
    raised this applied before stopping."""

    def __init__(self, stuck: Stuck, positions: Mapping[str, int], applied: int = 0) -> None:
        super().__init__(stuck.describe())
        self.stuck = stuck
        self.positions = dict(positions)
        self.applied = applied

    def describe(self) -> str:
        """One line for the operator: where the projections stopped, and what to do."""
        return (f"projections stopped before {self.stuck.describe()}; the events before it "
                "are applied. Repair or remove that row (docs/audit.md, \"An event that cannot "
                "be read\"), then catch up again")


def create_table(store: ReadStore, cursor: Any) -> None:
    cursor.execute(store.sql(CREATE_STUCK))


def record(store: ReadStore, generations: Mapping[str, int], positions: Mapping[str, int],
           stuck: Stuck) -> None:
    """Record, in a transaction of its own, that the projections standing before `stuck`
    cannot go on.

    If the record cannot be written (a store open read-only, a role that may not create the
    table), that is logged and the caller goes on: it raises `ProjectionStuck`, which names
    the row all the same."""
    try:
        with store.transaction() as cursor:
            create_table(store, cursor)
            for name in sorted(generations):
                if positions[name] < stuck.position:
                    cursor.execute(store.sql(RECORD_STUCK), (
                        name, generations[name], stuck.position, stuck.topic, stuck.stream,
                        stuck.version, stuck.reason, now()))
    except PersistenceError as error:
        logger.warning("could not record for `projections status` that the projections "
                       "stop before %s: %s", stuck.describe(), str(error).splitlines()[0])


def recorded(store: ReadStore) -> dict[str, dict[str, Any]]:
    """The records, by projection name (none in a store whose table was never created)."""
    if not store.tables_exist([TABLE]):
        return {}
    with store.transaction() as cursor:
        cursor.execute(store.sql(SELECT_STUCK))
        return {row["name"]: dict(row) for row in cursor.fetchall()}
