"""Appends NOTIFY at most once per session per `NOTIFY_SECONDS`; whoever listens polls for a
window after each notification, so an append that sent none is still seen promptly."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import psycopg
import pytest

from ledger.app.service import Ledger
from ledger.domain.outlet import Outlet
from ledger.store.application import LedgerApplication
from ledger.store.postgres import notifications
from ledger.store.postgres.recorder import ChainedPostgresRecorder
from projections import follow as follow_module
from projections.runner import ReadModels
from tests.appending import append_in
from tests.following import following, reaches

pytestmark = pytest.mark.postgres


def _append(connection: psycopg.Connection, app: LedgerApplication) -> int:
    """Open an outlet, appended on this very session (the pool might hand each call another)."""
    events = Outlet.open(f"OUT-{uuid.uuid4().hex[:8]}", "tests").collect_events()
    return append_in(connection, app, [app.mapper.to_stored_event(e) for e in events])[-1]


def _notifications(listener: psycopg.Connection, seconds: float) -> int:
    return sum(1 for _ in listener.notifies(timeout=seconds))


@pytest.fixture
def store(postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Ledger]:
    # Long enough that a handful of appends surely fall inside one interval, on a busy machine
    # too; the function is created with whatever value is set when the tables are.
    monkeypatch.setattr(notifications, "NOTIFY_SECONDS", 1.5)
    with Ledger.open(postgres_url, create_tables=True) as ledger:
        yield ledger


def test_a_session_notifies_once_per_interval(store: Ledger, postgres_url: str) -> None:
    recorder = store.application.recorder
    assert isinstance(recorder, ChainedPostgresRecorder)
    with psycopg.connect(postgres_url, autocommit=True) as listener, \
            psycopg.connect(postgres_url, autocommit=True) as writer, \
            psycopg.connect(postgres_url, autocommit=True) as other_writer:
        listener.execute(f'LISTEN "{recorder.channel_name}"')
        for _ in range(5):
            _append(writer, store.application)
        assert _notifications(listener, 0.3) == 1
        _append(other_writer, store.application)  # another session keeps its own interval
        assert _notifications(listener, 0.3) == 1
        time.sleep(notifications.NOTIFY_SECONDS)
        _append(writer, store.application)
        assert _notifications(listener, 0.3) == 1


def test_a_follower_applies_an_append_that_sent_no_notification(
        store: Ledger, postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # Without the polling window only this fallback would pick the append up.
    monkeypatch.setattr(follow_module, "WAKE_SECONDS", 60.0)
    recorder = store.application.recorder
    assert isinstance(recorder, ChainedPostgresRecorder)
    models = ReadModels(store.application)
    models.create()
    with following(postgres_url), \
            psycopg.connect(postgres_url, autocommit=True) as listener, \
            psycopg.connect(postgres_url, autocommit=True) as writer:
        listener.execute(f'LISTEN "{recorder.channel_name}"')
        first = _append(writer, store.application)
        notified_at = time.monotonic()
        # Once the follower has applied the first append, it has nothing left to catch up:
        # the second comes within the writer's interval, so it sends no notification, and
        # only the follower's polling window can find it.
        assert reaches(models, first, 10)
        if time.monotonic() - notified_at > notifications.NOTIFY_SECONDS / 2:
            pytest.fail("the follower took too long to apply the first append")
        second = _append(writer, store.application)
        assert _notifications(listener, 0.2) == 1
        assert reaches(models, second, 3), models.status()


def test_the_follower_seals_the_chain_behind_what_it_applies(store: Ledger,
                                                              postgres_url: str) -> None:
    recorder = store.application.recorder
    assert isinstance(recorder, ChainedPostgresRecorder)
    models = ReadModels(store.application)
    models.create()
    store.receive(outlet="SEALED", sku="S", batch_id="B1", quantity=100)
    with following(postgres_url), psycopg.connect(postgres_url, autocommit=True) as reader:
        for n in range(5):
            store.sell(outlet="SEALED", sale_id=f"S-{n}", lines=[("S", 1)])
        head = store.head_position()
        assert reaches(models, head, 10), models.status()
        deadline = time.monotonic() + 5
        sealed = 0
        while time.monotonic() < deadline and sealed < head:
            row = reader.execute(
                f'SELECT coalesce(max(position), 0) FROM "{recorder.seals_table_name}"'
            ).fetchone()
            sealed = row[0] if row else 0
            time.sleep(0.02)
    assert sealed == head
