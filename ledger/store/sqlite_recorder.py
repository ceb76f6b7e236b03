"""The embedded default's recorder: the library's SQLite recorder, with the hash chain and each
row's content digest computed in the inserting transaction under SQLite's write lock, and the
ledger's read checks."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

from eventsourcing.persistence import IntegrityError, Notification, StoredEvent
from eventsourcing.sqlite import SQLiteApplicationRecorder, SQLiteCursor, SQLiteDatastore

from ledger.store.hash_chain import (
    GENESIS,
    VERSION_BREAKS_SQL,
    chain_hash,
    content_digest,
)


class ChainedSQLiteRecorder(SQLiteApplicationRecorder):
    """SQLite recorder with the same hash chain and content digests, computed in Python under
    SQLite's write lock."""

    def __init__(self, datastore: SQLiteDatastore,
                 events_table_name: str = "stored_events") -> None:
        super().__init__(datastore, events_table_name)
        self.insert_events_statement = (
            f"INSERT INTO {self.events_table_name} "
            "(originator_id, originator_version, topic, state) VALUES (?,?,?,?)"
        )

    def construct_create_table_statements(self) -> list[str]:
        statements = super().construct_create_table_statements()
        statements[0] = statements[0].replace(
            "state BLOB, ", "state BLOB, chain_hash BLOB, content_digest BLOB, ")
        return statements

    def create_table(self) -> None:
        """Create the table, or add the digest column to one written before digests existed
        (its rows keep no digest: "legacy", covered by the chain only)."""
        super().create_table()
        with self.datastore.transaction(commit=True) as c:
            c.execute(f"PRAGMA table_info({self.events_table_name})")
            if "content_digest" not in {row[1] for row in c.fetchall()}:
                c.execute(f"ALTER TABLE {self.events_table_name} ADD COLUMN content_digest BLOB")

    def select_range(self, start: int, stop: int) -> Sequence[Notification]:
        """Every notification from `start` to `stop` (SQLite serialises writers: no horizon)."""
        notifications: Sequence[Notification] = self.select_notifications(
            start, stop - start + 1, stop)
        return notifications

    def select_events_after(self, versions: Sequence[tuple[UUID, int]]) -> list[StoredEvent]:
        """The events of several streams after the versions given (a local file: no round
        trips to save, so one query per stream)."""
        found: list[StoredEvent] = []
        for originator_id, version in versions:
            found.extend(self.select_events(originator_id, gt=version))
        return found

    def _insert_events(self, c: SQLiteCursor, stored_events: Sequence[StoredEvent],
                       **kwargs: Any) -> Sequence[int] | None:
        ids = super()._insert_events(c, stored_events, **kwargs)
        if not ids:
            return ids
        for originator_id, version in kwargs.get("expect_versions") or ():
            c.execute(f"SELECT 1 FROM {self.events_table_name} WHERE originator_id = ? "
                      "AND originator_version > ? LIMIT 1", (originator_id.hex, version))
            if c.fetchone() is not None:
                raise IntegrityError(f"stream {originator_id} has moved past version {version}")
        # The inserts above took SQLite's write lock, so no other writer can come between the
        # predecessor read here and the rows chained to it.
        c.execute(
            f"SELECT chain_hash FROM {self.events_table_name} WHERE rowid < ? "
            "ORDER BY rowid DESC LIMIT 1",
            (ids[0],),
        )
        row = c.fetchone()
        previous = bytes(row[0]) if row is not None and row[0] is not None else GENESIS
        updates = []
        for position, event in zip(ids, stored_events, strict=True):
            previous = chain_hash(previous, position, event.originator_id,
                                  event.originator_version, event.topic, event.state)
            digest = content_digest(position, event.originator_id, event.originator_version,
                                    event.topic, event.state)
            updates.append((previous, digest, position))
        # The digest goes in with the link, in the same statement: no extra write per row.
        c.executemany(f"UPDATE {self.events_table_name} SET chain_hash = ?, content_digest = ? "
                      "WHERE rowid = ?", updates)
        return ids

    def select_chained(self, start: int, limit: int,
                       stop: int | None = None) -> list[dict[str, Any]]:
        """Stored rows from position `start` on (to `stop`), with their chain hashes and
        content digests, for verification."""
        statement = (
            "SELECT rowid AS position, originator_id, originator_version, topic, state, "
            f"chain_hash, content_digest FROM {self.events_table_name} "
            "WHERE rowid >= ? AND rowid <= ? "
            "ORDER BY rowid LIMIT ?"
        )
        with self.datastore.transaction(commit=False) as cursor:
            cursor.execute(statement, (start, stop if stop is not None else 2**63 - 1, limit))
            rows = [dict(row) for row in cursor.fetchall()]
        for row in rows:
            row["originator_id"] = UUID(row["originator_id"])
        return rows

    def select_version_breaks(self, stop: int, limit: int) -> list[dict[str, Any]]:
        """Rows up to `stop` that break their stream's run of versions
        (`ledger.store.hash_chain.VERSION_BREAKS_SQL`)."""
        statement = VERSION_BREAKS_SQL.format(position="rowid", table=self.events_table_name,
                                              param="?")
        with self.datastore.transaction(commit=False) as cursor:
            cursor.execute(statement, (stop, limit))
            rows = [dict(row) for row in cursor.fetchall()]
        for row in rows:
            row["originator_id"] = UUID(row["originator_id"])
        return rows
