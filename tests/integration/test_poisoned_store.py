"""A forged event poisons nothing: a row appended through the store's own append whose topic
names no event class, whose state is not JSON, or whose JSON is not its class's shape stops the
projections just before it (recorded, shown by status), fails verify naming it, is marked in
the export, and leaves every read and command that does not depend on it working; once an
operator removes the row, catch-up finishes. On both stores."""

from __future__ import annotations

import csv
import io
import json
import threading
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner

import projections.runner as runner
from cli.main import main
from ledger.app.service import Ledger
from ledger.store.application import LedgerApplication
from projections.follow import follow
from projections.runner import PROJECTIONS, ProjectionStuck, ReadModels
from projections.verify import verify_read_models
from tests.integration.test_projections import OUTLETS, seed_store
from tests.poisoning import POISONS, forge


def ledger(url: str, home: Path, *args: str) -> tuple[int, str, str]:
    """`ledger --db URL ARGS...` in this process: an exception the CLI does not turn into an
    exit status (a traceback) fails the test."""
    result = CliRunner().invoke(main, ["--db", url, *args], catch_exceptions=False, env={
        "LEDGER_DATABASE_URL": None, "HOME": str(home), "XDG_DATA_HOME": str(home / "xdg"),
        "LEDGER_ACTOR": "poison-test"})
    return result.exit_code, result.stdout, result.stderr


def one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("ledger: ")]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


def poisoned_store(url: str, topic: str, state: bytes) -> int:
    """Three movements, a forged event on OUT-A/AMOX-500, then one more movement; the read
    models exist but have applied nothing. The forged event's position."""
    with Ledger.open(url, create_tables=True) as opened:
        ReadModels(opened.application).create()
        opened.receive(outlet="OUT-A", sku="AMOX-500", batch_id="A1", quantity=10)
        opened.receive(outlet="OUT-A", sku="PARA-1G", batch_id="P1", quantity=20)
        opened.sell(outlet="OUT-A", sale_id="S1", lines=[("PARA-1G", 2)])
        bad = forge(opened.application, topic, state)
        opened.receive(outlet="OUT-A", sku="IBU-200", batch_id="I1", quantity=7)
    return bad


def remove_row(app: LedgerApplication, position: int) -> None:
    """What the operator does (docs/audit.md): delete the row, as the tables' owner."""
    table = app.recorder.events_table_name  # type: ignore[attr-defined]
    if app.config.backend == "sqlite":
        with app.recorder.datastore.transaction(commit=True) as cursor:  # type: ignore[attr-defined]
            cursor.execute(f"DELETE FROM {table} WHERE rowid = ?", (position,))
        return
    with psycopg.connect(_url(app)) as connection:
        assert connection.execute(f"DELETE FROM {table} WHERE notification_id = %s",
                                  (position,)).rowcount == 1


def _url(app: LedgerApplication) -> str:
    config = app.config
    return f"postgresql://{config.user}@{config.host}:{config.port}/{config.dbname}"


@pytest.mark.parametrize("poison", POISONS, ids=[p[0] for p in POISONS])
def test_a_forged_event_stops_projections_at_it_and_poisons_nothing_else(
        store_url: str, tmp_path: Path, poison: tuple[str, str, bytes]) -> None:
    _, topic, state = poison
    bad = poisoned_store(store_url, topic, state)

    # Catch-up applies everything before it, stops at it, and says so in one line (exit 3).
    code, _, stderr = ledger(store_url, tmp_path, "projections", "catch-up")
    assert code == 3, stderr
    assert f"position {bad}" in one_line(stderr) and topic in stderr
    with Ledger.open(store_url) as opened:
        models = ReadModels(opened.application)
        assert set(models.positions().values()) == {bad - 1}
        with pytest.raises(ProjectionStuck) as stuck:
            models.catch_up()  # again: no further, and no traceback of the library's
        assert stuck.value.stuck.position == bad
        assert set(models.positions().values()) == {bad - 1}

    # Status shows where, what and why, as text and JSON.
    code, stdout, _ = ledger(store_url, tmp_path, "projections", "status", "--json")
    assert code == 0
    for report in json.loads(stdout)["projections"]:
        assert report["position"] == bad - 1
        assert report["stuck"]["position"] == bad and report["stuck"]["topic"] == topic
        assert report["stuck"]["reason"]
    code, stdout, _ = ledger(store_url, tmp_path, "projections", "status")
    assert code == 0 and stdout.count(f"STUCK before position {bad}") == len(PROJECTIONS), stdout

    # A rebuild stops at it too (exit 3, one line); readers keep what they had.
    with Ledger.open(store_url) as opened:
        generations = ReadModels(opened.application).generations()
    code, _, stderr = ledger(store_url, tmp_path, "projections", "rebuild")
    assert code == 3 and f"position {bad}" in one_line(stderr)
    with Ledger.open(store_url) as opened:
        models = ReadModels(opened.application)
        assert models.generations() == generations
        assert set(models.positions().values()) == {bad - 1}

    # Verify fails naming it (the chain is intact: the row went in through the append).
    code, stdout, stderr = ledger(store_url, tmp_path, "audit", "verify", "--json")
    assert code == 1, stderr
    report = json.loads(stdout)
    assert report["first_broken_position"] == bad
    assert [(f["check"], f["position"]) for f in report["findings"]] == [("events", bad)]
    assert topic in report["findings"][0]["message"]
    code, stdout, _ = ledger(store_url, tmp_path, "audit", "verify")
    assert code == 1 and f"first at position {bad}" in stdout

    # Projected reads answer as far as the projections got, and say where they stop.
    code, stdout, stderr = ledger(store_url, tmp_path, "stock", "--outlet", "OUT-A", "--json")
    assert code == 0, stderr
    stock = json.loads(stdout)
    assert {r["sku"]: r["on_hand"] for r in stock["stock"]} == {"AMOX-500": 10, "PARA-1G": 18}
    assert stock["stuck"]["position"] == bad and f"position {bad}" in one_line(stderr)
    code, stdout, stderr = ledger(store_url, tmp_path, "history", "--outlet", "OUT-A", "--sku",
                                  "PARA-1G", "--json")
    assert code == 0, stderr
    assert sorted(m["quantity"] for m in json.loads(stdout)["movements"]) == [-2, 20]
    for read in (("batches", "--outlet", "OUT-A", "--sku", "PARA-1G"),
                 ("low-stock", "--outlet", "OUT-A")):
        code, stdout, stderr = ledger(store_url, tmp_path, *read)
        assert code == 0 and "warning" in stderr, (read, stderr)

    # The export marks it in its place, and exports every movement around it.
    code, stdout, stderr = ledger(store_url, tmp_path, "audit", "export", "--format", "csv")
    assert code == 0, stderr
    rows = list(csv.DictReader(io.StringIO(stdout)))
    marked = [r for r in rows if r["kind"] == "unreadable"]
    assert [r["position"] for r in marked] == [str(bad)] and topic in marked[0]["detail"]
    assert sorted((r["sku"], r["quantity"]) for r in rows if r["kind"] != "unreadable") == [
        ("AMOX-500", "10"), ("IBU-200", "7"), ("PARA-1G", "-2"), ("PARA-1G", "20")]
    assert "exported 4 movements" in stderr and f"positions {bad}" in stderr

    # Auditors' reads of other stock, and of an unrelated sale, work.
    code, stdout, _ = ledger(store_url, tmp_path, "audit", "replay", "--outlet", "OUT-A",
                             "--sku", "PARA-1G", "--position", str(bad + 10), "--json")
    assert code == 0 and json.loads(stdout)["stock"][0]["on_hand"] == 18
    code, stdout, _ = ledger(store_url, tmp_path, "audit", "trace", "--sale", "S1", "--json")
    assert code == 0 and json.loads(stdout)["lines"][0]["sku"] == "PARA-1G"
    code, _, stderr = ledger(store_url, tmp_path, "audit", "replay", "--outlet", "OUT-A",
                             "--sku", "AMOX-500", "--position", str(bad))
    assert code == 3 and f"position {bad}" in one_line(stderr)

    # Commands on other streams work; one on the poisoned stream fails naming the row.
    code, _, stderr = ledger(store_url, tmp_path, "sell", "--outlet", "OUT-A", "--sale", "S2",
                             "--line", "PARA-1G=1")
    assert code == 0, stderr
    code, _, stderr = ledger(store_url, tmp_path, "sell", "--outlet", "OUT-A", "--sale", "S3",
                             "--line", "AMOX-500=1")
    assert code == 3, stderr
    reason = one_line(stderr)
    assert f"position {bad}" in reason and "stream " in reason

    # The operator removes the row: catch-up finishes, and status shows nothing stuck.
    with Ledger.open(store_url) as opened:
        remove_row(opened.application, bad)
    code, _, stderr = ledger(store_url, tmp_path, "projections", "catch-up")
    assert code == 0, stderr
    code, stdout, _ = ledger(store_url, tmp_path, "projections", "status", "--json")
    reports = json.loads(stdout)["projections"]
    assert all(r["stuck"] is None and r["lag_events"] == 0 for r in reports), reports
    code, stdout, stderr = ledger(store_url, tmp_path, "stock", "--outlet", "OUT-A", "--json")
    assert code == 0 and "warning" not in stderr
    stock = json.loads(stdout)
    assert stock["stuck"] is None
    assert {r["sku"]: r["on_hand"] for r in stock["stock"]} == {
        "AMOX-500": 10, "IBU-200": 7, "PARA-1G": 17}
    code, _, stderr = ledger(store_url, tmp_path, "sell", "--outlet", "OUT-A", "--sale", "S4",
                             "--line", "AMOX-500=1")
    assert code == 0, stderr


def test_the_follower_stops_at_a_forged_event_instead_of_retrying(store_url: str) -> None:
    _, topic, state = POISONS[0]
    bad = poisoned_store(store_url, topic, state)
    with Ledger.open(store_url) as opened:
        stop = threading.Event()
        timer = threading.Timer(30, stop.set)  # a follower that never stops fails below
        timer.start()
        try:
            with pytest.raises(ProjectionStuck) as stuck:
                follow(opened.application, stop)
        finally:
            timer.cancel()
        assert not stop.is_set(), "the follower kept going past the unreadable event"
        assert stuck.value.stuck.position == bad
        status: list[dict[str, Any]] = ReadModels(opened.application).status()
        assert all(p["stuck"]["position"] == bad and p["last_error"] is None for p in status)


def test_a_store_set_up_before_the_stuck_records_records_its_first(store_url: str,
                                                                   tmp_path: Path) -> None:
    """A store whose read models were set up before `ledger_projection_stuck` existed
    catches up without it, and gets it when a projection first stops at an event."""
    with Ledger.open(store_url, create_tables=True) as opened:
        models = ReadModels(opened.application)
        models.create()
        with models.transaction() as cursor:
            cursor.execute(f"DROP TABLE {models.store.stuck}")
        opened.receive(outlet="OUT-A", sku="PARA-1G", batch_id="P1", quantity=20)
        models.catch_up()
        assert set(models.positions().values()) == {opened.head_position()}
        assert all(p["stuck"] is None for p in models.status())
        _, topic, state = POISONS[1]
        bad = forge(opened.application, topic, state, sku="PARA-1G")
    code, _, stderr = ledger(store_url, tmp_path, "projections", "catch-up")
    assert code == 3 and f"position {bad}" in one_line(stderr)
    code, stdout, _ = ledger(store_url, tmp_path, "projections", "status", "--json")
    assert code == 0
    assert all(p["stuck"]["position"] == bad for p in json.loads(stdout)["projections"])


@pytest.mark.postgres
def test_parallel_workers_stop_at_a_forged_event(postgres_url: str,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Workers commit every range before the event, the one that meets it commits up to it
    and stops the rest; the caller records it, and after the repair the workers finish."""
    seed_store(postgres_url, sales=40)
    with Ledger.open(postgres_url) as opened:
        _, topic, state = POISONS[2]
        bad = forge(opened.application, topic, state, outlet=OUTLETS[0], sku="SKU-1")
        for n in range(40):
            opened.sell(outlet=OUTLETS[1], sale_id=f"AFTER-{n}", lines=[("SKU-2", 1)])
        head = opened.head_position()
    monkeypatch.setattr(runner, "BATCH_SIZE", 23)  # many ranges either side of it
    with Ledger.open(postgres_url) as opened:
        models = ReadModels(opened.application)
        with pytest.raises(ProjectionStuck) as stuck:
            models.catch_up(workers=2)
        run = models.last_parallel_run
        assert run is not None and [w.exitcode for w in run.workers] == [0, 0]
        assert run.reached < bad
        assert stuck.value.stuck.position == bad
        assert set(models.positions().values()) == {bad - 1}
        assert verify_read_models(opened.application) == []
        assert all(p["stuck"]["position"] == bad for p in models.status())
        remove_row(opened.application, bad)
        models.catch_up(workers=2)
        assert set(models.positions().values()) == {head}
        assert verify_read_models(opened.application) == []
        assert all(p["stuck"] is None for p in models.status())
