"""Snapshots are a cache of what the events say, never a way around them (on both stores).

Each test builds a stock item past the snapshot interval (20 here: a receipt of 115 units at an
outlet that forbids negative stock, then 20 sales of one: version 22, 95 units left, a signed
snapshot at version 20 holding 97), then writes the snapshot table as someone who can write it
could (the table's owner here; the application role in `test_append_only_role.py`), opens a
fresh till (nothing cached, so it loads from the store) to see what it decides on, and runs
the auditor's snapshot check.

A forger knows everything in the store and in this code: the formula, the positions, the key
id of every snapshot. What it does not have is the tills' key, which is in a file outside the
database (`ledger.store.snapshot_keys`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import secrets
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from click.testing import CliRunner
from eventsourcing.application import project_aggregate
from eventsourcing.persistence import StoredEvent
from hypothesis import HealthCheck, given, settings

from cli.main import main as ledger_cli
from ledger.app.service import Ledger
from ledger.app.snapshot_audit import verify_snapshots
from ledger.domain import identity
from ledger.domain.errors import InsufficientStock
from ledger.domain.stock_item import StockItem
from ledger.store import application as store_application
from ledger.store.application import LedgerApplication
from ledger.store.snapshot_keys import SNAPSHOT_KEY_VARIABLE, SnapshotKey, create_key, read_key
from ledger.store.snapshots import StockItemSnapshot, signed_content
from tests.snapshotting import holding
from tests.strategies import Step, apply_history, histories

OUTLET = "NAIROBI-1"
SKU = "AMOX-500"
ITEM = identity.stock_item_id(OUTLET, SKU)
INTERVAL = 20
SNAPSHOT_AT = 20
HEAD_VERSION = 22
LOGGER = "ledger.store"


@pytest.fixture(autouse=True)
def short_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_application, "SNAPSHOT_INTERVAL", INTERVAL)


def build_history(ledger: Ledger, sku: str = SKU, prefix: str = "S") -> None:
    """Version 22: 95 units of B1 left, a snapshot at version 20 (97 units)."""
    ledger.set_outlet_policy(outlet=OUTLET, allow_negative=False)
    ledger.receive(outlet=OUTLET, sku=sku, batch_id="B1", quantity=115,
                   expires_on="2030-01-31", unit_cost="0.42")
    for n in range(20):
        ledger.sell(outlet=OUTLET, sale_id=f"{prefix}{n}", lines=[(sku, 1)])
    item = ledger.stock_item(OUTLET, sku)
    assert (item.version, item.on_hand) == (HEAD_VERSION, 95)


def snapshot_rows(app: LedgerApplication) -> list[StoredEvent]:
    assert app.snapshots is not None
    return list(app.snapshots.recorder.select_events(ITEM))


def decoded(app: LedgerApplication, version: int) -> StockItemSnapshot:
    assert app.snapshots is not None
    stored = next(s for s in snapshot_rows(app) if s.originator_version == version)
    snapshot = app.snapshots.mapper.to_domain_event(stored)
    assert isinstance(snapshot, StockItemSnapshot)
    return snapshot


def write_snapshot(app: LedgerApplication, snapshot: StockItemSnapshot, *,
                   insert: bool) -> None:
    """Store `snapshot` as the library would encode it: over the row at its version, or as
    a new row, with the table owner's rights."""
    assert app.snapshots is not None
    stored = app.snapshots.mapper.to_stored_event(snapshot)
    recorder: Any = app.snapshots.recorder
    sqlite = app.config.backend == "sqlite"
    table = (recorder.events_table_name if sqlite
             else f'"{recorder.datastore.schema}"."{recorder.events_table_name}"')
    p = "?" if sqlite else "%s"
    stream = snapshot.originator_id.hex if sqlite else snapshot.originator_id
    with recorder.datastore.transaction(commit=True) as cursor:
        if insert:
            cursor.execute(f"INSERT INTO {table} (originator_id, originator_version, topic, "
                           f"state) VALUES ({p}, {p}, {p}, {p})",
                           (stream, snapshot.originator_version, stored.topic, stored.state))
        else:
            cursor.execute(f"UPDATE {table} SET state = {p} WHERE originator_id = {p} "
                           f"AND originator_version = {p}",
                           (stored.state, stream, snapshot.originator_version))
    assert decoded(app, snapshot.originator_version) == snapshot


def tills_key() -> SnapshotKey:
    """The key the test run's tills sign with (the forger does not have it)."""
    key = read_key(Path(os.environ[SNAPSHOT_KEY_VARIABLE]))
    assert key is not None
    return key


FORGER_KEY = SnapshotKey(secrets.token_hex(32).encode())


def mac_by(how: str, snapshot: StockItemSnapshot) -> dict[str, Any]:
    """The key id and MAC a forger can give `snapshot` (a genuine one's key id is public)."""
    assert snapshot.position is not None
    content = signed_content(snapshot.originator_id, snapshot.originator_version,
                             snapshot.position, snapshot.topic, snapshot.state)
    genuine_id = tills_key().key_id
    if how == "its own key":
        return {"key_id": genuine_id, "mac": FORGER_KEY.mac(content)}
    if how == "its own key, named":
        return {"key_id": FORGER_KEY.key_id, "mac": FORGER_KEY.mac(content)}
    if how == "an unkeyed digest":
        return {"key_id": genuine_id, "mac": hashlib.sha256(content).hexdigest()}
    assert how == "the genuine MAC"
    return {}


FORGERIES = ["its own key", "its own key, named", "an unkeyed digest", "the genuine MAC"]


class EventsRead:
    """Where a till starts reading the stock item's events, each time it reads them, and how
    many it reads."""

    def __init__(self, app: LedgerApplication, monkeypatch: pytest.MonkeyPatch) -> None:
        self.starts: list[int] = []
        self.count = 0
        events_from = app.events_from

        def counted(starts: Any, lte: int | None = None) -> Any:
            self.starts += [version for stream, version in starts if stream == ITEM]
            rows = events_from(starts, lte)
            self.count += sum(1 for _, stored in rows if stored.originator_id == ITEM)
            return rows

        monkeypatch.setattr(app, "events_from", counted)


@pytest.fixture
def history(ledger: Ledger) -> Ledger:
    build_history(ledger)
    assert [s.originator_version for s in snapshot_rows(ledger.application)] == [SNAPSHOT_AT]
    return ledger


@pytest.fixture
def till(history: Ledger, store_url: str) -> Iterator[Callable[[], Ledger]]:
    """Opens another till (nothing cached, so it loads from the store), once the test has
    changed the snapshot table."""
    opened: list[Ledger] = []

    def open_till() -> Ledger:
        opened.append(Ledger.open(store_url))
        return opened[-1]

    yield open_till
    for ledger in opened:
        ledger.close()


def refused_sale(till: Ledger, caplog: pytest.LogCaptureFixture) -> tuple[int, str]:
    """Try the 5,000-unit sale; the units available it was refused with, and the log."""
    with caplog.at_level(logging.INFO, logger=LOGGER), \
            pytest.raises(InsufficientStock) as refused:
        till.sell(outlet=OUTLET, sale_id="BIG", lines=[(SKU, 5000)])
    return refused.value.available, caplog.text


def cli_verify(store_url: str) -> tuple[int, dict[str, Any]]:
    done = CliRunner().invoke(ledger_cli, ["--db", store_url, "audit", "verify", "--json"])
    return done.exit_code, json.loads(done.stdout)


# --------------------------------------------------------------------------- the attacks


def test_an_edited_snapshot_cannot_sell_stock_the_events_do_not_give(
        history: Ledger, till: Callable[[], Ledger], store_url: str,
        caplog: pytest.LogCaptureFixture) -> None:
    """The 5,000-of-95 attack: the latest snapshot's row edited to hold 5,002 units (5,000
    after the two sales since). The sale is decided on the events: refused, 95 available;
    `audit verify` fails naming the stream, the version and the batch."""
    app = history.application
    snapshot = decoded(app, SNAPSHOT_AT)
    write_snapshot(app, dataclasses.replace(snapshot, state=holding(snapshot, 5002)),
                   insert=False)
    available, log = refused_sale(till(), caplog)
    assert available == 95
    assert f"snapshot of stream {ITEM} at version {SNAPSHOT_AT} not used" in log
    assert "MAC does not match" in log
    (finding,) = verify_snapshots(till().application).findings
    assert finding.check == "snapshots"
    assert f"{ITEM} at version {SNAPSHOT_AT}" in finding.message
    assert "batch 'B1' quantity: snapshot 5002, events 97" in finding.message
    code, report = cli_verify(store_url)
    assert code == 1 and not report["ok"] and report["snapshots"] == 1
    assert [f["check"] for f in report["findings"]] == ["snapshots"]


@pytest.mark.parametrize("forger_signs_with", FORGERIES)
def test_a_well_formed_forgery_at_the_head_is_refused_and_fails_verify(
        history: Ledger, till: Callable[[], Ledger], store_url: str, forger_signs_with: str,
        caplog: pytest.LogCaptureFixture) -> None:
    """The forger inserts a snapshot at the stream's current version, bound to the true
    position of the event there, every field well formed, claiming 5,000 units, and signs
    it as well as it can without the tills' key. No till uses it; `audit verify` fails."""
    app = history.application
    position = app.position_of(ITEM, HEAD_VERSION)
    genuine = decoded(app, SNAPSHOT_AT)
    forged = dataclasses.replace(genuine, originator_version=HEAD_VERSION, position=position,
                                 state=holding(genuine, 5000))
    forged = dataclasses.replace(forged, **mac_by(forger_signs_with, forged))
    write_snapshot(app, forged, insert=True)

    available, log = refused_sale(till(), caplog)
    assert available == 95
    assert f"snapshot of stream {ITEM} at version {HEAD_VERSION} not used" in log
    expected = ("signed under another key" if forger_signs_with == "its own key, named"
                else "MAC does not match")
    assert expected in log
    (finding,) = verify_snapshots(till().application).findings
    assert finding.position == position
    assert f"{ITEM} at version {HEAD_VERSION}" in finding.message
    assert "batch 'B1' quantity: snapshot 5000, events 95" in finding.message
    code, report = cli_verify(store_url)
    assert code == 1 and report["snapshots"] == 2, report
    assert [f["position"] for f in report["findings"]] == [position]


def test_a_forged_snapshot_above_the_stream_is_ignored_and_reported(
        history: Ledger, till: Callable[[], Ledger], caplog: pytest.LogCaptureFixture) -> None:
    """A snapshot inserted at version 50 (the stream is at 22), signed under the tills' own
    key: it still names no event, so it is not used."""
    app = history.application
    genuine = decoded(app, SNAPSHOT_AT)
    forged = dataclasses.replace(genuine, originator_version=50, state=holding(genuine, 5000))
    assert forged.position is not None
    content = signed_content(ITEM, 50, forged.position, forged.topic, forged.state)
    write_snapshot(app, dataclasses.replace(forged, mac=tills_key().mac(content)), insert=True)
    fresh = till()
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        item = fresh.stock_item(OUTLET, SKU)
    assert (item.version, item.on_hand) == (HEAD_VERSION, 95)
    assert f"{ITEM} at version 50 not used" in caplog.text
    assert "the stream has no event at its version" in caplog.text
    (finding,) = verify_snapshots(fresh.application).findings
    assert f"{ITEM} at version 50" in finding.message
    assert "no event at version 50" in finding.message


def test_a_snapshot_bound_to_another_position_is_refused(
        history: Ledger, till: Callable[[], Ledger], monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """Signed under the tills' key, its state true, but bound to a position that is not the
    event's at its version (taken in another store, say): not a snapshot of these events."""
    app = history.application
    genuine = decoded(app, SNAPSHOT_AT)
    assert genuine.position is not None
    elsewhere = genuine.position + 7
    content = signed_content(ITEM, SNAPSHOT_AT, elsewhere, genuine.topic, genuine.state)
    write_snapshot(app, dataclasses.replace(genuine, position=elsewhere,
                                            mac=tills_key().mac(content)), insert=False)
    fresh = till()
    read = EventsRead(fresh.application, monkeypatch)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert fresh.stock_item(OUTLET, SKU).on_hand == 95
    assert f"it records position {elsewhere}, but the event at its version is at position " \
           f"{genuine.position}" in caplog.text
    # Read from the snapshot's version, which shows it is not of these events, then all.
    assert read.starts == [SNAPSHOT_AT, 1]
    (finding,) = verify_snapshots(fresh.application).findings
    assert f"it records position {elsewhere}" in finding.message


def test_an_edited_mac_is_refused_but_a_true_state_verifies(
        history: Ledger, till: Callable[[], Ledger], monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """The state is true, its MAC was changed: the till replays and says so. The auditor
    judges what the snapshot says, which is true: no finding."""
    app = history.application
    write_snapshot(app, dataclasses.replace(decoded(app, SNAPSHOT_AT), mac="0" * 64),
                   insert=False)
    fresh = till()
    read = EventsRead(fresh.application, monkeypatch)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert fresh.stock_item(OUTLET, SKU).on_hand == 95
    assert f"{ITEM} at version {SNAPSHOT_AT} not used" in caplog.text
    assert "MAC does not match" in caplog.text
    assert (read.starts, read.count) == ([1], HEAD_VERSION)  # none skipped on its word
    report = verify_snapshots(fresh.application)
    assert (report.snapshots, report.findings) == (1, [])


def test_a_legacy_snapshot_is_replayed_not_trusted(
        history: Ledger, till: Callable[[], Ledger], monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """A snapshot as older code wrote it (no position, key or MAC) is not used: the load
    replays every event. Its state is true, so verify passes; edited, verify fails."""
    app = history.application
    legacy = dataclasses.replace(decoded(app, SNAPSHOT_AT), position=None, key_id=None,
                                 mac=None)
    write_snapshot(app, legacy, insert=False)
    fresh = till()
    read = EventsRead(fresh.application, monkeypatch)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        assert fresh.stock_item(OUTLET, SKU).on_hand == 95
    assert f"{ITEM} at version {SNAPSHOT_AT} not used" in caplog.text
    assert "written before snapshots were signed" in caplog.text
    assert (read.starts, read.count) == ([1], HEAD_VERSION)
    report = verify_snapshots(fresh.application)
    assert (report.snapshots, report.unsigned, report.findings) == (1, 1, [])

    write_snapshot(app, dataclasses.replace(legacy, state=holding(legacy, 5002)), insert=False)
    available, _ = refused_sale(till(), caplog)
    assert available == 95
    (finding,) = verify_snapshots(fresh.application).findings
    assert "batch 'B1' quantity: snapshot 5002, events 97" in finding.message


def test_a_good_snapshot_is_used_and_verifies(
        history: Ledger, till: Callable[[], Ledger], monkeypatch: pytest.MonkeyPatch,
        store_url: str, caplog: pytest.LogCaptureFixture) -> None:
    genuine = decoded(history.application, SNAPSHOT_AT)
    assert genuine.key_id == tills_key().key_id
    assert genuine.position == history.application.position_of(ITEM, SNAPSHOT_AT)
    fresh = till()
    read = EventsRead(fresh.application, monkeypatch)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        item = fresh.stock_item(OUTLET, SKU)
    assert (item.version, item.on_hand) == (HEAD_VERSION, 95)
    # The event at the snapshot's version (to check its position), and those after it.
    assert (read.starts, read.count) == ([SNAPSHOT_AT], HEAD_VERSION - SNAPSHOT_AT + 1)
    assert "snapshot" not in caplog.text
    report = verify_snapshots(fresh.application)
    assert (report.snapshots, report.unsigned, report.findings) == (1, 0, [])
    code, verified = cli_verify(store_url)
    assert (code, verified["ok"], verified["snapshots"]) == (0, True, 1)
    sold = fresh.sell(outlet=OUTLET, sale_id="ALL", lines=[(SKU, 95)])
    assert sold.lines[0].quantity == 95


def test_a_till_with_another_key_replays_and_signs_its_own(
        history: Ledger, till: Callable[[], Ledger], monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Tills share snapshots only if they share the key: one given another key file replays
    the events, and the snapshots it writes are its own."""
    tills, other_key = tills_key(), create_key(tmp_path / "other.key")
    monkeypatch.setenv(SNAPSHOT_KEY_VARIABLE, str(tmp_path / "other.key"))
    other = till()
    read = EventsRead(other.application, monkeypatch)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert other.stock_item(OUTLET, SKU).on_hand == 95
    assert "signed under another key" in caplog.text
    assert (read.starts, read.count) == ([1], HEAD_VERSION)
    for n in range(INTERVAL):
        other.sell(outlet=OUTLET, sale_id=f"O{n}", lines=[(SKU, 1)])
    theirs = decoded(other.application, 2 * INTERVAL)
    assert theirs.key_id == other_key.key_id != tills.key_id


def test_a_till_without_a_usable_key_writes_no_snapshot_and_replays(
        ledger: Ledger, store_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    """A key file too short to be a key: logged once, naming it; the till sells, writes no
    snapshot, and its loads replay the events."""
    short = tmp_path / "short.key"
    short.write_text("abc\n")
    monkeypatch.setenv(SNAPSHOT_KEY_VARIABLE, str(short))
    with Ledger.open(store_url) as keyless, \
            caplog.at_level(logging.WARNING, logger=LOGGER):
        build_history(keyless)
    assert caplog.text.count(f"the snapshot key is unusable: {short} holds fewer than") == 1
    assert snapshot_rows(ledger.application) == []


def test_the_check_costs_no_query_of_its_own_cold_or_warm(
        history: Ledger, till: Callable[[], Ledger], monkeypatch: pytest.MonkeyPatch) -> None:
    """Cold: the events of every stream a command loads are read in one query, from each
    snapshot's version, so the position comes with them; the snapshots were checked in the
    process. Warm (cached): no snapshot is read at all."""
    build_history(history, sku="PARA-250", prefix="P")
    fresh = till()
    app = fresh.application
    para = identity.stock_item_id(OUTLET, "PARA-250")
    assert app.snapshots is not None
    queries: list[list[tuple[Any, int]]] = []
    snapshot_reads: list[Any] = []
    events_from = app.events_from
    latest_snapshots = app.latest_snapshots

    def counted(starts: Any, lte: int | None = None) -> Any:
        queries.append(list(starts))
        return events_from(starts, lte)

    def counted_snapshots(ids: Any, lte: int | None = None) -> Any:
        snapshot_reads.extend(ids)
        return latest_snapshots(ids, lte)

    def no_lookup(keys: Any) -> Any:
        raise AssertionError(f"a load looked up positions {keys}")

    monkeypatch.setattr(app, "events_from", counted)
    monkeypatch.setattr(app, "positions_of", no_lookup)
    monkeypatch.setattr(app, "latest_snapshots", counted_snapshots)
    fresh.sell(outlet=OUTLET, sale_id="TWO", lines=[(SKU, 1), ("PARA-250", 1)])
    assert [sorted((str(i), v) for i, v in q if i in (ITEM, para)) for q in queries
            if any(i in (ITEM, para) for i, _ in q)] == [
        sorted([(str(ITEM), SNAPSHOT_AT), (str(para), SNAPSHOT_AT)])]
    cold_queries, cold_reads = len(queries), len(snapshot_reads)
    assert {ITEM, para} <= set(snapshot_reads)
    fresh.sell(outlet=OUTLET, sale_id="WARM", lines=[(SKU, 1), ("PARA-250", 1)])
    assert not {ITEM, para} & set(snapshot_reads[cold_reads:])
    assert not [q for q in queries[cold_queries:] if any(i in (ITEM, para) for i, _ in q)]


# --------------------------------------------------------------------------- every state


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.function_scoped_fixture])
@given(history=histories())
def test_every_snapshot_a_till_takes_is_signed_believed_and_true(history: list[Step]) -> None:
    """Whatever a history makes of its stock items (batches with and without expiry or cost,
    expired, counted, in shortfall, with a reorder level), the snapshot a till takes of each
    (here after every command) is one the next till believes, and it says what the events
    say: the encoding signed is the one a load checks, after the store's round trip."""
    with tempfile.TemporaryDirectory() as directory, \
            mock.patch.object(store_application, "SNAPSHOT_INTERVAL", 1):
        url = f"sqlite:///{directory}/l.sqlite3"
        with Ledger.open(url, create_tables=True) as ledger:
            apply_history(ledger, history)
        with Ledger.open(url) as fresh:
            app = fresh.application
            key = app.snapshot_keys.for_loading()
            streams = [opened.originator_id for opened in app.stock_items_opened()]
            signed = app.checked_repository.signed_snapshots(streams)
            for stream in streams:
                snapshot = signed[stream]  # every one: its MAC holds under the till's key
                assert snapshot.signature_problem(key) is None
                assert snapshot.position == app.position_of(stream, snapshot.originator_version)
                loaded = app.checked_repository.load([stream])[stream]
                replayed = project_aggregate(None, app.events.get(stream))
                assert isinstance(loaded, StockItem) and isinstance(replayed, StockItem)
                assert StockItemSnapshot.state_of(loaded) == StockItemSnapshot.state_of(replayed)
                assert loaded.version == replayed.version
            report = verify_snapshots(app)
            assert report.findings == [] and report.snapshots >= len(streams)
