"""Audit: point-in-time replay, tamper evidence, export and trace, from the events alone
(issue 5)."""

from __future__ import annotations

import csv
import json
import os
import random
import secrets
import subprocess
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger.app.audit import replay, trace_sale
from ledger.app.service import Ledger
from ledger.app.valuation import COST_COLUMNS
from ledger.domain.movements import JOURNAL_COLUMNS, journal_rows
from ledger.store.application import LedgerApplication
from projections.queries import Reads
from projections.runner import ReadModels
from tests.databases import fresh_database
from tests.executables import ledger_executable
from tests.stepping import step_in_random_batches
from tests.strategies import HISTORY_OUTLETS, Step, apply_history, histories

LEDGER_EXE = ledger_executable()
ADMIN_URL = os.environ.get("LEDGER_TEST_POSTGRES_URL") or (
    "postgresql://postgres@127.0.0.1:5432/postgres")
OUTLETS = HISTORY_OUTLETS


# --------------------------------------------------------------------------- helpers


def cli(url: str, home: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "LEDGER_DATABASE_URL"}
    env.update(XDG_DATA_HOME=str(home / "xdg"), HOME=str(home), LEDGER_ACTOR="auditor")
    done = subprocess.run([LEDGER_EXE, "--db", url, *args], env=env, capture_output=True,
                          text=True, timeout=60, check=False)
    if check:
        assert done.returncode == 0, f"{args}: exit {done.returncode}: {done.stderr}"
    return done


def verify_json(url: str, home: Path, *extra: str) -> tuple[int, dict[str, Any]]:
    done = cli(url, home, "audit", "verify", "--json", *extra, check=False)
    assert done.returncode in (0, 1), done.stderr
    report: dict[str, Any] = json.loads(done.stdout)
    return done.returncode, report


def movement_count(app: LedgerApplication) -> int:
    notes = app.recorder.select_notifications(1, 10_000_000)
    return sum(1 for n in notes for _ in journal_rows(n.id, app.mapper.to_domain_event(n)))


# --------------------------------------------------------------------------- replay property

def read_model_snapshot(app: LedgerApplication) -> dict[str, Any]:
    reads = Reads(app)
    snapshot: dict[str, Any] = {}
    for outlet in OUTLETS:
        for row in reads.stock(outlet):
            batches = sorted((b["batch_id"], int(b["quantity"]))
                             for b in reads.batches(outlet, row["sku"]))
            if row["on_hand"] == 0 and row["available"] == 0 and not batches:
                continue  # opened but nothing moved yet: replay does not list it
            snapshot[f"{outlet}/{row['sku']}"] = (row["on_hand"], row["available"], batches)
    return snapshot


def replayed_snapshot(app: LedgerApplication, position: int) -> dict[str, Any]:
    snapshot: dict[str, Any] = {}
    for outlet in OUTLETS:
        for stock in replay(app, outlet, position=position)["stock"]:
            batches = sorted((b["batch_id"], b["quantity"]) for b in stock["batches"])
            if stock["on_hand"] == 0 and stock["available"] == 0 and not batches:
                continue
            snapshot[f"{outlet}/{stock['sku']}"] = (stock["on_hand"], stock["available"],
                                                    batches)
    return snapshot


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(history=histories(min_steps=5), seed=st.integers(0, 2**32))
def test_replay_at_random_positions_equals_read_models_then(history: list[Step],
                                                           seed: int) -> None:
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory() as directory, \
            Ledger.open(f"sqlite:///{directory}/a.sqlite3", create_tables=True) as ledger:
        app = ledger.application
        apply_history(ledger, history)
        models = ReadModels(app)
        models.create()
        seen: dict[int, dict[str, Any]] = {0: read_model_snapshot(app)}

        def remember() -> None:
            seen[min(models.positions().values())] = read_model_snapshot(app)

        step_in_random_batches(models, rng, 5, remember)
        # Replay later, with the whole history in the store, at a random sample of moments.
        for position in rng.sample(sorted(seen), min(len(seen), 8)):
            assert replayed_snapshot(app, position) == seen[position], position


def test_cli_replay_by_position_and_time(sqlite_url: str, tmp_path: Path) -> None:
    with Ledger.open(sqlite_url, create_tables=True) as ledger:
        first = ledger.receive(outlet="NBI-1", sku="AMOX-500", batch_id="B1", quantity=10)
        sold = ledger.sell(outlet="NBI-1", sale_id="S1", lines=[("AMOX-500", 4)])
    at_first = json.loads(cli(sqlite_url, tmp_path, "audit", "replay", "--outlet", "NBI-1",
                              "--position", str(first.position), "--json").stdout)
    assert [(s["sku"], s["on_hand"]) for s in at_first["stock"]] == [("AMOX-500", 10)]
    now = json.loads(cli(sqlite_url, tmp_path, "audit", "replay", "--outlet", "NBI-1",
                         "--as-of", datetime.now(UTC).isoformat(), "--json").stdout)
    assert [(s["sku"], s["on_hand"], s["available"]) for s in now["stock"]] == [
        ("AMOX-500", 6, 6)]
    assert now["last_position_applied"] <= (sold.position or 0)
    before = json.loads(cli(sqlite_url, tmp_path, "audit", "replay", "--outlet", "NBI-1",
                            "--as-of", "2000-01-01T00:00:00+00:00", "--json").stdout)
    assert before["stock"] == []


# --------------------------------------------------------------------------- tamper evidence


def build_store(url: str) -> None:
    """A few dozen events; exactly one receipt of quantity 10 (batch TEN)."""
    with Ledger.open(url, create_tables=True) as ledger:
        ReadModels(ledger.application).create()
        ledger.receive(outlet="NBI-1", sku="AMOX-500", batch_id="B1", quantity=25)
        ledger.receive(outlet="NBI-1", sku="PARA-1G", batch_id="P1", quantity=40)
        for n in range(5):
            ledger.sell(outlet="NBI-1", sale_id=f"S{n}", lines=[("AMOX-500", 1),
                                                                ("PARA-1G", 2)])
        ledger.receive(outlet="NBI-1", sku="AMOX-500", batch_id="TEN", quantity=10)
        for n in range(5, 9):
            ledger.sell(outlet="NBI-1", sale_id=f"S{n}", lines=[("AMOX-500", 3)])
        ledger.refund(sale_id="S1", refund_id="R1", lines=[("PARA-1G", 1)])
        ledger.write_off(outlet="NBI-1", sku="PARA-1G", quantity=2, reason="dropped")
        ReadModels(ledger.application).catch_up()


@pytest.fixture
def tamper_template(postgres_url: str) -> str:
    build_store(postgres_url)
    return postgres_url


def events_rows(url: str) -> list[tuple[int, str, bytes]]:
    with psycopg.connect(url) as connection:
        return [(r[0], r[1], bytes(r[2])) for r in connection.execute(
            "SELECT notification_id, topic, state FROM stockledger_events "
            "ORDER BY notification_id").fetchall()]


@pytest.mark.postgres
def test_tampering_is_detected_naming_the_position(tamper_template: str,
                                                   tmp_path: Path) -> None:
    code, report = verify_json(tamper_template, tmp_path)
    assert code == 0 and report["ok"] is True, report
    assert report["first_broken_position"] is None and report["findings"] == []
    rows = events_rows(tamper_template)
    head = rows[-1][0]
    assert report["events"] == len(rows) and report["head_position"] == head
    anchor = f"{report['head_position']}:{report['head_hash']}"
    assert len(rows) >= 30
    template = tamper_template.rsplit("/", 1)[1]

    # (a) a quantity changed in place
    ten = [p for p, topic, state in rows
           if topic.endswith("BatchReceived") and b'"quantity":10' in state]
    assert len(ten) == 1
    with fresh_database(template) as url:
        with psycopg.connect(url) as connection:
            changed = connection.execute(
                "UPDATE stockledger_events SET state = convert_to(replace(convert_from("
                "state, 'UTF8'), '\"quantity\":10', '\"quantity\":11'), 'UTF8') "
                "WHERE notification_id = %s", (ten[0],)).rowcount
            assert changed == 1
        code, report = verify_json(url, tmp_path)
        assert code == 1 and report["ok"] is False
        assert report["first_broken_position"] == ten[0], report
        assert {"hash_chain"} <= {f["check"] for f in report["findings"]}
        text = cli(url, tmp_path, "audit", "verify", check=False)
        assert text.returncode == 1 and f"first at position {ten[0]}" in text.stdout

    # (b) one row in the middle deleted
    middle = rows[len(rows) // 2][0]
    with fresh_database(template) as url:
        with psycopg.connect(url) as connection:
            connection.execute("DELETE FROM stockledger_events WHERE notification_id = %s",
                               (middle,))
        code, report = verify_json(url, tmp_path)
        assert code == 1, report
        chain = [f["position"] for f in report["findings"] if f["check"] == "hash_chain"]
        assert chain and chain[0] == middle + 1, report
        assert report["first_broken_position"] in (middle, middle + 1), report

    # (c) two rows swapped
    i, j = rows[10][0], rows[20][0]
    with fresh_database(template) as url:
        with psycopg.connect(url) as connection:
            for old, new in ((i, -1), (j, i), (-1, j)):
                connection.execute("UPDATE stockledger_events SET notification_id = %s "
                                   "WHERE notification_id = %s", (new, old))
        code, report = verify_json(url, tmp_path)
        assert code == 1, report
        assert report["first_broken_position"] == i, report
        assert any(f["check"] == "hash_chain" and f["position"] == i
                   for f in report["findings"])

    # (d) the last event deleted after the projections caught up; (e) the recorded anchor
    with fresh_database(template) as url:
        code, _ = verify_json(url, tmp_path, "--expect-head", anchor)
        assert code == 0
        with psycopg.connect(url) as connection:
            connection.execute("DELETE FROM stockledger_events WHERE notification_id = %s",
                               (head,))
        code, report = verify_json(url, tmp_path)
        assert code == 1, report
        assert not [f for f in report["findings"] if f["check"] == "hash_chain"]
        assert any(f["check"] == "event_store" for f in report["findings"]), report
        assert report["first_broken_position"] == head, report
        code, report = verify_json(url, tmp_path, "--expect-head", anchor)
        assert code == 1
        assert any(f["check"] == "anchor" and f["position"] == head
                   for f in report["findings"]), report
        bad = cli(url, tmp_path, "audit", "verify", "--expect-head", "nonsense", check=False)
        assert bad.returncode == 2


@pytest.mark.postgres
def test_truncation_before_projections_ran_is_caught_only_by_the_anchor(
        postgres_url: str, tmp_path: Path) -> None:
    with Ledger.open(postgres_url, create_tables=True) as ledger:
        ledger.receive(outlet="NBI-1", sku="AMOX-500", batch_id="B1", quantity=5)
        ledger.sell(outlet="NBI-1", sale_id="S1", lines=[("AMOX-500", 1)])
    code, report = verify_json(postgres_url, tmp_path)
    assert code == 0, report
    anchor = f"{report['head_position']}:{report['head_hash']}"
    with psycopg.connect(postgres_url) as connection:
        connection.execute("DELETE FROM stockledger_events WHERE notification_id = %s",
                           (report["head_position"],))
    code, report = verify_json(postgres_url, tmp_path, "--expect-head", anchor)
    assert code == 1 and [f["check"] for f in report["findings"]] == ["anchor"], report


# --------------------------------------------------------------------------- export


def seed_export(url: str) -> None:
    with Ledger.open(url, create_tables=True) as ledger:
        ledger.receive(outlet="NBI-1", sku="AMOX-500", batch_id="B1", quantity=20,
                       occurred_at="2025-01-01T09:00:00+00:00", actor="clerk", unit_cost="0.5")
        ledger.receive(outlet="NBI-1", sku="PARA-1G", batch_id="P1", quantity=30,
                       occurred_at="2025-01-01T09:05:00+00:00")
        ledger.receive(outlet="MSA-2", sku="AMOX-500", batch_id="M1", quantity=8,
                       occurred_at="2025-01-02T09:00:00+00:00")
        ledger.sell(outlet="NBI-1", sale_id="SALE-1", lines=[("AMOX-500", 3), ("PARA-1G", 4)],
                    occurred_at="2025-01-02T10:00:00+00:00", actor="till-3")
        ledger.sell(outlet="NBI-1", sale_id="SALE-2", lines=[("AMOX-500", 1)],
                    occurred_at="2025-01-03T10:00:00+00:00")
        ledger.refund(sale_id="SALE-1", refund_id="RF-1", lines=[("AMOX-500", 1)],
                      occurred_at="2025-01-04T10:00:00+00:00")
        ledger.write_off(outlet="NBI-1", sku="PARA-1G", quantity=1, reason="crushed",
                         occurred_at="2025-01-05T10:00:00+00:00")


def export_csv(url: str, home: Path, *args: str) -> list[dict[str, str]]:
    target = home / f"export-{secrets.token_hex(3)}.csv"
    done = cli(url, home, "audit", "export", "--format", "csv", "--output", str(target), *args)
    with target.open(newline="", encoding="utf-8") as stream:
        reader = csv.DictReader(stream)
        assert tuple(reader.fieldnames or ()) == (*JOURNAL_COLUMNS, *COST_COLUMNS)
        rows = list(reader)
    assert f"exported {len(rows)} movements" in done.stderr
    return rows


def test_export_csv_jsonl_and_filters(sqlite_url: str, tmp_path: Path) -> None:
    seed_export(sqlite_url)
    with Ledger.open(sqlite_url) as ledger:
        total = movement_count(ledger.application)
    assert JOURNAL_COLUMNS == ("position", "seq", "kind", "outlet", "sku", "batch_id",
                               "quantity", "occurred_at", "recorded_at", "actor", "reference",
                               "idempotency_key", "sale_id", "detail")
    everything = export_csv(sqlite_url, tmp_path)
    assert len(everything) == total == 8
    keys = [(int(r["position"]), int(r["seq"])) for r in everything]
    assert keys == sorted(keys) and len(set(keys)) == len(keys)
    first = everything[0]
    assert (first["kind"], first["outlet"], first["sku"], first["batch_id"], first["quantity"],
            first["actor"]) == ("received", "NBI-1", "AMOX-500", "B1", "20", "clerk")
    assert datetime.fromisoformat(first["occurred_at"]) == datetime(2025, 1, 1, 9, tzinfo=UTC)
    assert datetime.fromisoformat(first["recorded_at"]) > datetime(2025, 6, 1, tzinfo=UTC)
    sold = [r for r in everything if r["kind"] == "sold"]
    assert {(r["sku"], int(r["quantity"]), r["sale_id"], r["actor"]) for r in sold} == {
        ("AMOX-500", -3, "SALE-1", "till-3"), ("PARA-1G", -4, "SALE-1", "till-3"),
        ("AMOX-500", -1, "SALE-2", "unknown")}
    assert all(r["idempotency_key"] for r in everything)

    assert {r["outlet"] for r in export_csv(sqlite_url, tmp_path, "--outlet", "MSA-2")} == {
        "MSA-2"}
    assert len(export_csv(sqlite_url, tmp_path, "--outlet", "MSA-2")) == 1
    para = export_csv(sqlite_url, tmp_path, "--sku", "PARA-1G")
    assert [(r["kind"], int(r["quantity"])) for r in para] == [
        ("received", 30), ("sold", -4), ("written_off", -1)]
    window = export_csv(sqlite_url, tmp_path, "--since", "2025-01-02T10:00:00+00:00",
                        "--until", "2025-01-04T10:00:00+00:00")
    assert sorted((r["sale_id"], r["sku"]) for r in window) == [
        ("SALE-1", "AMOX-500"), ("SALE-1", "PARA-1G"), ("SALE-2", "AMOX-500")]
    by_reference = export_csv(sqlite_url, tmp_path, "--reference", "SALE-1")
    assert sorted((r["kind"], r["reference"]) for r in by_reference) == [
        ("refunded", "RF-1"), ("sold", "SALE-1"), ("sold", "SALE-1")]
    combined = export_csv(sqlite_url, tmp_path, "--outlet", "NBI-1", "--sku", "AMOX-500",
                          "--since", "2025-01-03")
    assert [r["kind"] for r in combined] == ["sold", "refunded"]

    done = cli(sqlite_url, tmp_path, "audit", "export", "--format", "jsonl")
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(lines) == total
    assert all(tuple(line) == (*JOURNAL_COLUMNS, *COST_COLUMNS) for line in lines)
    assert [(x["position"], x["seq"]) for x in lines] == keys
    bad = cli(sqlite_url, tmp_path, "audit", "export", "--format", "csv", "--since", "nope",
              check=False)
    assert bad.returncode == 2


# --------------------------------------------------------------------------- trace


def test_trace_sale(sqlite_url: str, tmp_path: Path) -> None:
    today = datetime.now(UTC).date()
    with Ledger.open(sqlite_url, create_tables=True) as ledger:
        ledger.receive(outlet="NBI-1", sku="AMOX-500", batch_id="SOON", quantity=3,
                       expires_on=today + timedelta(days=20))
        ledger.receive(outlet="NBI-1", sku="AMOX-500", batch_id="LATER", quantity=10,
                       expires_on=today + timedelta(days=200))
        ledger.receive(outlet="NBI-1", sku="OTHER", batch_id="X", quantity=10)
        ledger.sell(outlet="NBI-1", sale_id="SALE-7", lines=[("AMOX-500", 5), ("OTHER", 1)])
        ledger.refund(sale_id="SALE-7", refund_id="RF-7", lines=[("AMOX-500", 1)])
        ledger.sell(outlet="NBI-1", sale_id="SALE-8", lines=[("AMOX-500", 2)])
        ledger.write_off(outlet="NBI-1", sku="AMOX-500", quantity=1, batch_id="LATER",
                         reason="damaged")
        ledger.receive(outlet="NBI-1", sku="AMOX-500", batch_id="UNRELATED", quantity=4)
        direct = trace_sale(ledger.application, "SALE-7")
    report = json.loads(cli(sqlite_url, tmp_path, "audit", "trace", "--sale", "SALE-7",
                            "--json").stdout)
    assert report == direct
    assert report["sale_id"] == "SALE-7" and report["outlet"] == "NBI-1"
    lines = {line["sku"]: line for line in report["lines"]}
    assert set(lines) == {"AMOX-500", "OTHER"}
    amox = lines["AMOX-500"]
    assert amox["quantity"] == 5
    assert sorted((t["batch_id"], t["quantity"]) for t in amox["takes"]) == [
        ("LATER", 2), ("SOON", 3)]
    later = [(m["kind"], m["batch_id"], m["quantity"]) for m in amox["batch_history_since_sale"]]
    assert sum(q for kind, _, q in later if kind == "sold") == -2  # SALE-8, from those batches
    assert ("written_off", "LATER", -1) in later
    assert any(kind == "refunded" and quantity == 1 for kind, _, quantity in later)
    assert all(batch in ("SOON", "LATER") for _, batch, _ in later)
    assert [r["refund_id"] for r in report["refunds"]] == ["RF-7"]
    assert lines["OTHER"]["batch_history_since_sale"] == []
    text = cli(sqlite_url, tmp_path, "audit", "trace", "--sale", "SALE-7")
    assert "refund RF-7" in text.stdout
    missing = cli(sqlite_url, tmp_path, "audit", "trace", "--sale", "NOPE", check=False)
    assert missing.returncode == 1
