"""Event recorders: the library's, with a hash chain and a shorter hold of the insert lock.

Hash chain: every stored event carries `chain_hash = sha256(previous chain_hash || position ||
originator id || version || topic || state)`, in the order of positions (notification ids).
Changing, deleting or reordering any past row breaks the chain from that row on, which
`audit verify` reports by position. The chain is computed inside the inserting transaction
while inserts are serialised, so concurrent writers never fork it.

Expected versions: a command may have decided on streams it does not write (the outlet's
policy, say). `insert_events(..., expect_versions=[(id, version), ...])` fails the insert with
an integrity error if any of those streams has moved past the version the decision saw; checked
under the insert lock, so no append can slip in between. The streams a command writes need no
such check: their next version's uniqueness already is one.

Insert lock: positions must become visible in order, or projections would pass over a gap that
a slower transaction fills later. The library keeps order by taking an EXCLUSIVE lock on the
events table for the whole inserting transaction. We keep that lock (it is what makes the
library's gap-free reading correct) but send BEGIN, LOCK, INSERT and COMMIT in one pipelined
round trip, so the lock is held for the insert and the commit's flush, not for the round trips
in between.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any, cast
from uuid import UUID

import psycopg
from eventsourcing.persistence import (
    IntegrityError,
    InterfaceError,
    OperationalError,
    StoredEvent,
)
from eventsourcing.postgres import PostgresApplicationRecorder, PostgresDatastore
from eventsourcing.sqlite import SQLiteApplicationRecorder, SQLiteCursor, SQLiteDatastore
from eventsourcing.utils import retry
from psycopg.sql import SQL, Composed, Identifier

GENESIS = bytes(32)
"""The predecessor of the first event's chain hash."""


def chain_hash(previous: bytes, position: int, originator_id: UUID | str, version: int,
               topic: str, state: bytes) -> bytes:
    """The chain hash of one stored event: the same formula as the PostgreSQL trigger."""
    header = f"{position}:{originator_id}:{version}:{topic}".encode()
    return hashlib.sha256(previous + header + state).digest()


class ChainedPostgresRecorder(PostgresApplicationRecorder):
    """PostgreSQL recorder with a hash chain and a one-round-trip locked insert."""

    def __init__(self, datastore: PostgresDatastore, *,
                 events_table_name: str = "stored_events") -> None:
        super().__init__(datastore, events_table_name=events_table_name)
        schema = Identifier(self.datastore.schema)
        table = Identifier(self.events_table_name)
        function = Identifier(f"{self.events_table_name}_chain")
        self.sql_create_statements.extend([
            SQL("ALTER TABLE {schema}.{table} ADD COLUMN IF NOT EXISTS chain_hash bytea")
            .format(schema=schema, table=table),
            SQL(
                "CREATE OR REPLACE FUNCTION {schema}.{function}() RETURNS trigger "
                "LANGUAGE plpgsql AS $body$ "
                "DECLARE previous bytea; "
                "BEGIN "
                "  SELECT chain_hash INTO previous FROM {schema}.{table} "
                "  WHERE notification_id < NEW.notification_id "
                "  ORDER BY notification_id DESC LIMIT 1; "
                "  NEW.chain_hash := sha256("
                "    coalesce(previous, decode(repeat('00', 32), 'hex')) "
                "    || convert_to(NEW.notification_id::text || ':' || NEW.originator_id::text"
                "       || ':' || NEW.originator_version::text || ':' || coalesce(NEW.topic, ''),"
                "       'UTF8') "
                "    || coalesce(NEW.state, ''::bytea)); "
                "  RETURN NEW; "
                "END $body$"
            ).format(schema=schema, table=table, function=function),
            SQL(
                "CREATE OR REPLACE TRIGGER {trigger} BEFORE INSERT ON {schema}.{table} "
                "FOR EACH ROW EXECUTE FUNCTION {schema}.{function}()"
            ).format(trigger=function, schema=schema, table=table, function=function),
        ])
        self._notify_statement = SQL("NOTIFY {0}").format(Identifier(self.channel_name))
        self._rendered_statements: dict[str, str] | None = None
        self._insert_statements: dict[int, str] = {}
        expect_function = Identifier(f"{self.events_table_name}_expect_versions")
        self.sql_create_statements.append(SQL(
            "CREATE OR REPLACE FUNCTION {schema}.{function}(ids uuid[], versions bigint[]) "
            "RETURNS void LANGUAGE plpgsql AS $body$ "
            "BEGIN "
            # One index probe per stream: a join over the arrays gets a generic plan that
            # may scan the table.
            "  FOR i IN 1 .. coalesce(array_length(ids, 1), 0) LOOP "
            "    IF EXISTS (SELECT 1 FROM {schema}.{table} WHERE originator_id = ids[i] "
            "               AND originator_version > versions[i]) THEN "
            "      RAISE EXCEPTION USING ERRCODE = 'unique_violation', "
            "        MESSAGE = 'a stream the decision read has moved on'; "
            "    END IF; "
            "  END LOOP; "
            "END $body$"
        ).format(schema=schema, table=table, function=expect_function))
        self._expect_statement = SQL(
            "SELECT {schema}.{function}(%s::uuid[], %s::bigint[])"
        ).format(schema=schema, function=expect_function)
        self._select_after_statement = SQL(
            "SELECT e.originator_id, e.originator_version, e.topic, e.state "
            "FROM unnest(%s::uuid[], %s::bigint[]) AS known(id, version) "
            "JOIN {schema}.{table} e ON e.originator_id = known.id "
            "AND e.originator_version > known.version "
            "ORDER BY e.originator_id, e.originator_version"
        ).format(schema=schema, table=table)

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
    def select_events_after(self, versions: Sequence[tuple[UUID, int]]) -> list[StoredEvent]:
        """The events of several streams after the versions given, in one round trip."""
        with self.datastore.get_connection() as connection, connection.cursor() as cursor:
            cursor.execute(self._select_after_statement,
                           ([i for i, _ in versions], [v for _, v in versions]), prepare=True)
            return [
                StoredEvent(originator_id=row["originator_id"],
                            originator_version=row["originator_version"],
                            topic=row["topic"], state=bytes(row["state"]))
                for row in cursor.fetchall()
            ]

    def _rendered(self, connection: psycopg.Connection[Any]) -> dict[str, str]:
        """The append path's statements as text, composed once rather than on every append."""
        if self._rendered_statements is None:
            lock_timeout, lock_table = (cast(SQL | Composed, s).as_string(connection)
                                        for s in self.lock_table_statements)
            self._rendered_statements = {
                "lock_timeout": lock_timeout,
                "lock_table": lock_table,
                "expect": self._expect_statement.as_string(connection),
                "notify": self._notify_statement.as_string(connection),
                "table": SQL("{schema}.{table}").format(
                    schema=Identifier(self.datastore.schema),
                    table=Identifier(self.events_table_name)).as_string(connection),
            }
        return self._rendered_statements

    def _insert_statement(self, table: str, rows: int) -> str:
        # Plain parameters travel in binary; an array of composites is dumped as text, slowly.
        statement = self._insert_statements.get(rows)
        if statement is None:
            values = ", ".join(["(%s, %s, %s, %s)"] * rows)
            statement = (f"INSERT INTO {table} (originator_id, originator_version, topic, state)"
                         f" VALUES {values} RETURNING notification_id")
            self._insert_statements[rows] = statement
        return statement

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
    def insert_events(self, stored_events: Sequence[StoredEvent],
                      **kwargs: Any) -> Sequence[int] | None:
        if not stored_events:
            return []
        parameters: list[Any] = []
        for event in stored_events:
            parameters += (event.originator_id, event.originator_version, event.topic,
                           event.state)
        ids: list[int] = []
        with self.datastore.get_connection() as connection:
            statements = self._rendered(connection)
            failure: psycopg.Error | None = None
            with connection.pipeline() as pipeline:
                control = connection.cursor()
                inserting = connection.cursor()
                control.execute("BEGIN")
                control.execute(statements["lock_timeout"])
                control.execute(statements["lock_table"])
                expected = kwargs.get("expect_versions")
                if expected:
                    control.execute(statements["expect"],
                                    ([i for i, _ in expected], [v for _, v in expected]),
                                    prepare=True)
                control.execute(statements["notify"])
                inserting.execute(
                    self._insert_statement(statements["table"], len(stored_events)),
                    parameters, prepare=True, binary=True)
                control.execute("COMMIT")
                try:
                    pipeline.sync()
                    ids = [row["notification_id"] for row in inserting.fetchall()]
                except psycopg.Error as error:
                    failure = error
            if failure is not None:
                # The failed statement left the transaction block open and aborted.
                connection.execute("ROLLBACK")
                if isinstance(failure, psycopg.errors.IntegrityError):
                    raise IntegrityError(str(failure)) from failure
                raise failure
        return ids


class ChainedSQLiteRecorder(SQLiteApplicationRecorder):
    """SQLite recorder with the same hash chain, computed in Python under SQLite's write lock."""

    def __init__(self, datastore: SQLiteDatastore,
                 events_table_name: str = "stored_events") -> None:
        super().__init__(datastore, events_table_name)
        self.insert_events_statement = (
            f"INSERT INTO {self.events_table_name} "
            "(originator_id, originator_version, topic, state) VALUES (?,?,?,?)"
        )

    def construct_create_table_statements(self) -> list[str]:
        statements = super().construct_create_table_statements()
        statements[0] = statements[0].replace("state BLOB, ", "state BLOB, chain_hash BLOB, ")
        return statements

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
            updates.append((previous, position))
        c.executemany(f"UPDATE {self.events_table_name} SET chain_hash = ? WHERE rowid = ?",
                      updates)
        return ids


def select_chained(recorder: object, start: int, limit: int) -> list[dict[str, Any]]:
    """Stored rows from position `start` on, with their chain hashes, for verification."""
    if isinstance(recorder, ChainedSQLiteRecorder):
        statement = (
            "SELECT rowid AS position, originator_id, originator_version, topic, state, "
            f"chain_hash FROM {recorder.events_table_name} WHERE rowid >= ? "
            "ORDER BY rowid LIMIT ?"
        )
        with recorder.datastore.transaction(commit=False) as cursor:
            cursor.execute(statement, (start, limit))
            rows = [dict(row) for row in cursor.fetchall()]
        for row in rows:
            row["originator_id"] = UUID(row["originator_id"])
        return rows
    if isinstance(recorder, ChainedPostgresRecorder):
        query = SQL(
            "SELECT notification_id AS position, originator_id, originator_version, topic, "
            "state, chain_hash FROM {schema}.{table} WHERE notification_id >= %s "
            "ORDER BY notification_id LIMIT %s"
        ).format(schema=Identifier(recorder.datastore.schema),
                 table=Identifier(recorder.events_table_name))
        with recorder.datastore.transaction(commit=False) as cursor:
            cursor.execute(query, (start, limit))
            return [dict(row) for row in cursor.fetchall()]
    raise TypeError(f"{type(recorder).__name__} keeps no hash chain")
