"""The embedded store's datastore: writers wait their turn for SQLite's write lock, even those
that read first, and a file this process may not write is read without writing it."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from eventsourcing.persistence import OperationalError, PersistenceError

from ledger.app.service import Ledger
from ledger.store.sqlite_recorder import (
    LedgerSQLiteDatastore,
    persistence_error,
    setup_lock,
)

HOLD_SECONDS = 0.5


def datastore(ledger: Ledger) -> Any:
    return ledger.application.recorder.datastore  # type: ignore[attr-defined]


def test_a_writer_that_reads_first_waits_for_the_write_lock(sqlite_url: str) -> None:
    """A transaction that reads, then writes, while another process's writer holds the lock:
    begun DEFERRED it failed at once with "database is locked" (SQLite cannot let a reader
    with a snapshot wait to write); begun IMMEDIATE it waits, then writes."""
    with Ledger.open(sqlite_url, create_tables=True) as first, Ledger.open(sqlite_url) as second:
        with datastore(first).transaction(commit=True) as cursor:
            cursor.execute("CREATE TABLE scratch (n INTEGER)")
        holding = threading.Event()

        def hold_the_write_lock() -> None:
            with datastore(first).transaction(commit=True) as cursor:
                cursor.execute("INSERT INTO scratch VALUES (1)")
                holding.set()
                time.sleep(HOLD_SECONDS)

        holder = threading.Thread(target=hold_the_write_lock)
        holder.start()
        try:
            assert holding.wait(10)
            started = time.monotonic()
            with datastore(second).transaction(commit=True) as cursor:
                cursor.execute("SELECT COUNT(*) FROM scratch")
                seen = cursor.fetchone()[0]
                cursor.execute("INSERT INTO scratch VALUES (?)", (seen + 2,))
            waited = time.monotonic() - started
        finally:
            holder.join()
        with datastore(second).transaction(commit=False) as cursor:
            cursor.execute("SELECT n FROM scratch ORDER BY n")
            assert [row[0] for row in cursor.fetchall()] == [1, 3]
        assert waited > HOLD_SECONDS / 2  # it queued behind the holder, then saw its row


def test_reads_do_not_wait_for_a_writer(sqlite_url: str) -> None:
    """WAL mode: a reader reads the last commit while a writer holds the lock."""
    with Ledger.open(sqlite_url, create_tables=True) as first, Ledger.open(sqlite_url) as second:
        first.receive(outlet="O1", sku="AMOX", batch_id="B1", quantity=5)
        with datastore(first).transaction(commit=True) as cursor:
            cursor.execute("CREATE TABLE scratch (n INTEGER)")
            started = time.monotonic()
            assert second.head_position() > 0
            assert time.monotonic() - started < 1


def test_the_store_is_in_wal_mode(sqlite_url: str) -> None:
    with Ledger.open(sqlite_url, create_tables=True) as ledger, \
            datastore(ledger).transaction(commit=False) as cursor:
        cursor.execute("PRAGMA journal_mode")
        assert cursor.fetchone()[0] == "wal"
        cursor.execute("PRAGMA busy_timeout")
        assert cursor.fetchone()[0] >= 5000


def test_a_store_opened_read_only_reads_and_refuses_writes(sqlite_url: str,
                                                          tmp_path: Path) -> None:
    with Ledger.open(sqlite_url, create_tables=True) as ledger:
        ledger.receive(outlet="O1", sku="AMOX", batch_id="B1", quantity=5)
        head = ledger.head_position()
    path = tmp_path / "ledger.sqlite3"
    before = path.read_bytes()
    with Ledger.open(f"{sqlite_url}?mode=ro") as reader:
        assert datastore(reader).read_only
        assert reader.head_position() == head
        assert reader.stock_item("O1", "AMOX").batch_quantities() == {"B1": 5}
        with pytest.raises(PersistenceError, match="read-only"):
            reader.receive(outlet="O1", sku="AMOX", batch_id="B2", quantity=1)
    assert path.read_bytes() == before


def test_a_wal_file_without_its_log_index_opens_immutable(sqlite_url: str,
                                                          tmp_path: Path) -> None:
    """A WAL-mode file whose `-shm` cannot be made beside it (read-only media) opens
    `immutable`; simulated by asking for it, since root may write anywhere."""
    with Ledger.open(sqlite_url, create_tables=True) as ledger:
        ledger.receive(outlet="O1", sku="AMOX", batch_id="B1", quantity=5)
    path = tmp_path / "ledger.sqlite3"
    store = LedgerSQLiteDatastore(str(path), open_mode="immutable")
    try:
        with store.transaction(commit=True) as cursor:  # a read-only store begins plain BEGIN
            cursor.execute("SELECT COUNT(*) FROM stored_events")
            assert cursor.fetchone()[0] > 0
    finally:
        store.close()
    assert not Path(f"{path}-shm").exists()


def test_a_file_that_is_not_a_database_is_named_in_the_error(tmp_path: Path) -> None:
    path = tmp_path / "garbage.sqlite3"
    path.write_bytes(os.urandom(8192))
    store = LedgerSQLiteDatastore(str(path))
    try:
        with pytest.raises(PersistenceError, match="not a usable SQLite store") as raised, \
                store.transaction(commit=False):
            pass
        assert str(path) in str(raised.value)
    finally:
        store.close()


def test_errors_keep_the_library_classes() -> None:
    import sqlite3

    assert isinstance(persistence_error(sqlite3.OperationalError("database is locked"), "x"),
                      OperationalError)


def test_setup_lock_serialises_processes_setting_up_one_store(tmp_path: Path) -> None:
    path = str(tmp_path / "store" / "ledger.sqlite3")
    order: list[str] = []
    entered = threading.Event()

    def first() -> None:
        with setup_lock(path):
            entered.set()
            time.sleep(0.3)
            order.append("first")

    thread = threading.Thread(target=first)
    thread.start()
    assert entered.wait(10)
    # flock locks belong to open file descriptions, so a second open in this process waits
    # as another process would.
    with setup_lock(path):
        order.append("second")
    thread.join()
    assert order == ["first", "second"]
    with pytest.raises(OperationalError, match="setting up"), setup_lock(path), \
            setup_lock(path, timeout=0.05):
        pass
