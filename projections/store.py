"""Where one event store's read models live: its connections, its SQL dialect, and the names
of the tables, views, state rows and tracking records of each projection."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

from eventsourcing.postgres import PostgresTrackingRecorder
from eventsourcing.sqlite import SQLiteTrackingRecorder

from ledger.store.application import LedgerApplication
from ledger.store.postgres.recorder import ChainedPostgresRecorder
from projections.dialect import Dialect
from projections.registry import BY_NAME

STATE_TABLE = "ledger_projection_state"
"""Each projection's live generation (`projections.generations`)."""


class ReadStore:
    """The read models' side of one store, over the event recorder's own connections."""

    def __init__(self, app: LedgerApplication) -> None:
        self.app = app
        datastore: Any = app.recorder.datastore  # type: ignore[attr-defined]
        self.datastore = datastore
        self.tracking_recorder: SQLiteTrackingRecorder | PostgresTrackingRecorder
        if app.config.backend == "sqlite":
            self.dialect = Dialect("sqlite")
            self.prefix = ""
            self.tracking_recorder = SQLiteTrackingRecorder(datastore)
            self.tracking_table_name = "tracking"  # the library's fixed name on SQLite
            self.tracking_table = self.tracking_table_name
        else:
            recorder = PostgresTrackingRecorder(datastore)
            self.dialect = Dialect("postgres")
            self.prefix = f'"{datastore.schema}".'
            self.tracking_recorder = recorder
            self.tracking_table_name = recorder.tracking_table_name
            self.tracking_table = f'{self.prefix}"{self.tracking_table_name}"'
        self.state = f"{self.prefix}{STATE_TABLE}"
        self.stuck = f"{self.prefix}ledger_projection_stuck"  # projections.stuck.TABLE

    def tables(self, name: str, generation: int) -> dict[str, str]:
        """Projection `name`'s tables in `generation`, by base name."""
        return {t: f"{self.prefix}ledger_{t}_g{generation}" for t in BY_NAME[name].tables}

    def views(self, name: str) -> dict[str, str]:
        """The views readers query, by base name: they read the live generation."""
        return {t: f"{self.prefix}ledger_{t}" for t in BY_NAME[name].tables}

    def sql(self, statement: str, **names: str) -> str:
        """`statement` for this dialect, naming the state table `{state}`, the tracking
        table `{tracking}`, the table of stuck projections `{stuck}`, and whatever `names`
        gives."""
        return self.dialect.sql(statement.format(state=self.state, stuck=self.stuck,
                                                 tracking=self.tracking_table, **names))

    def query(self, statement: str, params: Sequence[Any]) -> list[dict[str, Any]]:
        """One read statement in one round trip (no transaction block around it)."""
        if self.dialect.name == "sqlite":
            with self.datastore.transaction(commit=False) as cursor:
                cursor.execute(statement, params)
                return [dict(row) for row in cursor.fetchall()]
        with self.datastore.get_connection() as connection:
            return list(connection.execute(statement, params, prepare=True).fetchall())

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Any]:
        with self.datastore.transaction(commit=True) as cursor:
            yield cursor

    def tables_exist(self, names: Sequence[str]) -> bool:
        """Whether every table (or view) named, unqualified, exists in the store's schema
        (`LedgerApplication.missing_tables`: one catalog read that needs no privilege, so that
        opening, reading and verifying create nothing and a role without DDL rights can run
        them)."""
        return not self.app.missing_tables(names, event_store=False)

    def head(self) -> int:
        """The position of the last event recorded (0 if none)."""
        return self.app.recorder.max_notification_id() or 0

    def seal(self) -> None:
        """Seal the hash chain up to the horizon (PostgreSQL, where it is sealed after
        commit; the sealer stops before a row that fails its digest), unless the seal lock is
        held at this moment, by another sealer or a stranger: never wait for it. SQLite
        chains as it appends."""
        recorder = self.app.recorder
        if isinstance(recorder, ChainedPostgresRecorder):
            recorder.seal_if_free()
