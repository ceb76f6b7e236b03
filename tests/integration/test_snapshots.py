"""Snapshots are a cache of what the events say, never a way around them (on both stores).

Each test builds a stock item with a history past the snapshot interval (a receipt of 295
units, then 200 sales of one: version 202, 95 units left, a snapshot at version 200 holding
97), then tampers with the snapshot table as someone with write access to it could, and opens
a fresh till (an empty cache, so it loads from the store) to see what it decides on; and runs
the auditor's snapshot check.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from typing import Any
from uuid import UUID

import pytest
from eventsourcing.persistence import StoredEvent

from ledger.app import audit
from ledger.app.service import Ledger
from ledger.domain import identity
from ledger.domain.errors import InsufficientStock
from ledger.store.application import SNAPSHOT_INTERVAL, LedgerApplication

OUTLET = "NAIROBI-1"
SKU = "AMOX-500"
ITEM = identity.stock_item_id(OUTLET, SKU)
LOGGER = "ledger.store"


def build_history(ledger: Ledger) -> None:
    """Version 202: 95 units of B1 left, a snapshot at version 200 (97 units)."""
    ledger.receive(outlet=OUTLET, sku=SKU, batch_id="B1", quantity=295)
    for n in range(200):
        ledger.sell(outlet=OUTLET, sale_id=f"S{n}", lines=[(SKU, 1)])
    assert ledger.stock_item(OUTLET, SKU).version == 202
    assert [s.originator_version for s in snapshot_rows(ledger.application)] == [200]


def snapshot_rows(app: LedgerApplication) -> list[StoredEvent]:
    assert app.snapshots is not None
    return list(app.snapshots.recorder.select_events(ITEM))


def _table(app: LedgerApplication) -> tuple[Any, str, str]:
    assert app.snapshots is not None
    recorder: Any = app.snapshots.recorder
    if app.config.backend == "sqlite":
        return recorder, recorder.events_table_name, "?"
    return recorder, f'"{recorder.datastore.schema}"."{recorder.events_table_name}"', "%s"


def rewrite_snapshot(app: LedgerApplication, version: int, change: Callable[[dict[str, Any]], None],
                     *, insert_at: int | None = None) -> None:
    """Change the stored snapshot at `version` (its JSON, as the library wrote it), in place or
    (with `insert_at`) as a new row at another version, as the table's owner could."""
    stored = next(s for s in snapshot_rows(app) if s.originator_version == version)
    data = json.loads(stored.state)
    change(data)
    state = json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()
    recorder, table, p = _table(app)
    item = ITEM.hex if app.config.backend == "sqlite" else ITEM
    with recorder.datastore.transaction(commit=True) as cursor:
        if insert_at is None:
            cursor.execute(f"UPDATE {table} SET state = {p} WHERE originator_id = {p} "
                           f"AND originator_version = {p}", (state, item, version))
        else:
            cursor.execute(f"INSERT INTO {table} (originator_id, originator_version, topic, "
                           f"state) VALUES ({p}, {p}, {p}, {p})",
                           (item, insert_at, stored.topic, state))


def hold(quantity: int) -> Callable[[dict[str, Any]], None]:
    def change(data: dict[str, Any]) -> None:
        data["state"]["batches"][0][1] = quantity
    return change


def rebind(data: dict[str, Any], originator_id: UUID, version: int) -> None:
    """Recompute the digest over the (changed) snapshot with the public formula, as anyone
    who can write the table can."""
    from ledger.store.snapshots import snapshot_digest

    data["digest"] = snapshot_digest(originator_id, version, data["position"], data["topic"],
                                     _decoded_state(data["state"]))


def _decoded_state(state: dict[str, Any]) -> dict[str, Any]:
    from datetime import datetime

    return {key: datetime.fromisoformat(value["_data_"])
            if isinstance(value, dict) and value.get("_type_") == "datetime_iso" else value
            for key, value in state.items()}


class EventsRead:
    """Counts the events (not snapshots) a till reads per stream."""

    def __init__(self, app: LedgerApplication, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        recorder = app.recorder
        select = recorder.select_events

        def counted(*args: Any, **kwargs: Any) -> Any:
            rows = select(*args, **kwargs)
            self.count += len(rows)
            return rows

        monkeypatch.setattr(recorder, "select_events", counted)


@pytest.fixture
def history(ledger: Ledger) -> Ledger:
    build_history(ledger)
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


def _findings(app: LedgerApplication) -> list[audit.Finding]:
    return list(audit.verify_snapshots(app).findings)


# --------------------------------------------------------------------------- the attacks


def test_an_edited_snapshot_cannot_sell_stock_the_events_do_not_give(
        history: Ledger, till: Callable[[], Ledger], caplog: pytest.LogCaptureFixture) -> None:
    """The 5,000-of-95 attack: the latest snapshot edited to hold 5,002 units (5,000 after
    the two sales since). The sale is decided on the events: refused, available 95."""
    rewrite_snapshot(history.application, 200, hold(5002))
    fresh = till()
    with caplog.at_level(logging.WARNING, logger=LOGGER), \
            pytest.raises(InsufficientStock) as refused:
        fresh.sell(outlet=OUTLET, sale_id="BIG", lines=[(SKU, 5000)])
    assert refused.value.available == 95
    assert f"{ITEM} at version 200" in caplog.text
    assert fresh.stock_level(OUTLET, SKU).on_hand == 95
    findings = _findings(fresh.application)
    assert len(findings) == 1, findings
    message = findings[0].message
    assert f"{ITEM}" in message and "version 200" in message and "B1" in message
    assert "5002" in message and "97" in message, message


def test_a_forged_snapshot_above_the_stream_is_ignored_and_reported(
        history: Ledger, till: Callable[[], Ledger], caplog: pytest.LogCaptureFixture) -> None:
    """A snapshot inserted at version 250 (the stream is at 202), claiming 5,002 units."""
    rewrite_snapshot(history.application, 200, hold(5002), insert_at=250)
    fresh = till()
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        item = fresh.stock_item(OUTLET, SKU)
        assert (item.version, item.on_hand) == (202, 95)
        with pytest.raises(InsufficientStock) as refused:
            fresh.sell(outlet=OUTLET, sale_id="BIG", lines=[(SKU, 5000)])
    assert refused.value.available == 95
    assert f"{ITEM} at version 250" in caplog.text
    findings = _findings(fresh.application)
    assert [f"{ITEM}" in f.message and "version 250" in f.message for f in findings] == [True]
    assert "no event at version 250" in findings[0].message


def test_an_edited_digest_is_refused(
        history: Ledger, till: Callable[[], Ledger], monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """The state is true, its digest was changed: the load replays and says so."""

    def change(data: dict[str, Any]) -> None:
        data["digest"] = "0" * 64

    rewrite_snapshot(history.application, 200, change)
    fresh = till()
    read = EventsRead(fresh.application, monkeypatch)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert fresh.stock_item(OUTLET, SKU).on_hand == 95
    assert f"{ITEM} at version 200" in caplog.text and "digest" in caplog.text
    assert read.count == 202  # every event, none skipped on the snapshot's word
    findings = _findings(fresh.application)
    assert len(findings) == 1 and "digest" in findings[0].message, findings


def test_a_snapshot_bound_to_another_position_is_refused(
        history: Ledger, till: Callable[[], Ledger], monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """A well-formed digest over a position that is not the event's at the snapshot's
    version: the snapshot is not of these events."""

    def change(data: dict[str, Any]) -> None:
        data["position"] += 1
        rebind(data, ITEM, 200)

    rewrite_snapshot(history.application, 200, change)
    fresh = till()
    read = EventsRead(fresh.application, monkeypatch)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert fresh.stock_item(OUTLET, SKU).on_hand == 95
    assert f"{ITEM} at version 200" in caplog.text and "position" in caplog.text
    assert read.count == 202
    findings = _findings(fresh.application)
    assert len(findings) == 1 and "position" in findings[0].message, findings


def test_a_legacy_snapshot_is_replayed_not_trusted(
        history: Ledger, till: Callable[[], Ledger], monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """A snapshot as older code wrote it (no position, no digest) is not used: the load
    replays every event. Its state is true, so verify passes; edited, verify fails."""

    def strip(data: dict[str, Any]) -> None:
        data.pop("position", None)
        data.pop("digest", None)

    rewrite_snapshot(history.application, 200, strip)
    fresh = till()
    read = EventsRead(fresh.application, monkeypatch)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        assert fresh.stock_item(OUTLET, SKU).on_hand == 95
    assert f"{ITEM} at version 200" in caplog.text
    assert read.count == 202
    assert _findings(fresh.application) == []
    rewrite_snapshot(history.application, 200, hold(5002))
    with pytest.raises(InsufficientStock) as refused:
        till().sell(outlet=OUTLET, sale_id="BIG", lines=[(SKU, 5000)])
    assert refused.value.available == 95
    findings = _findings(fresh.application)
    assert len(findings) == 1 and "version 200" in findings[0].message, findings


def test_a_well_formed_forgery_fails_verify(history: Ledger) -> None:
    """A snapshot whose digest and position were made to fit a state the events do not give
    (the formula is public): the auditor's replay finds it."""

    def change(data: dict[str, Any]) -> None:
        hold(5002)(data)
        rebind(data, ITEM, 200)

    rewrite_snapshot(history.application, 200, change)
    findings = _findings(history.application)
    assert len(findings) == 1, findings
    assert f"{ITEM}" in findings[0].message and "version 200" in findings[0].message
    assert "5002" in findings[0].message


def test_a_good_snapshot_is_used_and_verifies(
        history: Ledger, till: Callable[[], Ledger], monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    fresh = till()
    read = EventsRead(fresh.application, monkeypatch)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        item = fresh.stock_item(OUTLET, SKU)
    assert (item.version, item.on_hand) == (202, 95)
    assert read.count == 2 <= SNAPSHOT_INTERVAL  # the events after the snapshot only
    assert "snapshot" not in caplog.text
    report = audit.verify_snapshots(fresh.application)
    assert (report.snapshots, report.findings) == (1, [])
    sold = fresh.sell(outlet=OUTLET, sale_id="ALL", lines=[(SKU, 95)])
    assert sold.lines[0].quantity == 95


def test_the_check_costs_one_lookup_per_cold_load_and_nothing_warm(
        history: Ledger, till: Callable[[], Ledger], monkeypatch: pytest.MonkeyPatch) -> None:
    """Cold: one position lookup for every snapshot a load uses, however many streams it
    loads together; warm (cached) commands: none."""
    history.receive(outlet=OUTLET, sku="PARA-250", batch_id="P1", quantity=300)
    for n in range(200):
        history.sell(outlet=OUTLET, sale_id=f"P{n}", lines=[("PARA-250", 1)])
    fresh = till()
    app = fresh.application
    lookups: list[int] = []
    positions_of = app.positions_of

    def counted(keys: Any) -> Any:
        lookups.append(len(keys))
        return positions_of(keys)

    monkeypatch.setattr(app, "positions_of", counted)
    fresh.sell(outlet=OUTLET, sale_id="TWO", lines=[(SKU, 1), ("PARA-250", 1)])
    assert lookups == [2]
    fresh.sell(outlet=OUTLET, sale_id="WARM", lines=[(SKU, 1), ("PARA-250", 1)])
    assert lookups == [2]
