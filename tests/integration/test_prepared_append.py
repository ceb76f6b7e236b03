"""The append runs as a statement prepared once per connection and sent over libpq: it must
survive what a pooled session meets (its prepared statements dropped, its server process
ended) without losing or doubling a sale, and report failures as the library's errors."""

from __future__ import annotations

import os
import resource
import signal
import threading
from collections.abc import Iterator
from types import FrameType
from typing import Any

import psycopg
import pytest
from eventsourcing.persistence import IntegrityError

from ledger.app.service import Ledger
from ledger.store.postgres.recorder import ChainedPostgresRecorder

pytestmark = pytest.mark.postgres


@pytest.fixture
def ledger(postgres_url: str) -> Iterator[Ledger]:
    with Ledger.open(postgres_url, create_tables=True) as opened:
        opened.receive(outlet="P-1", sku="S", batch_id="B1", quantity=1_000)
        yield opened


def _recorder(ledger: Ledger) -> ChainedPostgresRecorder:
    recorder = ledger.application.recorder
    assert isinstance(recorder, ChainedPostgresRecorder)
    return recorder


def _pooled(ledger: Ledger) -> Iterator[psycopg.Connection[Any]]:
    """Every connection the ledger's pool holds idle, each given back after its turn."""
    pool = _recorder(ledger).datastore.pool
    connections = [pool.getconn() for _ in range(pool.get_stats().get("pool_available", 1))]
    try:
        yield from connections
    finally:
        for connection in connections:
            pool.putconn(connection)


def _sold(ledger: Ledger) -> int:
    return 1_000 - ledger.stock_level("P-1", "S").on_hand


def test_an_append_prepares_again_on_a_session_whose_statements_were_dropped(
        ledger: Ledger) -> None:
    ledger.sell(outlet="P-1", sale_id="S-1", lines=[("S", 1)])
    for connection in _pooled(ledger):
        connection.execute("DEALLOCATE ALL")
    ledger.sell(outlet="P-1", sale_id="S-2", lines=[("S", 2)])
    assert _sold(ledger) == 3


def test_an_append_finds_its_statement_prepared_by_an_interrupted_call(ledger: Ledger) -> None:
    """Interrupted between the server preparing it and the recorder noting so, a connection
    goes back to the pool with the statement prepared: later appends on it must not fail."""
    statement = _recorder(ledger)._append_prepared
    for connection in _pooled(ledger):
        if connection not in statement._prepared_on:
            connection.pgconn.prepare(statement.name, statement.sql)
        statement._prepared_on.discard(connection)
    ledger.sell(outlet="P-1", sale_id="S-1", lines=[("S", 1)])
    ledger.sell(outlet="P-1", sale_id="S-2", lines=[("S", 2)])
    assert _sold(ledger) == 3


def test_an_append_waits_on_a_socket_numbered_above_1024(postgres_url: str) -> None:
    """A process holding many descriptors (a server with many clients) gets sockets that
    `select` cannot watch."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 4096)), hard))
    held = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    try:
        with Ledger.open(postgres_url, create_tables=True) as opened:
            opened.receive(outlet="P-1", sku="S", batch_id="B1", quantity=10)
            pool = _recorder(opened).datastore.pool
            connection = pool.getconn()
            assert connection.pgconn.socket > 1024
            pool.putconn(connection)
            opened.sell(outlet="P-1", sale_id="S-1", lines=[("S", 3)])
            assert opened.stock_level("P-1", "S").on_hand == 7
    finally:
        for descriptor in held:
            os.close(descriptor)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_an_append_whose_server_process_ended_is_retried_on_a_new_one(
        ledger: Ledger, postgres_url: str) -> None:
    ledger.sell(outlet="P-1", sale_id="S-1", lines=[("S", 1)])
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        for connection in _pooled(ledger):
            admin.execute("SELECT pg_terminate_backend(%s)", (connection.info.backend_pid,))
    result = ledger.sell(outlet="P-1", sale_id="S-2", lines=[("S", 2)])
    assert result.position is not None
    assert _sold(ledger) == 3
    # Recorded once: its replay is the same sale, and the stock moved by 2, not 4.
    again = ledger.sell(outlet="P-1", sale_id="S-2", lines=[("S", 2)])
    assert again.replayed and again.position == result.position
    assert _sold(ledger) == 3


def test_a_conflict_is_the_library_integrity_error(ledger: Ledger) -> None:
    recorder = _recorder(ledger)
    item = ledger.application.repository.get(ledger.stock_item("P-1", "S").id)
    version = item.version
    events = [e for e in recorder.select_events(item.id) if e.originator_version == version]
    with pytest.raises(IntegrityError):
        recorder.insert_events(events)


def test_an_interrupted_append_closes_its_connection_and_the_pool_recovers(
        ledger: Ledger, postgres_url: str) -> None:
    """A till interrupted while its append waits (here on a read-check lock another session
    holds) must not hand a connection in the middle of a statement back to the pool."""

    class Interrupted(Exception):
        pass

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise Interrupted

    assert threading.current_thread() is threading.main_thread()
    outlet = ledger.application.load(ledger.stock_item("P-1", "S").id)
    assert outlet is not None
    recorder = _recorder(ledger)
    with psycopg.connect(postgres_url) as holder:
        # An uncommitted append to the stock item holds its read-check lock exclusively.
        item_events = list(recorder.select_events(outlet.id))
        moved = [type(item_events[-1])(
            originator_id=item_events[-1].originator_id,
            originator_version=item_events[-1].originator_version + 1,
            topic=item_events[-1].topic, state=item_events[-1].state)]
        holder.execute(recorder.append_statement(moved), prepare=False)
        previous = signal.signal(signal.SIGALRM, interrupt)
        signal.setitimer(signal.ITIMER_REAL, 0.5)
        try:
            with pytest.raises(Interrupted):
                ledger.sell(outlet="P-1", sale_id="S-1", lines=[("S", 1)])
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
        holder.rollback()
    ledger.sell(outlet="P-1", sale_id="S-2", lines=[("S", 1)])
    # The waiting statement was cancelled, not left to commit once the lock came free.
    assert _sold(ledger) == 1
    stats = recorder.datastore.pool.get_stats()
    assert stats.get("returns_bad", 0) >= 1


@pytest.fixture
def scratch_table(postgres_url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(postgres_url, autocommit=True) as connection:
        connection.execute("CREATE TEMPORARY TABLE t (n integer PRIMARY KEY)")
        yield connection


def test_a_statement_sent_with_a_then_runs_both_each_as_its_own_transaction(
        scratch_table: psycopg.Connection[Any]) -> None:
    from ledger.store.postgres.prepared import PreparedStatement

    insert = PreparedStatement("test_insert", "INSERT INTO t VALUES ($1) RETURNING n")
    assert insert.values(scratch_table, [b"1"], then=b"INSERT INTO t VALUES (10)") == [b"1"]
    # The statement fails; the `then` still runs, after it, and the connection is usable.
    with pytest.raises(psycopg.errors.UniqueViolation):
        insert.values(scratch_table, [b"1"], then=b"INSERT INTO t VALUES (11)")
    assert scratch_table.pgconn.pipeline_status == psycopg.pq.PipelineStatus.OFF
    rows = scratch_table.execute("SELECT n FROM t ORDER BY n").fetchall()
    assert rows == [(1,), (10,), (11,)]


def test_a_then_that_fails_closes_the_connection_and_the_statement_stands(
        scratch_table: psycopg.Connection[Any], postgres_url: str) -> None:
    from ledger.store.postgres.prepared import PreparedStatement

    scratch_table.execute("CREATE TABLE kept (n integer)")  # in the test's own database
    insert = PreparedStatement("test_kept", "INSERT INTO kept VALUES ($1) RETURNING n")
    assert insert.values(scratch_table, [b"7"], then=b"SELECT 1 / 0") == [b"7"]
    assert scratch_table.closed
    with psycopg.connect(postgres_url, autocommit=True) as other:
        assert other.execute("SELECT n FROM kept").fetchall() == [(7,)]


def test_statements_run_together_stop_at_the_first_error_as_one_transaction(
        scratch_table: psycopg.Connection[Any]) -> None:
    from ledger.store.postgres.prepared import run_together

    with pytest.raises(psycopg.errors.DivisionByZero):
        run_together(scratch_table, [b"INSERT INTO t VALUES (1)", b"SELECT 1 / 0",
                                     b"INSERT INTO t VALUES (2)"])
    assert scratch_table.execute("SELECT count(*) FROM t").fetchone() == (0,)
    result = run_together(scratch_table, [b"SELECT set_config('lock_timeout', '7s', true)",
                                          b"SELECT current_setting('lock_timeout')"])
    assert result.get_value(0, 0) == b"7s"
    assert scratch_table.execute("SHOW lock_timeout").fetchone() == ("0",)
    binary = run_together(scratch_table, [b"SELECT 5::bigint"], binary=True)
    assert binary.get_value(0, 0) == (5).to_bytes(8, "big")


@pytest.mark.parametrize("events, expected, gated", [
    ([], [], []),
    ([("5d1b2c3a-0000-4000-8000-000000000001", 1, "ledger.events:Outlet.Opened", b"")],
     [], []),
    ([("5d1b2c3a-0000-4000-8000-000000000001", 2, 'a "quoted" \\ topic, {é}', b"{}\x00\xff"),
      ("ffffffff-ffff-4fff-bfff-ffffffffffff", 2**63 - 1, "t", bytes(range(256)) * 40)],
     [("00000000-0000-4000-8000-000000000000", 0), ("5d1b2c3a-0000-4000-8000-00000000000f",
                                                     7)],
     [-2**63, 0, 2**63 - 1]),
])
def test_the_binary_arguments_are_the_text_arrays_they_replace(
        scratch_table: psycopg.Connection[Any], events: list[tuple[str, int, str, bytes]],
        expected: list[tuple[str, int]], gated: list[int]) -> None:
    """The append's seven arguments as sent (binary arrays) and as a statement's text writes
    them (array literals) are the same arrays to the server, element for element."""
    from uuid import UUID

    from eventsourcing.persistence import StoredEvent

    from ledger.store.postgres.prepared import PreparedStatement
    from ledger.store.postgres.values import (
        APPEND_ARGUMENT_TYPES,
        append_arrays,
        append_parameters,
    )

    stored = [StoredEvent(originator_id=UUID(i), originator_version=v, topic=t, state=s)
              for i, v, t, s in events]
    checks = [(UUID(i), v) for i, v in expected]
    echo = ", ".join(f"${n}::{kind}[]::text" for n, kind in enumerate(APPEND_ARGUMENT_TYPES, 1))
    as_binary = PreparedStatement("test_binary_arrays", f"SELECT ROW({echo})::text")
    as_text = PreparedStatement("test_text_arrays", f"SELECT ROW({echo})::text")
    sent = as_binary.values(scratch_table, append_parameters(stored, checks, gated),
                            binary=True)
    written = as_text.values(scratch_table, [
        array.encode() for array in append_arrays(stored, checks, gated)])
    assert sent == written
    assert sent[0] is not None and sent[0].count(b"{") >= 7


def test_a_topic_holding_a_nul_is_refused_before_anything_is_sent() -> None:
    """As psycopg refuses a NUL in a text parameter, the binary arguments refuse it in a
    topic: a ValueError in this process, not a server error after the append was sent."""
    from uuid import uuid4

    from eventsourcing.persistence import StoredEvent

    from ledger.store.postgres.values import append_parameters

    forged = StoredEvent(originator_id=uuid4(), originator_version=1, topic="ledger\x00x",
                         state=b"{}")
    with pytest.raises(ValueError, match="NUL"):
        append_parameters([forged], [])
