"""The eventsourcing library's own recorder test cases, run against our recorders on the real
PostgreSQL server (and SQLite): a recorder we subclass must keep the library's contract,
including gap-free, non-interleaved notification ids under concurrent writers."""

from __future__ import annotations

import os
import tempfile
import uuid
from typing import ClassVar
from urllib.parse import urlparse

import psycopg
import pytest
from eventsourcing.postgres import PostgresDatastore, PostgresTrackingRecorder
from eventsourcing.sqlite import SQLiteDatastore
from eventsourcing.tests.persistence import (
    ApplicationRecorderTestCase,
    NonInterleavingNotificationIDsBaseCase,
    TrackingRecorderTestCase,
)

from ledger.recorders import ChainedPostgresRecorder, ChainedSQLiteRecorder

pytestmark = pytest.mark.postgres

ADMIN_URL = os.environ.get("LEDGER_TEST_POSTGRES_URL",
                           "postgresql://postgres@127.0.0.1:5432/postgres")


class ThrowawayPostgres:
    """A fresh database per test class, dropped afterwards; an unreachable server fails."""

    dbname: ClassVar[str]

    @classmethod
    def setUpClass(cls) -> None:
        cls.dbname = f"stockledger_lib_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=5) as connection:
            connection.execute(f'CREATE DATABASE "{cls.dbname}"')

    @classmethod
    def tearDownClass(cls) -> None:
        with psycopg.connect(ADMIN_URL, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{cls.dbname}" WITH (FORCE)')

    def datastore(self) -> PostgresDatastore:
        admin = urlparse(ADMIN_URL)
        store = PostgresDatastore(self.dbname, admin.hostname or "127.0.0.1",
                                  admin.port or 5432, admin.username or "postgres",
                                  admin.password or "", pool_size=4, max_overflow=10)
        self.addCleanup(store.close)  # type: ignore[attr-defined]
        return store

    def setUp(self) -> None:
        self.reset()

    def reset(self) -> None:
        with psycopg.connect(f"{ADMIN_URL.rsplit('/', 1)[0]}/{self.dbname}",
                             autocommit=True) as connection:
            connection.execute("DROP SCHEMA public CASCADE")
            connection.execute("CREATE SCHEMA public")


class ChainedPostgres(ThrowawayPostgres):
    def create_recorder(self) -> ChainedPostgresRecorder:
        recorder = ChainedPostgresRecorder(self.datastore(), events_table_name="stored_events")
        recorder.create_table()
        return recorder


class TestChainedPostgresRecorder(ChainedPostgres,
                                  ApplicationRecorderTestCase[ChainedPostgresRecorder]):
    pass


class TestChainedPostgresRecorderNonInterleaving(ChainedPostgres,
                                                 NonInterleavingNotificationIDsBaseCase):
    pass


class TestPostgresTrackingRecorder(ThrowawayPostgres, TrackingRecorderTestCase):
    def create_recorder(self) -> PostgresTrackingRecorder:
        recorder = PostgresTrackingRecorder(self.datastore())
        recorder.create_table()
        return recorder


class TestChainedSQLiteRecorder(ApplicationRecorderTestCase[ChainedSQLiteRecorder]):
    def create_recorder(self) -> ChainedSQLiteRecorder:
        directory = tempfile.TemporaryDirectory()
        self.addCleanup(directory.cleanup)
        recorder = ChainedSQLiteRecorder(SQLiteDatastore(f"{directory.name}/events.sqlite3"))
        recorder.create_table()
        return recorder
