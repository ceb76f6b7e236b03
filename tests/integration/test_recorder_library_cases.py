"""The eventsourcing library's own recorder test cases, run against our recorders on the real
PostgreSQL server (and SQLite): a recorder we subclass must keep the library's contract,
including gap-free, non-interleaved notification ids under concurrent writers."""

from __future__ import annotations

import os
import tempfile
import threading
import unittest
import uuid
from typing import ClassVar
from unittest import mock
from urllib.parse import urlparse

import psycopg
import pytest
from eventsourcing.persistence import StoredEvent
from eventsourcing.postgres import PostgresDatastore, PostgresTrackingRecorder
from eventsourcing.sqlite import SQLiteDatastore
from eventsourcing.tests.persistence import (
    ApplicationRecorderTestCase,
    NonInterleavingNotificationIDsBaseCase,
    TrackingRecorderTestCase,
)

from ledger.store.hash_chain import GENESIS, chain_hash, select_chained
from ledger.store.postgres import notifications
from ledger.store.postgres.recorder import ChainedPostgresRecorder
from ledger.store.sqlite_recorder import ChainedSQLiteRecorder

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
    def test_insert_subscribe(self) -> None:
        # Optional in the library; ours must keep it although appends notify less often.
        self.optional_test_insert_subscribe()

    def test_subscription_receives_an_append_that_sent_no_notification(self) -> None:
        # An interval long enough that the second append surely falls inside it (and the
        # subscription's polling window with it).
        with mock.patch.object(notifications, "NOTIFY_SECONDS", 5.0):
            self._receives_an_append_that_sent_no_notification()

    def _receives_an_append_that_sent_no_notification(self) -> None:
        recorder = self.create_recorder()
        event = StoredEvent(uuid.uuid4(), 1, "topic", b"state")
        with recorder.datastore.get_connection() as connection:
            connection.execute(recorder.append_statement([event]), prepare=False)
            with recorder.subscribe(gt=0) as subscription:
                first = next(subscription)
                # Same session, within its interval: no NOTIFY for this one.
                connection.execute(recorder.append_statement(
                    [StoredEvent(uuid.uuid4(), 1, "topic", b"later")]), prepare=False)
                received: list[bytes] = []
                reader = threading.Thread(
                    target=lambda: received.append(next(subscription).state), daemon=True)
                reader.start()
                reader.join(timeout=5)
                assert received == [b"later"], "the subscription missed the second append"
        assert first.state == b"state"


class TestChainedPostgresRecorderNonInterleaving(ChainedPostgres,
                                                 NonInterleavingNotificationIDsBaseCase):
    pass


class TestPostgresTrackingRecorder(ThrowawayPostgres, TrackingRecorderTestCase):
    def create_recorder(self) -> PostgresTrackingRecorder:
        recorder = PostgresTrackingRecorder(self.datastore())
        recorder.create_table()
        return recorder


class ChainedSQLite:
    def create_recorder(self) -> ChainedSQLiteRecorder:
        directory = tempfile.TemporaryDirectory()
        self.addCleanup(directory.cleanup)  # type: ignore[attr-defined]
        recorder = ChainedSQLiteRecorder(SQLiteDatastore(f"{directory.name}/events.sqlite3"))
        recorder.create_table()
        return recorder


class TestChainedSQLiteRecorder(ChainedSQLite, ApplicationRecorderTestCase[ChainedSQLiteRecorder]):
    pass


AWKWARD_TOPICS = ['a"b', "back\\slash", "{braces},commas", "$dollar$ $$", "naïve: ünïcode", " "]
AWKWARD_STATES = [b"", b"\x00\x01\xff", b'{"json": "\\"quoted\\""}', b"\\x41", "é".encode(),
                  b"last"]


class AwkwardValues:
    """Topics and states travel inside literal arrays on the PostgreSQL append path: whatever
    their bytes, they must come back as they went in, with their chain intact."""

    def create_recorder(self) -> ChainedPostgresRecorder | ChainedSQLiteRecorder:
        raise NotImplementedError

    def test_awkward_topics_and_states_round_trip(self) -> None:
        recorder = self.create_recorder()
        originator = uuid.uuid4()
        events = [StoredEvent(originator, version, topic, state)
                  for version, (topic, state) in enumerate(
                      zip(AWKWARD_TOPICS, AWKWARD_STATES, strict=True), start=1)]
        positions = recorder.insert_events(events)
        assert positions is not None and len(positions) == len(events)
        stored = recorder.select_events(originator)
        assert [(e.topic, e.state) for e in stored] == [(e.topic, e.state) for e in events]
        if isinstance(recorder, ChainedPostgresRecorder):
            assert recorder.seal_all() == max(positions)
        rows = select_chained(recorder, 1, 100)
        previous = GENESIS
        for row in rows:
            previous = chain_hash(previous, row["position"], row["originator_id"],
                                  row["originator_version"], row["topic"], bytes(row["state"]))
            assert bytes(row["chain_hash"]) == previous

    def test_a_topic_holding_the_closing_quote_goes_through_the_recorder(self) -> None:
        # The recorder sends its arguments as parameters: no topic can end them early.
        recorder = self.create_recorder()
        originator = uuid.uuid4()
        events = [StoredEvent(originator, 1, "fine", b"{}"),
                  StoredEvent(originator, 2, "x$stockledger$y", b"{}")]
        recorder.insert_events(events)
        assert [e.topic for e in recorder.select_events(originator)] == [
            "fine", "x$stockledger$y"]
        if isinstance(recorder, ChainedPostgresRecorder):
            # The plain-statement form quotes its arguments with that very marker.
            with pytest.raises(ValueError, match="stockledger"):
                recorder.append_statement(events)


class TestAwkwardValuesPostgres(ChainedPostgres, AwkwardValues, unittest.TestCase):
    pass


class TestAwkwardValuesSQLite(ChainedSQLite, AwkwardValues, unittest.TestCase):
    pass
