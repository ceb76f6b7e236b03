"""What a new user found wrong, tried again as they tried it (issue 20): sales dated before a
batch arrived or after it expired, replay by business time after them, outlet settings that
reset each other, a second receipt's cost overwriting the first's, an expired batch reported
as not expired, sale ids shared by outlets, and a SKU's stock across outlets.

Every test runs the `ledger` command in process (`InProcessCli`), on SQLite and PostgreSQL.
"""

from __future__ import annotations

from datetime import UTC, datetime

from tests.e2e.stores import date_in, days_ago, refused
from tests.e2e.test_cli import Cli, one_line_reason

# --------------------------------------------------------------------------- dated sales


def stock_a_shelf(cli: Cli) -> None:
    """OLD arrived 60 days ago and expired 30 days ago (not swept); NEW arrived today."""
    cli.ok("receive", "--outlet", "O1", "--sku", "AMOX", "--batch", "OLD", "--qty", "10",
           "--expires", date_in(-30), "--at", days_ago(60))
    cli.ok("receive", "--outlet", "O1", "--sku", "AMOX", "--batch", "NEW", "--qty", "10",
           "--expires", date_in(300))


def test_a_sale_dated_before_every_receipt_finds_no_stock(cli: Cli) -> None:
    stock_a_shelf(cli)
    reason = refused(cli, "sell", "--outlet", "O1", "--sale", "S-1990", "--line", "AMOX=3",
                     "--at", "1990-01-01")
    assert "insufficient_stock" in reason and "available 0 at outlet O1" in reason, reason
    assert "on the shelf at 1990-01-01T00:00:00+00:00" in reason, reason


def test_a_sale_takes_only_what_was_on_the_shelf_and_unexpired_at_its_business_time(
        cli: Cli) -> None:
    stock_a_shelf(cli)
    # A week ago OLD had expired and NEW had not arrived: nothing to sell.
    reason = refused(cli, "sell", "--outlet", "O1", "--sale", "S-WEEK", "--line", "AMOX=1",
                     "--at", days_ago(7))
    assert "available 0" in reason, reason
    # 45 days ago OLD was on the shelf and not yet expired: a late sale takes it.
    then = cli.json("sell", "--outlet", "O1", "--sale", "S-45", "--line", "AMOX=4",
                    "--at", days_ago(45))
    assert then["lines"][0]["takes"] == [{"batch_id": "OLD", "quantity": 4}]
    # Today OLD has expired: NEW it is.
    now = cli.json("sell", "--outlet", "O1", "--sale", "S-NOW", "--line", "AMOX=2")
    assert now["lines"][0]["takes"] == [{"batch_id": "NEW", "quantity": 2}]


def test_an_outlet_may_bound_how_late_a_sale_is_dated(cli: Cli) -> None:
    stock_a_shelf(cli)
    assert "sales dated up to 3d back" in cli.ok("outlet", "--outlet", "O1", "--late-sales",
                                                 "72h").stdout
    cli.ok("receive", "--outlet", "O1", "--sku", "AMOX", "--batch", "MID", "--qty", "5",
           "--expires", date_in(200), "--at", days_ago(5))
    reason = refused(cli, "sell", "--outlet", "O1", "--sale", "S-OLD", "--line", "AMOX=1",
                     "--at", days_ago(4))
    assert "late_sale_outside_window" in reason and "late-sales window of 3d" in reason, reason
    inside = cli.json("sell", "--outlet", "O1", "--sale", "S-LATE", "--line", "AMOX=1",
                      "--at", days_ago(2))
    assert inside["lines"][0]["takes"] == [{"batch_id": "MID", "quantity": 1}]
    cli.ok("outlet", "--outlet", "O1", "--late-sales", "none")
    assert cli.json("outlet", "--outlet", "O1")["late_sales_window"] is None
    bad = cli("outlet", "--outlet", "O1", "--late-sales", "soon")
    assert bad.returncode == 2 and "late_sales_window" in one_line_reason(bad)


# --------------------------------------------------------------------------- replay


def test_replay_by_business_time_answers_after_dated_sales(cli: Cli) -> None:
    stock_a_shelf(cli)
    cli("sell", "--outlet", "O1", "--sale", "S-1990", "--line", "AMOX=3", "--at", "1990-01-01")
    cli.ok("sell", "--outlet", "O1", "--sale", "S-45", "--line", "AMOX=4", "--at", days_ago(45))
    cli.ok("sell", "--outlet", "O1", "--sale", "S-NOW", "--line", "AMOX=2")
    early = cli.json("audit", "replay", "--outlet", "O1", "--as-of", "1990-01-02T00:00:00+00:00",
                     "--basis", "business")
    assert early["stock"] == [] and early["negative_batches"] == []
    text = cli.ok("audit", "replay", "--outlet", "O1", "--as-of", "1990-01-02T00:00:00+00:00",
                  "--basis", "business")
    assert text.stdout == "no stock at O1 then\n"
    for moment, batches in ((days_ago(50), {"OLD": 10}), (days_ago(40), {"OLD": 6}),
                            (datetime.now(UTC).isoformat(), {"OLD": 6, "NEW": 8})):
        report = cli.json("audit", "replay", "--outlet", "O1", "--as-of", moment,
                          "--basis", "business")
        assert report["negative_batches"] == [], moment
        assert {b["batch_id"]: b["quantity"] for s in report["stock"]
                for b in s["batches"]} == batches, moment


# --------------------------------------------------------------------------- outlet settings


def test_an_outlet_keeps_the_settings_a_change_does_not_name_and_shows_them(cli: Cli) -> None:
    unknown = cli("outlet", "--outlet", "X")
    assert unknown.returncode == 1 and "unknown_outlet" in one_line_reason(unknown)
    cli.ok("outlet", "--outlet", "X", "--allow-negative")
    changed = cli.json("outlet", "--outlet", "X", "--policy", "fifo")
    assert (changed["allocation_policy"], changed["allow_negative"]) == ("fifo", True)
    cli.ok("outlet", "--outlet", "X", "--late-sales", "3d")
    cli.ok("outlet", "--outlet", "X", "--no-allow-negative")
    head = cli.head()
    shown = cli.json("outlet", "--outlet", "X")
    assert shown == {"outlet": "X", "allocation_policy": "fifo", "allow_negative": False,
                     "late_sales_window": "3d"}
    assert cli.ok("outlet", "--outlet", "X").stdout == (
        "outlet X: fifo, refuses negative stock, sales dated up to 3d back\n")
    assert cli.head() == head  # showing records nothing


# --------------------------------------------------------------------------- cost layers


def test_a_second_receipt_of_a_batch_keeps_the_first_receipts_cost(cli: Cli) -> None:
    cli.ok("receive", "--outlet", "O1", "--sku", "PARA", "--batch", "P1", "--qty", "1000",
           "--cost", "1.00", "--reference", "DN-1")
    cli.ok("receive", "--outlet", "O1", "--sku", "PARA", "--batch", "P1", "--qty", "100",
           "--cost", "2.00", "--reference", "DN-2")
    [batch] = cli.json("batches", "--outlet", "O1", "--sku", "PARA")["batches"]
    # Not 1,100 at 2.00: the batch has no one unit cost, and is worth 1,200.00.
    assert (batch["quantity"], batch["unit_cost"]) == (1100, None)
    assert batch["value"] == "1200.00"
    assert [(x["quantity"], x["unit_cost"], x["source"]) for x in batch["layers"]] == [
        (1000, "1.00", "receipt DN-1"), (100, "2.00", "receipt DN-2")]
    text = cli.ok("batches", "--outlet", "O1", "--sku", "PARA").stdout
    assert "value 1200.00" in text and "[1000 @ 1.00 + 100 @ 2.00]" in text, text

    # Units leave first in, first out; a transfer carries the layers it takes.
    cli.ok("sell", "--outlet", "O1", "--sale", "S-1", "--line", "PARA=950")
    sent = cli.json("transfer", "--from", "O1", "--to", "O2", "--sku", "PARA", "--qty", "60",
                    "--transfer", "T-1")
    assert [(b["quantity"], b["unit_cost"]) for b in sent["batches"]] == [
        (50, "1.00"), (10, "2.00")]
    [left] = cli.json("batches", "--outlet", "O1", "--sku", "PARA")["batches"]
    assert (left["quantity"], left["value"], left["unit_cost"]) == (90, "180.00", "2.00")
    [there] = cli.json("batches", "--outlet", "O2", "--sku", "PARA")["batches"]
    assert (there["quantity"], there["value"]) == (60, "70.00")


# --------------------------------------------------------------------------- expired batches


def test_batches_reports_a_batch_past_its_expiry_date_as_expired_before_the_sweep(
        cli: Cli) -> None:
    cli.ok("receive", "--outlet", "O1", "--sku", "AMOX", "--batch", "GONE", "--qty", "5",
           "--expires", date_in(-1), "--at", days_ago(20))
    cli.ok("receive", "--outlet", "O1", "--sku", "AMOX", "--batch", "GOOD", "--qty", "5",
           "--expires", date_in(30))
    listed = cli.json("batches", "--outlet", "O1", "--sku", "AMOX")
    assert {b["batch_id"]: b["expired"] for b in listed["batches"]} == {
        "GONE": True, "GOOD": False}
    assert {b["batch_id"]: b["written_off_as_expired"] for b in listed["batches"]} == {
        "GONE": False, "GOOD": False}
    assert listed["on_date"] == datetime.now(UTC).date().isoformat()  # reckoned today, UTC
    text = cli.ok("batches", "--outlet", "O1", "--sku", "AMOX").stdout
    assert "(expired, not yet written off)" in text.splitlines()[0], text
    cli.ok("expire")
    after = cli.json("batches", "--outlet", "O1", "--sku", "AMOX")
    assert [b["batch_id"] for b in after["batches"]] == ["GOOD"]


# --------------------------------------------------------------------------- sale ids


def test_a_sale_id_used_at_another_outlet_is_refused_naming_that_outlet(cli: Cli) -> None:
    for outlet in ("Y", "W"):
        cli.ok("receive", "--outlet", outlet, "--sku", "AMOX", "--batch", "B1", "--qty", "5")
    cli.ok("sell", "--outlet", "Y", "--sale", "1", "--line", "AMOX=1")
    for key in ((), ("--key", "TILL-W-1")):
        reason = refused(cli, "sell", "--outlet", "W", "--sale", "1", "--line", "AMOX=1", *key)
        assert "sale 1 is already recorded, at outlet Y" in reason, reason
        assert "sale ids are unique across all outlets" in reason, reason
    assert cli.json("sell", "--outlet", "Y", "--sale", "1", "--line", "AMOX=1")["replayed"]


# --------------------------------------------------------------------------- stock across outlets


def test_the_stock_of_a_sku_at_every_outlet_with_a_total(cli: Cli) -> None:
    cli.ok("receive", "--outlet", "O2", "--sku", "AMOX", "--batch", "B1", "--qty", "7")
    cli.ok("receive", "--outlet", "O1", "--sku", "AMOX", "--batch", "B2", "--qty", "5",
           "--expires", date_in(-1), "--at", days_ago(10))
    cli.ok("receive", "--outlet", "O1", "--sku", "AMOX", "--batch", "B3", "--qty", "3")
    cli.ok("receive", "--outlet", "O3", "--sku", "PARA", "--batch", "P1", "--qty", "9")
    listed = cli.json("stock", "--sku", "AMOX")
    assert [(r["outlet"], r["on_hand"], r["available"]) for r in listed["stock"]] == [
        ("O1", 8, 3), ("O2", 7, 7)]
    assert listed["total"] == {"on_hand": 15, "available": 10, "held": 0}
    assert listed["sku"] == "AMOX" and listed["position"] == cli.head()
    assert cli.ok("stock", "--sku", "AMOX").stdout.splitlines() == [
        f"{'O1':<20} on hand {8:>8}  available {3:>8}",
        f"{'O2':<20} on hand {7:>8}  available {7:>8}",
        f"{'total':<20} on hand {15:>8}  available {10:>8}"]
    assert cli.ok("stock", "--sku", "NONE").stdout == "no stock of NONE recorded at any outlet\n"
    neither = cli("stock")
    assert neither.returncode == 2 and "--outlet, --sku" in one_line_reason(neither)
