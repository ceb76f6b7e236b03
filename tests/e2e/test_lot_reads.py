"""Reads by lot and by period (issue 20), as a back office types them: a recall's trace of a
lot across outlets, the lots expiring soon, and a period's movements per stock item, whose
balances must be those an audit replay gives at the period's start and end.

Every test runs the `ledger` command in process (`InProcessCli`), on SQLite and PostgreSQL.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger import Ledger
from ledger.app import audit as ledger_audit
from ledger.domain.errors import Refusal
from projections.lot_queries import EXPIRING, LotReads
from projections.runner import ReadModels
from tests.e2e.test_cli import Cli, InProcessCli, one_line_reason

NOW = datetime.now(UTC)
TODAY = NOW.date()


def days_ago(days: float) -> str:
    return (NOW - timedelta(days=days)).isoformat()


def date_in(days: int) -> str:
    return (TODAY + timedelta(days=days)).isoformat()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest) -> str:
    url: str = request.getfixturevalue("sqlite_url" if request.param == "sqlite"
                                       else "postgres_url")
    return url


@pytest.fixture
def cli(store: str, tmp_path: Path) -> Iterator[Cli]:
    runner = InProcessCli(store, tmp_path)
    runner.ok("init")
    yield runner


# --------------------------------------------------------------------------- trace


def recall_history(cli: Cli) -> None:
    """Lot L7 of AMOX arrives at the warehouse, goes to two pharmacies (one delivery still
    on the road), is sold and partly refunded, written off, counted; lot L8 only sold."""
    cli.ok("receive", "--outlet", "WH", "--sku", "AMOX", "--batch", "L7", "--qty", "100",
           "--expires", date_in(20), "--at", days_ago(10))
    cli.ok("receive", "--outlet", "WH", "--sku", "AMOX", "--batch", "L8", "--qty", "50",
           "--expires", date_in(200), "--at", days_ago(10))
    cli.ok("transfer", "--from", "WH", "--to", "P1", "--sku", "AMOX", "--qty", "30",
           "--transfer", "T-1", "--at", days_ago(9))
    cli.ok("transfer", "--from", "WH", "--to", "P2", "--sku", "AMOX", "--qty", "20",
           "--transfer", "T-2", "--in-transit", "--at", days_ago(8))
    cli.ok("sell", "--outlet", "P1", "--sale", "S-1", "--line", "AMOX=5", "--at", days_ago(7))
    cli.ok("refund", "--sale", "S-1", "--refund", "R-1", "--line", "AMOX=2")
    cli.ok("refund", "--sale", "S-1", "--refund", "R-2", "--line", "AMOX=1", "--write-off")
    cli.ok("write-off", "--outlet", "WH", "--sku", "AMOX", "--qty", "4", "--batch", "L7",
           "--reason", "damaged")
    cli.ok("count", "--outlet", "P1", "--sku", "AMOX", "--batch", "L7", "--counted", "26",
           "--count-id", "C-1")
    # FEFO takes L7's last 46 at the warehouse before L8, which expires later.
    cli.ok("sell", "--outlet", "WH", "--sale", "S-2", "--line", "AMOX=46")


def test_a_trace_follows_a_lot_through_every_outlet_to_where_it_is_now(cli: Cli) -> None:
    recall_history(cli)
    trace = cli.json("trace", "--sku", "AMOX", "--batch", "L7")
    assert trace["found"] and trace["expires_on"] == date_in(20)
    assert [(r["outlet"], r["quantity"]) for r in trace["received"]] == [("WH", 100)]
    transfers = {t["transfer_id"]: t for t in trace["transfers"]}
    assert (transfers["T-1"]["from_outlet"], transfers["T-1"]["to_outlet"],
            transfers["T-1"]["quantity"], transfers["T-1"]["status"]) == (
        "WH", "P1", 30, "received")
    assert (transfers["T-2"]["quantity"], transfers["T-2"]["received"],
            transfers["T-2"]["status"]) == (20, 0, "in_transit")
    sales = {s["sale_id"]: s for s in trace["sales"]}
    # S-2 sold 46 at WH: L7 had 100 - 30 - 20 - 4 = 46 left, all taken first (FEFO).
    assert (sales["S-1"]["outlet"], sales["S-1"]["quantity"]) == ("P1", 5)
    assert (sales["S-2"]["outlet"], sales["S-2"]["quantity"]) == ("WH", 46)
    assert [(x["refund_id"], x["quantity"], x["restocked"])
            for x in sales["S-1"]["refunds"]] == [("R-1", 2, True), ("R-2", 1, False)]
    assert [(w["outlet"], w["quantity"], w["reason"]) for w in trace["written_off"]] == [
        ("WH", 4, "damaged")]
    # P1 had 30 - 5 + 2 = 27 and counted 26.
    assert [(c["outlet"], c["variance"]) for c in trace["counted"]] == [("P1", -1)]
    assert trace["now"]["on_shelves"] == [
        {"outlet": "P1", "quantity": 26, "expires_on": date_in(20)}]
    assert [(t["transfer_id"], t["to_outlet"], t["quantity"])
            for t in trace["now"]["in_transit"]] == [("T-2", "P2", 20)]
    assert (trace["now"]["on_shelves_total"], trace["now"]["in_transit_total"]) == (26, 20)
    # The lot is conserved: what arrived, less what left, is on shelves or on the road.
    accounted = (sum(r["quantity"] for r in trace["received"])
                 - sum(s["quantity"] for s in trace["sales"])
                 + sum(x["quantity"] for s in trace["sales"] for x in s["refunds"]
                       if x["restocked"])
                 - sum(w["quantity"] for w in trace["written_off"])
                 + sum(c["variance"] for c in trace["counted"]))
    assert accounted == trace["now"]["on_shelves_total"] + trace["now"]["in_transit_total"]

    assert trace["holds"] == []
    cli.ok("hold", "--sku", "AMOX", "--batch", "L7", "--reason", "supplier recall R-77")
    holds = cli.json("trace", "--sku", "AMOX", "--batch", "L7")["holds"]
    assert [(h["outlet"], h["reason"]) for h in holds] == [(None, "supplier recall R-77")]

    other = cli.json("trace", "--sku", "AMOX", "--batch", "L8")
    assert other["now"]["on_shelves"] == [{"outlet": "WH", "quantity": 50,
                                           "expires_on": date_in(200)}]
    assert other["transfers"] == [] and other["sales"] == []


def test_a_trace_of_an_arrived_transfer_and_an_unknown_lot(cli: Cli) -> None:
    recall_history(cli)
    cli.ok("transfer-receive", "--transfer", "T-2")
    trace = cli.json("trace", "--sku", "AMOX", "--batch", "L7")
    assert trace["now"]["in_transit"] == []
    assert {s["outlet"]: s["quantity"] for s in trace["now"]["on_shelves"]} == {
        "P1": 26, "P2": 20}
    unknown = cli.json("trace", "--sku", "AMOX", "--batch", "NOPE")
    assert not unknown["found"] and unknown["now"]["on_shelves_total"] == 0
    assert "no movements of lot NOPE" in cli.ok("trace", "--sku", "AMOX",
                                                 "--batch", "NOPE").stdout
    human = cli.ok("trace", "--sku", "AMOX", "--batch", "L7").stdout
    assert "sale S-1" in human and "refund R-2" in human and "P2" in human


def test_a_lot_expired_by_the_sweep_shows_its_expiry(cli: Cli) -> None:
    cli.ok("receive", "--outlet", "P1", "--sku", "PARA", "--batch", "OLD", "--qty", "9",
           "--expires", date_in(-3), "--at", days_ago(30))
    cli.ok("expire", "--outlet", "P1")
    trace = cli.json("trace", "--sku", "PARA", "--batch", "OLD")
    assert [(e["outlet"], e["quantity"]) for e in trace["expired"]] == [("P1", 9)]
    assert trace["now"]["on_shelves_total"] == 0


# --------------------------------------------------------------------------- expiring


def stock_lots(cli: Cli) -> None:
    for outlet, batch, expires, quantity in (
            ("P1", "E-PAST", -2, 5), ("P1", "E-10", 10, 7), ("P2", "E-10", 10, 3),
            ("P2", "E-29", 29, 4), ("P2", "E-31", 31, 6), ("P1", "E-NONE", None, 8)):
        args = ["receive", "--outlet", outlet, "--sku", "AMOX", "--batch", batch,
                "--qty", str(quantity), "--at", days_ago(40)]
        if expires is not None:
            args += ["--expires", date_in(expires)]
        cli.ok(*args)
    cli.ok("receive", "--outlet", "P1", "--sku", "IBU", "--batch", "I-5", "--qty", "2",
           "--expires", date_in(5), "--at", days_ago(40))
    cli.ok("receive", "--outlet", "P1", "--sku", "IBU", "--batch", "I-GONE", "--qty", "1",
           "--expires", date_in(3), "--at", days_ago(40))
    cli.ok("write-off", "--outlet", "P1", "--sku", "IBU", "--batch", "I-GONE", "--qty", "1",
           "--reason", "broken")


def test_expiring_lists_lots_with_stock_soonest_first_with_expired_ones_flagged(
        cli: Cli) -> None:
    stock_lots(cli)
    listed = cli.json("expiring", "--within", "30d")["expiring"]
    assert [(r["expires_on"], r["sku"], r["batch_id"], r["outlet"], r["quantity"],
             r["expired"]) for r in listed] == [
        (date_in(-2), "AMOX", "E-PAST", "P1", 5, True),
        (date_in(5), "IBU", "I-5", "P1", 2, False),
        (date_in(10), "AMOX", "E-10", "P1", 7, False),
        (date_in(10), "AMOX", "E-10", "P2", 3, False),
        (date_in(29), "AMOX", "E-29", "P2", 4, False),
    ]
    assert [r["days_left"] for r in listed] == [-2, 5, 10, 10, 29]
    assert not any(r["held"] for r in listed)
    cli.ok("hold", "--sku", "AMOX", "--batch", "E-10", "--outlet", "P2", "--reason", "recall")
    held = {(r["batch_id"], r["outlet"]): r["held"]
            for r in cli.json("expiring", "--within", "30d")["expiring"]}
    assert held[("E-10", "P2")] and not held[("E-10", "P1")], held
    at_p2 = cli.json("expiring", "--within", "31", "--outlet", "P2")["expiring"]
    assert [r["batch_id"] for r in at_p2] == ["E-10", "E-29", "E-31"]
    ibu = cli.json("expiring", "--within", "1w", "--sku", "IBU")["expiring"]
    assert [r["batch_id"] for r in ibu] == ["I-5"]
    assert "EXPIRED" in cli.ok("expiring", "--within", "0d").stdout


def test_expiring_refuses_a_window_it_cannot_read(cli: Cli) -> None:
    done = cli("expiring", "--within", "soon")
    assert done.returncode == 2
    assert one_line_reason(done).startswith("ledger: invalid within:")


def test_expiring_reads_a_range_of_the_expiry_index(store: str) -> None:
    with Ledger.open(store, create_tables=True) as ledger:
        models = ReadModels(ledger.application)
        models.create()
        reads = LotReads(models)
        statement = reads.sql(EXPIRING + " ORDER BY expires_on, sku, batch_id, outlet LIMIT 10")
        if models.dialect.name == "sqlite":
            plan = " ".join(str(dict(r)) for r in models.query(
                "EXPLAIN QUERY PLAN " + statement, [TODAY.isoformat()]))
            assert "USING INDEX ledger_lot_shelves_g1_expiry" in plan, plan
        else:
            with models.transaction() as cursor:
                # Scans are made dear so the plan shows what the index allows, whatever the
                # (empty) table's statistics say.
                cursor.execute("SET LOCAL enable_seqscan = off")
                cursor.execute("EXPLAIN " + statement, [TODAY])
                plan = " ".join(str(r) for r in cursor.fetchall())
            assert "Index" in plan and "lot_shelves_g1_expiry" in plan, plan
        assert "Sort" not in plan and "TEMP B-TREE" not in plan, plan


# --------------------------------------------------------------------------- period report


def report_row(cli: Cli, *args: str) -> dict[str, Any]:
    rows = cli.json("report", "movements", *args)["rows"]
    assert len(rows) == 1, rows
    row: dict[str, Any] = rows[0]
    return row


def test_a_period_report_gives_each_kind_of_movement_between_its_balances(cli: Cli) -> None:
    cli.ok("receive", "--outlet", "P1", "--sku", "AMOX", "--batch", "B1", "--qty", "50",
           "--expires", date_in(300), "--at", days_ago(40))
    cli.ok("sell", "--outlet", "P1", "--sale", "S-OLD", "--line", "AMOX=10",
           "--at", days_ago(35))
    # The period: the last 20 days.
    cli.ok("receive", "--outlet", "P1", "--sku", "AMOX", "--batch", "B2", "--qty", "30",
           "--expires", date_in(5), "--at", days_ago(15))
    cli.ok("sell", "--outlet", "P1", "--sale", "S-1", "--line", "AMOX=8", "--at", days_ago(14))
    cli.ok("refund", "--sale", "S-1", "--refund", "R-1", "--line", "AMOX=3")
    cli.ok("refund", "--sale", "S-1", "--refund", "R-2", "--line", "AMOX=2", "--write-off")
    cli.ok("write-off", "--outlet", "P1", "--sku", "AMOX", "--qty", "1", "--batch", "B1",
           "--reason", "damaged")
    cli.ok("count", "--outlet", "P1", "--sku", "AMOX", "--batch", "B1", "--counted", "36",
           "--count-id", "C-1")
    cli.ok("transfer", "--from", "P1", "--to", "P2", "--sku", "AMOX", "--qty", "4",
           "--transfer", "T-1")
    cli.ok("transfer", "--from", "P2", "--to", "P1", "--sku", "AMOX", "--qty", "1",
           "--transfer", "T-2")
    cli.ok("receive", "--outlet", "P1", "--sku", "PARA", "--batch", "X1", "--qty", "5",
           "--expires", date_in(-2), "--at", days_ago(15))
    cli.ok("expire", "--outlet", "P1", "--as-of", date_in(0))
    row = report_row(cli, "--from", date_in(-20), "--to", date_in(0), "--outlet", "P1",
                     "--sku", "AMOX")
    # S-1 took B2 (first expiry); B1: 40 - 1 written off = 39, counted 36.
    assert row == {
        "outlet": "P1", "sku": "AMOX", "opening": 40, "received": 30, "sold": 8,
        "refunded_restocked": 3, "refunded_written_off": 2, "expired": 0, "written_off": 1,
        "count_variance": -3, "transferred_in": 1, "transferred_out": 4,
        "other": 0, "closing": 58}
    on_hand = cli.json("stock", "--outlet", "P1", "--sku", "AMOX")["stock"][0]["on_hand"]
    assert row["closing"] == on_hand
    para = report_row(cli, "--from", date_in(-20), "--to", date_in(0), "--outlet", "P1",
                      "--sku", "PARA")
    assert (para["opening"], para["received"], para["expired"], para["closing"]) == (
        0, 5, 5, 0)
    before = report_row(cli, "--from", date_in(-60), "--to", date_in(-21), "--outlet", "P1",
                        "--sku", "AMOX")
    assert (before["opening"], before["received"], before["sold"], before["closing"]) == (
        0, 50, 10, 40)
    # Every outlet: P2 received 4, sent 1 back.
    p2 = [r for r in cli.json("report", "movements", "--from", date_in(-20), "--to",
                              date_in(0))["rows"] if r["outlet"] == "P2"]
    assert [(r["transferred_in"], r["transferred_out"], r["closing"]) for r in p2] == [
        (4, 1, 3)]
    # By recorded time every movement happened today: nothing before it.
    recorded = report_row(cli, "--from", date_in(0), "--to", date_in(0), "--outlet", "P1",
                          "--sku", "AMOX", "--basis", "recorded")
    assert (recorded["opening"], recorded["closing"]) == (0, on_hand)
    assert cli.json("report", "movements", "--from", date_in(-90), "--to", date_in(-60),
                    "--outlet", "P1")["rows"] == []


def test_a_period_report_refuses_a_period_that_ends_before_it_starts(cli: Cli) -> None:
    done = cli("report", "movements", "--from", "2026-11-30", "--to", "2026-11-01")
    assert done.returncode == 2 and "invalid to" in one_line_reason(done)
    done = cli("report", "movements", "--from", "yesterday", "--to", "2026-11-01")
    assert done.returncode == 2 and "invalid from" in one_line_reason(done)


def test_the_new_read_models_are_verified_rebuilt_and_reported(cli: Cli) -> None:
    recall_history(cli)
    status = cli.json("projections", "status")
    names = {p["name"] for p in status["projections"]}
    assert {"lots", "periods"} <= names, names
    cli.ok("projections", "rebuild", "lots")
    cli.ok("projections", "rebuild", "periods")
    assert cli.json("trace", "--sku", "AMOX", "--batch", "L7")["now"]["on_shelves_total"] == 26
    verified = cli("audit", "verify", "--json")
    assert verified.returncode == 0, (verified.stdout, verified.stderr)



def test_a_movement_dated_back_moves_every_later_balance(cli: Cli) -> None:
    cli.ok("receive", "--outlet", "P1", "--sku", "AMOX", "--batch", "B1", "--qty", "5",
           "--expires", date_in(300), "--at", days_ago(5), "--reference", "DN-1")
    cli.ok("receive", "--outlet", "P1", "--sku", "AMOX", "--batch", "B1", "--qty", "4",
           "--expires", date_in(300), "--at", days_ago(3), "--reference", "DN-2")
    assert report_row(cli, "--from", date_in(-1), "--to", date_in(0))["opening"] == 9
    # Recorded after the days above were written: they must all move.
    cli.ok("receive", "--outlet", "P1", "--sku", "AMOX", "--batch", "B1", "--qty", "7",
           "--expires", date_in(300), "--at", days_ago(20), "--reference", "DN-3")
    cli.ok("sell", "--outlet", "P1", "--sale", "S-LATE", "--line", "AMOX=2",
           "--at", days_ago(4))
    assert report_row(cli, "--from", date_in(-1), "--to", date_in(0))["opening"] == 14
    row = report_row(cli, "--from", date_in(-4), "--to", date_in(-3))
    assert (row["opening"], row["received"], row["sold"], row["closing"]) == (12, 4, 2, 14)
    assert report_row(cli, "--from", date_in(-10), "--to", date_in(-5))["closing"] == 12
    assert cli("audit", "verify").returncode == 0


def test_a_corrected_receipt_moves_the_lot_its_expiry_and_the_period(cli: Cli) -> None:
    cli.ok("receive", "--outlet", "P1", "--sku", "AMOX", "--batch", "L1", "--qty", "10",
           "--expires", date_in(200), "--reference", "DN-9", "--at", days_ago(2))
    assert cli.json("expiring", "--within", "30d")["expiring"] == []
    cli.ok("correct-receipt", "--outlet", "P1", "--sku", "AMOX", "--receipt", "DN-9",
           "--quantity", "8", "--expires-on", date_in(10), "--reason", "typed wrong")
    listed = cli.json("expiring", "--within", "30d")["expiring"]
    assert [(r["batch_id"], r["quantity"], r["expires_on"]) for r in listed] == [
        ("L1", 8, date_in(10))]
    trace = cli.json("trace", "--sku", "AMOX", "--batch", "L1")
    assert trace["expires_on"] == date_in(10)
    assert [(o["kind"], o["quantity"]) for o in trace["other"]] == [("corrected", -2)]
    row = report_row(cli, "--from", date_in(-5), "--to", date_in(0))
    assert (row["received"], row["other"], row["closing"]) == (10, -2, 8)
    assert cli("audit", "verify").returncode == 0

# --------------------------------------------------------------------------- property


def start_of(day: date) -> datetime:
    """The last moment before `day` begins: a replay includes its `as_of`."""
    return datetime.combine(day, time(), UTC) - timedelta(microseconds=1)


def end_of(day: date) -> datetime:
    return datetime.combine(day + timedelta(days=1), time(), UTC) - timedelta(microseconds=1)


Step = tuple[str, int, int]
"""(what, how many units, how many days ago)."""
steps = st.lists(st.tuples(
    st.sampled_from(["receive", "receive", "sell", "sell", "refund", "write-off", "count",
                     "transfer"]),
    st.integers(1, 12), st.integers(0, 40)), min_size=2, max_size=9)
periods = st.lists(st.tuples(st.integers(0, 45), st.integers(0, 45)), min_size=1,
                   max_size=6)


def record(ledger: Ledger, outlet: str, number: int, step: Step) -> None:
    """Record one step if the ledger accepts it (a sale short of stock then is refused)."""
    what, units, ago = step
    at = NOW - timedelta(days=ago, hours=units)
    name = f"{outlet}-{number}"
    try:
        if what == "receive":
            ledger.receive(outlet=outlet, sku="AMOX", batch_id=f"B{units % 3}",
                           quantity=units * 3, expires_on=TODAY + timedelta(days=400),
                           reference=name, key=name, occurred_at=at)
        elif what == "sell":
            ledger.sell(outlet=outlet, sale_id=name, lines=[("AMOX", units)], occurred_at=at)
        elif what == "refund":
            ledger.refund(sale_id=f"{outlet}-{number - 1}", refund_id=name,
                          lines=[("AMOX", 1)], write_off=units % 2 == 0)
        elif what == "write-off":
            ledger.write_off(outlet=outlet, sku="AMOX", quantity=units, reason="damaged",
                             occurred_at=at)
        elif what == "count":
            ledger.count(outlet=outlet, sku="AMOX", counts={f"B{units % 3}": units},
                         count_id=name, occurred_at=at)
        else:
            ledger.transfer(from_outlet=outlet, to_outlet=f"{outlet}-TO", sku="AMOX",
                            quantity=units, transfer_id=name, occurred_at=at)
    except Refusal:
        pass  # refused (no stock then, no such sale or batch): nothing recorded


def replayed_on_hand(ledger: Ledger, outlet: str, moment: datetime, basis: str) -> int:
    report = ledger_audit.replay(ledger.application, outlet, "AMOX", as_of=moment,
                                 basis="business" if basis == "business" else "recorded")
    return sum(int(row["on_hand"]) for row in report["stock"])


@pytest.mark.parametrize("basis", ["business", "recorded"])
def test_report_balances_are_replays_at_the_periods_bounds(store: str, tmp_path: Path,
                                                           basis: str) -> None:
    check_balances_against_replays(store, tmp_path, basis, examples=5)


@pytest.mark.soak
@pytest.mark.parametrize("basis", ["business", "recorded"])
def test_report_balances_are_replays_over_many_histories(store: str, tmp_path: Path,
                                                         basis: str) -> None:
    check_balances_against_replays(store, tmp_path, basis, examples=200)


def check_balances_against_replays(store: str, tmp_path: Path, basis: str,
                                   examples: int) -> None:
    """Random histories of one outlet (and a transfer's destination), movements dated back
    among them, each step projected on its own; then random periods: each row's balances
    are what a replay gives at the period's start and end, and its movements join them."""
    numbers = itertools.count()
    cli = InProcessCli(store, tmp_path)
    cli.ok("init")
    with Ledger.open(store) as ledger:
        models = ReadModels(ledger.application)
        reads = LotReads(models)

        @settings(max_examples=examples, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(steps, periods)
        def check(history: list[Step], bounds: list[tuple[int, int]]) -> None:
            outlet = f"Q{next(numbers)}"
            for number, step in enumerate(history):
                record(ledger, outlet, number, step)
                # One batch per step: a movement dated before days the read model has
                # already written must move their balances.
                models.catch_up()
            for outlet_reported in (outlet, f"{outlet}-TO"):
                for number, (first_ago, last_ago) in enumerate(bounds):
                    first = TODAY - timedelta(days=max(first_ago, last_ago))
                    last = TODAY - timedelta(days=min(first_ago, last_ago))
                    if number == 0:
                        rows = cli.json("report", "movements", "--from", first.isoformat(),
                                        "--to", last.isoformat(), "--outlet", outlet_reported,
                                        "--basis", basis)["rows"]
                    else:  # the same read, without starting the command each time
                        rows = reads.movements(first, last, outlet_reported, None,
                                               "business" if basis == "business"
                                               else "recorded")
                    opening = rows[0]["opening"] if rows else 0
                    closing = rows[0]["closing"] if rows else 0
                    assert opening == replayed_on_hand(ledger, outlet_reported,
                                                       start_of(first), basis)
                    assert closing == replayed_on_hand(ledger, outlet_reported,
                                                       end_of(last), basis)
                    for row in rows:
                        assert row["closing"] == (
                            row["opening"] + row["received"] - row["sold"]
                            + row["refunded_restocked"] - row["expired"]
                            - row["written_off"] + row["count_variance"]
                            + row["transferred_in"] - row["transferred_out"] + row["other"])

        check()
