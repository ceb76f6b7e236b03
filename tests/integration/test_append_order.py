"""The PostgreSQL append without a table lock: readers stop below an append still in flight,
a read check holds until the append commits, and the hash chain is sealed after commit,
continuing the inline links of rows recorded by earlier versions."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from eventsourcing.persistence import IntegrityError, PersistenceError, StoredEvent

from ledger.app.audit import verify_chain
from ledger.app.service import Ledger
from ledger.domain.outlet import Outlet
from ledger.store.application import LedgerApplication
from ledger.store.hash_chain import GENESIS, chain_hash
from ledger.store.postgres.recorder import (
    INSERTION_SORT_AT_MOST,
    READ_CHECK_SALT,
    ChainedPostgresRecorder,
)
from projections.runner import ReadModels
from tests.appending import append_in

pytestmark = pytest.mark.postgres


@pytest.fixture
def app(postgres_url: str) -> Iterator[LedgerApplication]:
    with Ledger.open(postgres_url, create_tables=True) as ledger:
        yield ledger.application


def _recorder(app: LedgerApplication) -> ChainedPostgresRecorder:
    recorder = app.recorder
    assert isinstance(recorder, ChainedPostgresRecorder)
    return recorder


def _outlet_events(app: LedgerApplication, name: str) -> list[StoredEvent]:
    return [app.mapper.to_stored_event(e) for e in Outlet.open(name, "tests").collect_events()]


def test_readers_stop_below_an_append_still_in_flight(app: LedgerApplication,
                                                      postgres_url: str) -> None:
    recorder = _recorder(app)
    before = recorder.insert_events(_outlet_events(app, "BEFORE"))
    assert before is not None
    with psycopg.connect(postgres_url) as held:
        in_flight = append_in(held, app, _outlet_events(app, "HELD"))
        after = recorder.insert_events(_outlet_events(app, "AFTER"))
        assert after is not None and min(after) > max(in_flight)
        # Committed, but above an append that may still commit below it.
        assert recorder.horizon() == min(in_flight) - 1
        assert recorder.max_notification_id() == max(before)
        assert [n.id for n in recorder.select_notifications(1, 100)] == before
        held.commit()
    assert recorder.max_notification_id() == max(after)
    assert [n.id for n in recorder.select_notifications(1, 100)] == before + in_flight + after


def test_a_read_check_waits_for_the_append_that_moves_the_stream(
        app: LedgerApplication, postgres_url: str) -> None:
    recorder = _recorder(app)
    outlet = Outlet.open("CHECKED", "tests")
    recorder.insert_events([app.mapper.to_stored_event(e) for e in outlet.collect_events()])
    read_at = outlet.version
    outlet.set_policy("fifo", True, "tests")
    moved = [app.mapper.to_stored_event(e) for e in outlet.collect_events()]
    outcome: list[BaseException | None] = []

    def sale_that_read_the_old_policy() -> None:
        try:
            recorder.insert_events(_outlet_events(app, f"OTHER-{uuid.uuid4().hex[:6]}"),
                                   expect_versions=[(outlet.id, read_at)])
            outcome.append(None)
        except BaseException as error:
            outcome.append(error)

    with psycopg.connect(postgres_url) as mover:
        append_in(mover, app, moved)  # not committed yet
        checker = threading.Thread(target=sale_that_read_the_old_policy, daemon=True)
        checker.start()
        checker.join(timeout=1.0)
        assert checker.is_alive(), "the read check did not wait for the uncommitted move"
        mover.commit()
    checker.join(timeout=10)
    assert len(outcome) == 1 and isinstance(outcome[0], IntegrityError), outcome


def _held_read_check_locks(connection: psycopg.Connection[Any], table: str,
                           streams: list[uuid.UUID]) -> dict[uuid.UUID, list[str]]:
    """The read-check advisory locks this session holds on `streams`: their modes."""
    rows = connection.execute(
        "SELECT s.id, l.mode FROM unnest(%s::uuid[]) AS s(id) JOIN pg_locks l "
        "ON l.locktype = 'advisory' AND l.objsubid = 1 AND l.pid = pg_backend_pid() "
        "AND ((l.classid::bigint << 32) | l.objid::bigint) = "
        "    uuid_hash_extended(s.id, %s) # %s::regclass::oid::bigint",
        (streams, READ_CHECK_SALT, table)).fetchall()
    held: dict[uuid.UUID, list[str]] = {}
    for stream, mode in rows:
        held.setdefault(stream, []).append(mode)
    return held


@pytest.mark.parametrize("order", ["as given", "reversed"])
@pytest.mark.parametrize("each", [1, INSERTION_SORT_AT_MOST])  # sorted by insertion, by query
def test_an_append_locks_streams_read_shared_and_streams_written_exclusive(
        app: LedgerApplication, postgres_url: str, order: str, each: int) -> None:
    recorder = _recorder(app)
    outlets = [Outlet.open(f"LOCKED-{i}", "tests") for i in range(3 * each)]
    written, both, read_only = outlets[:each], outlets[each:2 * each], outlets[2 * each:]
    for outlet in outlets:
        recorder.insert_events([app.mapper.to_stored_event(e) for e in outlet.collect_events()])
    for outlet in written + both:
        outlet.set_policy("fifo", True, "tests")
    events = [app.mapper.to_stored_event(e)
              for outlet in written + both for e in outlet.collect_events()]
    expected = [(outlet.id, 1) for outlet in both + read_only]
    if order == "reversed":
        events, expected = events[::-1], expected[::-1]
    with psycopg.connect(postgres_url) as connection:
        connection.execute(recorder.append_statement(events, expected), prepare=False)
        held = _held_read_check_locks(connection, recorder._qualified_table,
                                      [outlet.id for outlet in outlets])
        total = connection.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 1 "
            "AND pid = pg_backend_pid()").fetchone()
        connection.rollback()
    # A stream both read and written is locked once, exclusively; nothing else is locked.
    assert held == {**{outlet.id: ["ExclusiveLock"] for outlet in written + both},
                    **{outlet.id: ["ShareLock"] for outlet in read_only}}
    assert total == (3 * each,)


def test_the_chain_continues_from_rows_linked_inline(app: LedgerApplication,
                                                     postgres_url: str) -> None:
    recorder = _recorder(app)
    table = f'"{recorder.datastore.schema}"."{recorder.events_table_name}"'
    previous = GENESIS
    with psycopg.connect(postgres_url, autocommit=True) as connection:
        # As an earlier version recorded them: positions in order, each with its link inline.
        for event in _outlet_events(app, "LEGACY-1") + _outlet_events(app, "LEGACY-2"):
            position = connection.execute(
                f"SELECT nextval(pg_get_serial_sequence('{table}', 'notification_id'))"
            ).fetchone()[0]  # type: ignore[index]
            previous = chain_hash(previous, position, event.originator_id,
                                  event.originator_version, event.topic, event.state)
            connection.execute(
                f"INSERT INTO {table} (originator_id, originator_version, topic, state, "
                "notification_id, chain_hash) VALUES (%s, %s, %s, %s, %s, %s)",
                (event.originator_id, event.originator_version, event.topic, event.state,
                 position, previous))
    appended = recorder.insert_events(_outlet_events(app, "NEW"))
    assert appended is not None
    report = verify_chain(app)
    assert report.findings == []
    assert report.head_position == max(appended)
    assert recorder.seal() == max(appended)  # nothing left to seal
    with psycopg.connect(postgres_url, autocommit=True) as connection:
        connection.execute(f"UPDATE {table} SET state = state || ' '::bytea "
                           "WHERE notification_id = %s", (max(appended),))
    assert verify_chain(app).first_broken_position == max(appended)


def test_a_row_committed_below_the_sealed_head_is_the_one_finding(
        app: LedgerApplication, postgres_url: str) -> None:
    recorder = _recorder(app)
    table = f'"{recorder.datastore.schema}"."{recorder.events_table_name}"'
    recorder.insert_events(_outlet_events(app, "FIRST"))
    with psycopg.connect(postgres_url) as rogue:  # as the owner, around the append function
        late = rogue.execute(
            f"INSERT INTO {table} (originator_id, originator_version, topic, state) "
            "VALUES (%s, 1, 'rogue', '') RETURNING notification_id",
            (uuid.uuid4(),)).fetchone()[0]  # type: ignore[index]
        after = recorder.insert_events(_outlet_events(app, "AFTER"))
        assert after is not None and min(after) > late
        recorder.seal_all()
        rogue.commit()
    report = verify_chain(app)
    # Blamed alone, twice: it has no link, and (inserted around the append) no digest either.
    assert [(f.check, f.position) for f in report.findings] == [("digest", late),
                                                                ("hash_chain", late)]
    assert report.head_position == max(after)


def test_stores_in_other_schemas_have_horizons_of_their_own(app: LedgerApplication,
                                                            postgres_url: str) -> None:
    recorder = _recorder(app)
    recorder.insert_events(_outlet_events(app, "HERE"))
    with psycopg.connect(postgres_url, autocommit=True) as connection:
        connection.execute("CREATE SCHEMA elsewhere")
    with Ledger.open(f"{postgres_url}?schema=elsewhere", create_tables=True) as other, \
            psycopg.connect(postgres_url) as held:
        append_in(held, other.application, _outlet_events(other.application, "THERE"))
        assert _recorder(other.application).horizon() == 0  # its own append is in flight
        assert recorder.horizon() == recorder.max_notification_id() == 1


def test_the_sequence_never_caches_positions(app: LedgerApplication, postgres_url: str) -> None:
    recorder = _recorder(app)
    table = f'"{recorder.datastore.schema}"."{recorder.events_table_name}"'
    with psycopg.connect(postgres_url, autocommit=True) as connection:
        found = connection.execute(
            f"SELECT pg_get_serial_sequence('{table}', 'notification_id')").fetchone()
        assert found is not None
        sequence = found[0]
        cache = f"SELECT seqcache FROM pg_sequence WHERE seqrelid = '{sequence}'::regclass"
        connection.execute(f"ALTER SEQUENCE {sequence} CACHE 10")
        assert connection.execute(cache).fetchone() == (10,)
        Ledger.open(postgres_url, create_tables=True).close()
        assert connection.execute(cache).fetchone() == (1,)


def test_a_reader_refuses_to_claim_past_a_horizon_that_went_back(
        app: LedgerApplication, postgres_url: str) -> None:
    recorder = _recorder(app)
    appended = recorder.insert_events(_outlet_events(app, "ONE") + _outlet_events(app, "TWO"))
    assert appended is not None
    head = recorder.max_notification_id()
    assert head == max(appended)
    table = f'"{recorder.datastore.schema}"."{recorder.events_table_name}"'
    with psycopg.connect(postgres_url, autocommit=True) as connection:
        connection.execute(
            f"SELECT setval(pg_get_serial_sequence('{table}', 'notification_id'), 1, false)")
    with pytest.raises(PersistenceError, match="horizon"):
        ReadModels(app).read(1, stop=head)


def test_an_append_that_fails_while_taking_positions_releases_the_allocation_lock(
        app: LedgerApplication, postgres_url: str) -> None:
    """The positions are taken under a session lock (a transaction lock would last through
    the commit). A caller of the append function whose statement fails while holding it
    (here the sequence reaches its maximum) must not keep it: every append of every session
    would wait on it until that session ends."""
    from ledger.store.postgres.recorder import ALLOCATION_LOCK

    recorder = _recorder(app)
    recorder.insert_events(_outlet_events(app, "FIRST"))
    table = f'"{recorder.datastore.schema}"."{recorder.events_table_name}"'
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        sequence = f"pg_get_serial_sequence('{table}', 'notification_id')"
        admin.execute(f"DO $$ BEGIN EXECUTE format('ALTER SEQUENCE %s MAXVALUE %s', {sequence}, "
                      f"(SELECT last_value + 1 FROM pg_sequences WHERE format('%I.%I', "
                      f"schemaname, sequencename)::regclass = {sequence}::regclass)); END $$")
        with psycopg.connect(postgres_url, autocommit=True) as direct_caller:
            two = _outlet_events(app, "SECOND") + _outlet_events(app, "THIRD")
            with pytest.raises(psycopg.errors.SequenceGeneratorLimitExceeded):
                append_in(direct_caller, app, two)
            key = direct_caller.execute(
                f"SELECT {ALLOCATION_LOCK}::bigint # {table!r}::regclass::oid::bigint").fetchone()
            assert key is not None
            held = direct_caller.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
                "AND pid = pg_backend_pid()").fetchone()
            assert held == (0,)
            with psycopg.connect(postgres_url, autocommit=True) as probe:
                taken = probe.execute("SELECT pg_try_advisory_lock(%s)", key).fetchone()
                assert taken == (True,)
        admin.execute(f"DO $$ BEGIN EXECUTE format('ALTER SEQUENCE %s NO MAXVALUE', "
                      f"{sequence}); END $$")
    assert recorder.insert_events(_outlet_events(app, "AFTER"))
