"""A store written by the code before the layered layout (commit 2530a85) opens, verifies and
takes new commands under the current code, on SQLite and on PostgreSQL.

The fixture (`tests/fixtures/old_store/`, written by `tests/fixtures/make_old_store.py` with
the old code, never to be regenerated) records the old topics (`ledger.stock_item:StockItem`,
`ledger.stock_item:StockItemSnapshot`, ...) inside its hash chain; `expected.json` is what the
old code said the store held.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from eventsourcing.application import project_aggregate
from eventsourcing.utils import resolve_topic

from ledger.app import audit as ledger_audit
from ledger.app.service import Ledger
from ledger.app.snapshot_audit import verify_snapshots
from ledger.domain import identity
from ledger.domain.command_record import CommandRecord
from ledger.domain.outlet import Outlet
from ledger.domain.sale import Sale
from ledger.domain.stock_item import BatchState, StockItem
from ledger.domain.transfer import Transfer
from ledger.store.application import LedgerApplication
from ledger.store.hash_chain import select_chained
from ledger.store.snapshots import StockItemSnapshot
from projections.queries import Reads
from projections.runner import PROJECTIONS, ReadModels, create_read_models
from projections.verify import verify_read_models
from tests.databases import fresh_database
from tests.executables import ledger_executable

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "old_store"
EXPECTED: dict[str, Any] = json.loads((FIXTURE / "expected.json").read_text())
AVAILABLE_ON = date.fromisoformat(EXPECTED["available_on"])
AVAILABLE_AT = datetime.combine(AVAILABLE_ON, datetime.min.time(), UTC)

OLD_AGGREGATE_TOPICS: dict[str, type[Any]] = {
    "ledger.stock_item:StockItem": StockItem,
    "ledger.outlet:Outlet": Outlet,
    "ledger.sale:Sale": Sale,
    "ledger.transfer:Transfer": Transfer,
    "ledger.command_record:CommandRecord": CommandRecord,
}
OLD_SNAPSHOT_TOPIC = "ledger.stock_item:StockItemSnapshot"


@dataclass(frozen=True)
class OldStore:
    backend: str
    url: str

    @property
    def recorded(self) -> dict[str, Any]:
        """What the old code recorded about this copy's store in particular."""
        recorded: dict[str, Any] = EXPECTED["stores"][self.backend]
        return recorded


def restore_dump(url: str) -> None:
    dump = gzip.decompress((FIXTURE / "postgres.sql.gz").read_bytes())
    done = subprocess.run(["psql", "--no-psqlrc", "--quiet", "-v", "ON_ERROR_STOP=1",
                           "--dbname", url], input=dump, capture_output=True, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stderr.decode(errors="replace")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def old_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[OldStore]:
    """A private copy of the old store: the SQLite file copied, or the dump restored into a
    throwaway database (dropped afterwards)."""
    if request.param == "sqlite":
        path = tmp_path / "ledger.sqlite3"
        shutil.copyfile(FIXTURE / "ledger.sqlite3", path)
        yield OldStore("sqlite", f"sqlite:///{path}")
        return
    with fresh_database() as url:
        restore_dump(url)
        yield OldStore("postgres", url)


@pytest.fixture
def opened(old_store: OldStore) -> Iterator[Ledger]:
    with Ledger.open(old_store.url) as ledger:
        yield ledger


def state_of(item: StockItem) -> dict[str, Any]:
    """Everything a stock item's decisions read, to compare two ways of loading it."""
    return {
        "id": item.id, "version": item.version, "outlet": item.outlet, "sku": item.sku,
        "created_on": item.created_on, "modified_on": item.modified_on,
        "batches": {b.batch_id: (b.quantity, b.expires_on, tuple(b.layers), b.received_seq,
                                 b.received_at, b.expired) for b in item.batches.values()},
        "fefo_order": list(item.fefo_order), "fifo_order": list(item.fifo_order),
        "batch_total": item.batch_total, "shortfall": item.shortfall,
        "reorder_level": item.reorder_level, "next_received_seq": item.next_received_seq,
        "next_layer_seq": item.next_layer_seq,
    }


def replayed_from_events_only(app: LedgerApplication, item_id: UUID,
                              version: int | None = None) -> StockItem:
    item = project_aggregate(None, app.events.get(item_id, lte=version))
    assert isinstance(item, StockItem)
    return item


def recorded_stock(item: StockItem) -> dict[str, Any]:
    """A stock item as `make_old_store.py` recorded it, but for the unit cost of a batch that
    holds nothing: the old code kept one cost per batch (its last receipt's) whatever it held;
    now a batch's costs are those of its cost layers on the shelf (`known_cost`), and an empty
    one has none (`costs_as_layers_keep_them`)."""
    return {
        "outlet": item.outlet, "sku": item.sku, "stock_item_id": str(item.id),
        "version": item.version, "on_hand": item.on_hand, "shortfall": item.shortfall,
        "available": item.available(AVAILABLE_ON), "reorder_level": item.reorder_level,
        "batches": {b.batch_id: {"quantity": b.quantity,
                                 "expires_on": b.expires_on and b.expires_on.isoformat(),
                                 "unit_cost": known_cost(b), "expired": b.expired}
                    for b in item.batches.values()},
    }


def known_cost(batch: BatchState) -> str | None:
    """The one unit cost of the batch's cost layers that have one (units a refund restocked
    are a layer without a recorded cost); None if no layer has one."""
    costs = {layer.unit_cost for layer in batch.layers if layer.unit_cost is not None}
    assert len(costs) <= 1, f"batch {batch.batch_id} holds layers at costs {costs}"
    return next(iter(costs), None)


def costs_as_layers_keep_them(recorded: dict[str, Any]) -> dict[str, Any]:
    """The stock the old code recorded, each empty batch's unit cost as its layers give it:
    none. Every batch of the fixture was received at one cost, so a batch holding stock has
    that cost still."""
    return {**recorded, "batches": {
        batch_id: {**batch, "unit_cost": batch["unit_cost"] if batch["quantity"] else None}
        for batch_id, batch in recorded["batches"].items()}}


def verify_as_the_cli_does(app: LedgerApplication) -> ledger_audit.ChainReport:
    """`ledger audit verify`: the hash chain, then every read model recomputed."""
    chain = ledger_audit.verify_chain(app)
    assert chain.findings == []
    ReadModels(app).create()
    assert verify_read_models(app) == []
    return chain


# --------------------------------------------------------------------------- the fixture


def test_the_fixture_records_the_topics_of_the_layout_before_the_move(
        opened: Ledger) -> None:
    app = opened.application
    notes = app.recorder.select_notifications(1, 1_000_000)
    assert len(notes) == EXPECTED["events"]
    assert sorted({n.topic for n in notes}) == EXPECTED["event_topics"]
    originators = {json.loads(n.state)["originator_topic"] for n in notes
                   if b'"originator_topic"' in n.state}
    assert originators == set(OLD_AGGREGATE_TOPICS)
    assert not any(b"ledger.domain" in n.state or b"ledger.store" in n.state for n in notes)
    hot = UUID(EXPECTED["snapshot"]["stock_item_id"])
    assert app.snapshots is not None
    snapshots = list(app.snapshots.recorder.select_events(hot))
    assert [s.originator_version for s in snapshots] == EXPECTED["snapshot"]["versions"]
    assert {s.topic for s in snapshots} == {OLD_SNAPSHOT_TOPIC}
    assert all(json.loads(s.state)["topic"] == "ledger.stock_item:StockItem"
               for s in snapshots)
    # The old modules are gone: the old topics resolve only through the registered moves.
    for topic, moved_to in OLD_AGGREGATE_TOPICS.items():
        assert importlib.util.find_spec(topic.partition(":")[0]) is None, topic
        assert resolve_topic(topic) is moved_to
    assert resolve_topic(OLD_SNAPSHOT_TOPIC) is StockItemSnapshot
    # And every recorded event decodes, each onto an aggregate of the current code.
    for note in notes:
        event = app.mapper.to_domain_event(note)
        assert event.originator_id == note.originator_id


# --------------------------------------------------------------------------- verify


def test_audit_verify_passes_on_the_old_store_and_reaches_the_head_the_old_code_did(
        old_store: OldStore, opened: Ledger) -> None:
    chain = verify_as_the_cli_does(opened.application)
    final = old_store.recorded["final"]
    assert (chain.rows, chain.head_position, chain.head_hash) == (
        final["events"], final["head_position"], final["head_hash"])
    # The head an auditor recorded before the tail was appended is still on the chain.
    anchor = old_store.recorded["anchor"]
    rows = select_chained(opened.application.recorder, anchor["head_position"], 1)
    assert rows and rows[0]["position"] == anchor["head_position"]
    assert bytes(rows[0]["chain_hash"]).hex() == anchor["head_hash"]


def test_the_cli_verifies_the_old_store_against_the_recorded_anchor(
        old_store: OldStore, tmp_path: Path) -> None:
    anchor = old_store.recorded["anchor"]
    done = subprocess.run(
        [ledger_executable(), "--db", old_store.url, "audit", "verify", "--json",
         "--expect-head", f"{anchor['head_position']}:{anchor['head_hash']}"],
        env={k: v for k, v in os.environ.items() if k != "LEDGER_DATABASE_URL"}
        | {"HOME": str(tmp_path), "XDG_DATA_HOME": str(tmp_path / "xdg")},
        capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["ok"] is True and report["findings"] == []
    assert report["head_hash"] == old_store.recorded["final"]["head_hash"]


# --------------------------------------------------------------------------- replay and state


def test_a_replay_as_of_the_end_equals_the_stock_the_old_code_recorded(
        old_store: OldStore, opened: Ledger) -> None:
    app = opened.application
    head = old_store.recorded["head_position"]
    assert opened.head_position() == head
    for outlet, stock in EXPECTED["replay"].items():
        assert ledger_audit.replay(app, outlet, as_of=AVAILABLE_AT,
                                   basis="business")["stock"] == stock, outlet
        at_head = ledger_audit.replay(app, outlet, position=head)
        assert at_head["last_position_applied"] <= head
        assert [(s["sku"], s["on_hand"], s["batches"]) for s in at_head["stock"]] == [
            (s["sku"], s["on_hand"], s["batches"]) for s in stock], outlet
    opened_items = {f"{o.outlet}/{o.sku}" for o in app.stock_items_opened()}
    assert opened_items == set(EXPECTED["stock"])
    for key, recorded in EXPECTED["stock"].items():
        item = opened.stock_item(recorded["outlet"], recorded["sku"])
        assert recorded_stock(item) == costs_as_layers_keep_them(recorded), key
        level = opened.stock_level(recorded["outlet"], recorded["sku"], AVAILABLE_ON)
        assert (level.on_hand, level.available) == (recorded["on_hand"],
                                                    recorded["available"]), key


def test_the_old_snapshot_is_not_used_until_a_signed_layered_one_is_taken(
        opened: Ledger, old_store: OldStore, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """The old code's snapshot still resolves under its old topic, but it kept one cost per
    batch, where the events give one cost layer per receipt, and it was written before
    snapshots were signed: it decodes marked as an earlier format, cannot be rebuilt from, and
    a load replays the stream from its first event instead, saying why. The auditor finds
    that the fields it shares with the events agree. The next snapshot, signed and layered,
    is used."""
    app = opened.application
    recorded = EXPECTED["snapshot"]
    item_id = identity.stock_item_id(recorded["outlet"], recorded["sku"])
    assert str(item_id) == recorded["stock_item_id"]
    version = recorded["versions"][-1]
    assert app.snapshots is not None
    snapshot = next(iter(app.snapshots.get(item_id, desc=True, limit=1)))
    assert isinstance(snapshot, StockItemSnapshot)
    assert snapshot.originator_version == version
    assert not snapshot.is_current
    assert (snapshot.position, snapshot.key_id, snapshot.mac) == (None, None, None)
    with pytest.raises(ValueError, match="before cost layers were kept"):
        snapshot.mutate(None)
    report = verify_snapshots(app)
    count = len(recorded["versions"])
    assert (report.snapshots, report.unsigned, report.outdated, report.findings) == (
        count, count, count, [])

    def events_read(ledger: Ledger) -> list[int]:
        """The version from which a load with nothing cached reads the stream's events (a
        snapshot's own, inclusive, to check the position it records)."""
        starts: list[int] = []
        events_from = ledger.application.events_from

        def spying(wanted: Any, lte: int | None = None) -> Any:
            starts.extend(version for stream, version in wanted if stream == item_id)
            return events_from(wanted, lte)

        with monkeypatch.context() as patch:
            patch.setattr(ledger.application, "events_from", spying)
            loaded = ledger.stock_item(recorded["outlet"], recorded["sku"])
        assert state_of(loaded) == state_of(replayed_from_events_only(app, item_id))
        return starts

    with caplog.at_level("INFO", logger="ledger.store"):
        assert events_read(opened) == [1]
    assert f"snapshot of stream {item_id} at version {version} not used" in caplog.text
    assert "written before cost layers were kept" in caplog.text
    expected = EXPECTED["stock"][f"{recorded['outlet']}/{recorded['sku']}"]
    hot = opened.stock_item(recorded["outlet"], recorded["sku"])
    assert hot.version == expected["version"] > version

    app.take_snapshots([hot], [0], interval=1)
    taken = next(iter(app.snapshots.get(item_id, desc=True, limit=1)))
    assert isinstance(taken, StockItemSnapshot)
    assert taken.is_current and taken.is_bound
    assert state_of(taken.mutate(None)) == state_of(hot)
    with Ledger.open(old_store.url) as fresh:
        assert events_read(fresh) == [expected["version"]]
        assert verify_snapshots(fresh.application).findings == []


# --------------------------------------------------------------------------- new commands


def test_new_commands_append_to_the_old_store_and_verify(old_store: OldStore,
                                                         opened: Ledger) -> None:
    app = opened.application
    para = EXPECTED["stock"]["NBI-1/PARA-1G"]
    ibu = EXPECTED["stock"]["NBI-1/IBU-200"]
    # A retry of a command the old code recorded is recognised as that command.
    repeat = opened.receive(outlet="NBI-1", sku="AMOX-500", batch_id="A1", quantity=100,
                            expires_on="2026-06-30", unit_cost="0.42", reference="DN-1001",
                            actor="clerk", occurred_at="2026-01-05T08:10:00+00:00")
    assert repeat.replayed and repeat.quantity == 100
    assert opened.head_position() == old_store.recorded["head_position"]

    sold = opened.sell(outlet="NBI-1", sale_id="S-NEW-1", lines=[("PARA-1G", 3), ("IBU-200", 2)],
                       actor="till-9", occurred_at="2026-03-08T10:00:00+00:00")
    lines = {line.sku: line for line in sold.lines}
    assert [(t.batch_id, t.quantity) for t in lines["PARA-1G"].takes] == [("P2", 3)]  # FEFO
    assert [(t.batch_id, t.quantity) for t in lines["IBU-200"].takes] == [("I1", 2)]
    assert lines["PARA-1G"].stock.on_hand == para["on_hand"] - 3
    # A refund of a sale the old code recorded, from its old stream.
    refunded = opened.refund(sale_id="S-1001", refund_id="R-NEW-1", lines=[("AMOX-500", 1)],
                             actor="till-9", occurred_at="2026-03-08T11:00:00+00:00")
    assert [(t.batch_id, t.quantity) for t in refunded.lines[0].written_off] == [("A2", 1)]
    assert refunded.lines[0].restocked == ()  # A2 expired and was swept

    chain = verify_as_the_cli_does(app)
    assert chain.rows > EXPECTED["events"]
    assert chain.head_position == opened.head_position() == refunded.position
    item = opened.stock_item("NBI-1", "PARA-1G")
    assert (item.version, item.on_hand) == (para["version"] + 1, para["on_hand"] - 3)
    assert opened.stock_item("NBI-1", "IBU-200").on_hand == ibu["on_hand"] - 2
    with Ledger.open(old_store.url) as fresh:
        reloaded = fresh.stock_item("NBI-1", "PARA-1G")
        assert state_of(reloaded) == state_of(replayed_from_events_only(
            fresh.application, item.id))


def test_projections_catch_up_on_the_old_store_and_match(old_store: OldStore,
                                                        opened: Ledger) -> None:
    app = opened.application
    models = ReadModels(app)
    head = old_store.recorded["head_position"]
    assert models.positions() == old_store.recorded["projection_positions"]
    assert min(models.positions().values()) < head  # the tail is still to project
    assert verify_read_models(app) == []
    # The read models added since (holds, lots, periods) are made as an upgrade makes them:
    # `ledger init`, which the embedded store's commands run by themselves.
    # Its journal, created before the journal kept costs, is rebuilt with them (and the
    # rebuild catches every read model up).
    create_read_models(app)
    assert set(models.positions()) == set(PROJECTIONS)
    assert models.generations()["journal"] == 2
    models.catch_up()
    assert set(models.positions().values()) == {head}
    assert verify_read_models(app) == []
    check_read_models_against_recorded_stock(app)

    sold = opened.sell(outlet="NBI-1", sale_id="S-NEW-2", lines=[("PARA-1G", 4)],
                       occurred_at="2026-03-08T12:00:00+00:00")
    models.catch_up()
    assert set(models.positions().values()) == {sold.position}
    assert verify_read_models(app) == []
    rows = Reads(app).stock("NBI-1", "PARA-1G", AVAILABLE_ON)
    para = EXPECTED["stock"]["NBI-1/PARA-1G"]
    assert [(r["on_hand"], r["available"]) for r in rows] == [
        (para["on_hand"] - 4, para["available"] - 4)]


def check_read_models_against_recorded_stock(app: LedgerApplication) -> None:
    reads = Reads(app)
    for key, recorded in EXPECTED["stock"].items():
        rows = reads.stock(recorded["outlet"], recorded["sku"], AVAILABLE_ON)
        assert [(r["on_hand"], r["available"]) for r in rows] == [
            (recorded["on_hand"], recorded["available"])], key
        batches = {b["batch_id"]: int(b["quantity"])
                   for b in reads.batches(recorded["outlet"], recorded["sku"])
                   if int(b["quantity"]) != 0}
        assert batches == {b: v["quantity"] for b, v in recorded["batches"].items()
                           if v["quantity"] != 0}, key
