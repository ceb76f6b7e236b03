"""The back office from the command line (issue 20): holds and releases, corrections of
receipts, whole-SKU counts with found stock, and late sales short of stock listed as
discrepancies until a receipt or count settles them.

Every test runs the `ledger` command in process (`InProcessCli`), on SQLite and PostgreSQL.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from tests.e2e.stores import date_in, days_ago, refused
from tests.e2e.test_cli import Cli, one_line_reason


def stock_of(cli: Cli, outlet: str, sku: str) -> dict[str, Any]:
    rows = cli.json("stock", "--outlet", outlet, "--sku", sku)["stock"]
    assert len(rows) == 1
    row: dict[str, Any] = rows[0]
    return row


def two_lots(cli: Cli) -> None:
    """At O1: LOT-A (expires first) and LOT-B of AMOX, 10 each, received two days ago."""
    cli.ok("receive", "--outlet", "O1", "--sku", "AMOX", "--batch", "LOT-A", "--qty", "10",
           "--expires", date_in(100), "--at", days_ago(2))
    cli.ok("receive", "--outlet", "O1", "--sku", "AMOX", "--batch", "LOT-B", "--qty", "10",
           "--expires", date_in(200), "--at", days_ago(2))


# --------------------------------------------------------------------------- holds


def test_a_held_lot_stays_on_hand_is_not_sold_and_shows_as_held(cli: Cli) -> None:
    two_lots(cli)
    held = cli.json("hold", "--sku", "AMOX", "--batch", "LOT-A", "--reason", "recall R-77")
    assert (held["held"], held["outlet"], held["reason"]) == (True, None, "recall R-77")
    assert stock_of(cli, "O1", "AMOX") | {"reorder_level": None} == {
        "outlet": "O1", "sku": "AMOX", "on_hand": 20, "available": 10, "held": 10,
        "reorder_level": None}
    assert "held       10" in cli.ok("stock", "--outlet", "O1").stdout
    sale = cli.json("sell", "--outlet", "O1", "--sale", "S-1", "--line", "AMOX=3")
    assert sale["lines"][0]["takes"] == [{"batch_id": "LOT-B", "quantity": 3}]
    assert sale["lines"][0]["stock"] == {"outlet": "O1", "sku": "AMOX", "on_hand": 17,
                                         "available": 7, "held": 10}
    batches = cli.json("batches", "--outlet", "O1", "--sku", "AMOX")["batches"]
    assert {b["batch_id"]: b["on_hold"] for b in batches} == {"LOT-A": True, "LOT-B": False}
    assert "(held)" in cli.ok("batches", "--outlet", "O1", "--sku", "AMOX").stdout
    reason = refused(cli, "sell", "--outlet", "O1", "--sale", "S-2", "--line", "AMOX=8")
    assert "insufficient_stock" in reason and "available 7" in reason, reason
    # A transfer and a write-off without a named batch skip it too; one naming it may not.
    cli.ok("transfer", "--from", "O1", "--to", "O2", "--sku", "AMOX", "--qty", "2",
           "--transfer", "T-1")
    assert cli.json("batches", "--outlet", "O2", "--sku", "AMOX")["batches"][0][
        "batch_id"] == "LOT-B"
    off = cli.json("write-off", "--outlet", "O1", "--sku", "AMOX", "--qty", "1",
                   "--reason", "damaged")
    assert off["takes"] == [{"batch_id": "LOT-B", "quantity": 1}]
    destroyed = cli.json("write-off", "--outlet", "O1", "--sku", "AMOX", "--qty", "10",
                         "--batch", "LOT-A", "--reason", "recall R-77: destroyed")
    assert destroyed["takes"] == [{"batch_id": "LOT-A", "quantity": 10}]
    listed = cli.json("holds", "--sku", "AMOX")["holds"]
    assert [(h["batch_id"], h["outlet"], h["reason"]) for h in listed] == [
        ("LOT-A", None, "recall R-77")]


def test_a_hold_everywhere_covers_stock_in_transit_and_outlets_opened_later(cli: Cli) -> None:
    two_lots(cli)
    cli.ok("transfer", "--from", "O1", "--to", "O9", "--sku", "AMOX", "--qty", "4",
           "--transfer", "T-9", "--in-transit")
    cli.ok("hold", "--sku", "AMOX", "--batch", "LOT-A", "--reason", "quality check")
    cli.ok("transfer-receive", "--transfer", "T-9")
    arrived = stock_of(cli, "O9", "AMOX")
    assert (arrived["on_hand"], arrived["available"], arrived["held"]) == (4, 0, 4)
    reason = refused(cli, "sell", "--outlet", "O9", "--sale", "S-9", "--line", "AMOX=1")
    assert "available 0" in reason, reason
    released = cli.json("release", "--sku", "AMOX", "--batch", "LOT-A", "--reason", "passed")
    assert released["held"] is False
    assert stock_of(cli, "O9", "AMOX")["available"] == 4
    cli.ok("sell", "--outlet", "O9", "--sale", "S-9", "--line", "AMOX=1")


def test_a_hold_at_one_outlet_leaves_the_others_and_releases_name_their_scope(
        cli: Cli) -> None:
    two_lots(cli)
    cli.ok("receive", "--outlet", "O2", "--sku", "AMOX", "--batch", "LOT-A", "--qty", "5",
           "--expires", date_in(100))
    cli.ok("hold", "--sku", "AMOX", "--batch", "LOT-A", "--outlet", "O2", "--reason", "damp")
    assert stock_of(cli, "O2", "AMOX")["available"] == 0
    assert stock_of(cli, "O1", "AMOX")["available"] == 20
    again = refused(cli, "hold", "--sku", "AMOX", "--batch", "LOT-A", "--outlet", "O2",
                    "--reason", "twice")
    assert "lot_already_held" in again, again
    wrong = refused(cli, "release", "--sku", "AMOX", "--batch", "LOT-A", "--reason", "x")
    assert "lot_not_held" in wrong and "held at outlet O2" in wrong, wrong
    unknown = refused(cli, "hold", "--sku", "AMOX", "--batch", "LOT-A", "--outlet", "NOWHERE",
                      "--reason", "x")
    assert "unknown_outlet" in unknown, unknown
    cli.ok("release", "--sku", "AMOX", "--batch", "LOT-A", "--outlet", "O2", "--reason", "dry")
    assert stock_of(cli, "O2", "AMOX")["available"] == 5


def test_holds_and_releases_are_recorded_with_actor_and_reason(cli: Cli) -> None:
    two_lots(cli)
    cli.ok("hold", "--sku", "AMOX", "--batch", "LOT-B", "--reason", "recall", "--actor", "qa")
    listed = cli.json("holds", "--outlet", "O1")["holds"]
    assert [(h["batch_id"], h["actor"], h["reason"]) for h in listed] == [
        ("LOT-B", "qa", "recall")]
    replayed = cli.json("audit", "replay", "--outlet", "O1", "--sku", "AMOX",
                        "--as-of", datetime.now(UTC).isoformat())
    assert replayed["stock"][0]["available"] == 10 and replayed["stock"][0]["held"] == 10
    released = cli.json("release", "--sku", "AMOX", "--batch", "LOT-B", "--reason", "cleared",
                        "--actor", "qa-lead")
    assert released["reason"] == "cleared"
    assert cli.json("holds")["holds"] == []
    replayed = cli.json("audit", "replay", "--outlet", "O1", "--sku", "AMOX",
                        "--as-of", datetime.now(UTC).isoformat())
    assert replayed["stock"][0]["available"] == 20 and replayed["stock"][0]["held"] == 0


# --------------------------------------------------------------------------- corrections


def test_a_receipt_typed_wrong_is_corrected_and_the_original_stays(cli: Cli) -> None:
    cli.ok("receive", "--outlet", "O1", "--sku", "AMOX", "--batch", "LOT-A", "--qty", "100",
           "--expires", date_in(300), "--cost", "1.00", "--reference", "DN-1",
           "--at", days_ago(3))
    cli.ok("receive", "--outlet", "O1", "--sku", "AMOX", "--batch", "LOT-B", "--qty", "10",
           "--expires", date_in(200), "--at", days_ago(3))
    before = datetime.now(UTC).isoformat()
    cli.ok("sell", "--outlet", "O1", "--sale", "S-1", "--line", "AMOX=5")  # from LOT-B
    fixed = cli.json("correct-receipt", "--outlet", "O1", "--sku", "AMOX", "--receipt", "DN-1",
                     "--quantity", "10", "--expires-on", date_in(100), "--unit-cost", "1.50",
                     "--reason", "typed 100 for 10")
    assert fixed["quantity"] == [100, 10] and fixed["unit_cost"] == ["1.00", "1.50"]
    assert fixed["stock"]["on_hand"] == 15
    # FEFO follows the corrected expiry: LOT-A now expires first.
    sale = cli.json("sell", "--outlet", "O1", "--sale", "S-2", "--line", "AMOX=2")
    assert sale["lines"][0]["takes"] == [{"batch_id": "LOT-A", "quantity": 2}]
    batches = {b["batch_id"]: b for b in cli.json("batches", "--outlet", "O1",
                                                 "--sku", "AMOX")["batches"]}
    assert batches["LOT-A"]["expires_on"] == date_in(100)
    assert batches["LOT-A"]["layers"][0]["unit_cost"] == "1.50"
    history = cli.json("history", "--outlet", "O1", "--sku", "AMOX")["movements"]
    kinds = [m["kind"] for m in history]
    assert "corrected" in kinds and kinds.count("received") == 2
    # Replay as of before the correction shows what the ledger believed then.
    then = cli.json("audit", "replay", "--outlet", "O1", "--as-of", before)
    assert {b["batch_id"]: b["quantity"] for b in then["stock"][0]["batches"]} == {
        "LOT-A": 100, "LOT-B": 10}
    now = cli.json("audit", "replay", "--outlet", "O1", "--as-of", datetime.now(UTC).isoformat())
    assert {b["batch_id"]: (b["quantity"], b["expires_on"])
            for b in now["stock"][0]["batches"]} == {"LOT-A": (8, date_in(100)),
                                                     "LOT-B": (5, date_in(200))}


def test_availability_and_the_read_models_follow_a_corrected_expiry(cli: Cli) -> None:
    cli.ok("receive", "--outlet", "O1", "--sku", "AMOX", "--batch", "LOT-A", "--qty", "6",
           "--expires", date_in(30), "--at", days_ago(10))
    assert stock_of(cli, "O1", "AMOX")["available"] == 6
    cli.ok("correct-receipt", "--outlet", "O1", "--sku", "AMOX", "--receipt", "LOT-A",
           "--expires-on", date_in(-1), "--reason", "expiry misread")
    row = stock_of(cli, "O1", "AMOX")
    assert (row["on_hand"], row["available"]) == (6, 0)
    reason = refused(cli, "sell", "--outlet", "O1", "--sale", "S-X", "--line", "AMOX=1")
    assert "available 0" in reason, reason
    swept = cli.json("expire", "--outlet", "O1", "--sku", "AMOX")
    assert [(e["batch_id"], e["quantity"]) for e in swept["expired"]] == [("LOT-A", 6)]
    assert cli.json("audit", "verify")["ok"] is True  # the read models recompute alike
    refused_now = refused(cli, "correct-receipt", "--outlet", "O1", "--sku", "AMOX",
                          "--receipt", "LOT-A", "--expires-on", date_in(60), "--reason", "x")
    assert "written off as expired" in refused_now, refused_now


def test_a_correction_never_takes_away_units_already_sold(cli: Cli) -> None:
    cli.ok("receive", "--outlet", "O1", "--sku", "AMOX", "--batch", "LOT-A", "--qty", "10",
           "--at", days_ago(1))
    cli.ok("sell", "--outlet", "O1", "--sale", "S-1", "--line", "AMOX=7")
    reason = refused(cli, "correct-receipt", "--outlet", "O1", "--sku", "AMOX",
                     "--receipt", "LOT-A", "--quantity", "5", "--reason", "typo")
    assert "correction_refused" in reason and "already sold" in reason, reason
    unknown = refused(cli, "correct-receipt", "--outlet", "O1", "--sku", "AMOX",
                      "--receipt", "DN-404", "--quantity", "5", "--reason", "typo")
    assert "unknown_receipt" in unknown and "LOT-A" in unknown, unknown
    nothing = cli("correct-receipt", "--outlet", "O1", "--sku", "AMOX", "--receipt", "LOT-A",
                  "--reason", "typo")
    assert nothing.returncode == 2 and "quantity" in one_line_reason(nothing)
    moved = cli.json("correct-receipt", "--outlet", "O1", "--sku", "AMOX", "--receipt",
                     "LOT-A", "--quantity", "8", "--reason", "two were never delivered")
    assert moved["stock"]["on_hand"] == 1


def test_the_expiry_of_a_batch_sent_to_another_outlet_is_not_corrected_at_one(
        cli: Cli) -> None:
    """Units already transferred hold the expiry they left with at their new outlet: a
    correction of the receipt's expiry or batch id is refused, naming where they went, so no
    outlet is left selling by a date the ledger knows is wrong; quantity and cost still may."""
    cli.ok("receive", "--outlet", "O1", "--sku", "AMOX", "--batch", "LOT-A", "--qty", "10",
           "--expires", date_in(300), "--reference", "DN-7", "--at", days_ago(1))
    cli.ok("transfer", "--from", "O1", "--to", "O2", "--sku", "AMOX", "--qty", "4",
           "--transfer", "T-1")
    for change in (("--expires-on", date_in(20)), ("--batch", "LOT-Z")):
        reason = refused(cli, "correct-receipt", "--outlet", "O1", "--sku", "AMOX",
                         "--receipt", "DN-7", *change, "--reason", "typo")
        assert "correction_refused" in reason and "transferred to outlet(s) O2" in reason
    cost = cli.json("correct-receipt", "--outlet", "O1", "--sku", "AMOX", "--receipt", "DN-7",
                    "--unit-cost", "0.50", "--reason", "invoice price")
    assert cost["unit_cost"][1] == "0.50"


def test_a_receipt_under_the_wrong_batch_id_moves_to_the_right_one(cli: Cli) -> None:
    cli.ok("receive", "--outlet", "O1", "--sku", "AMOX", "--batch", "LOT-X", "--qty", "6",
           "--expires", date_in(50), "--reference", "DN-2")
    fixed = cli.json("correct-receipt", "--outlet", "O1", "--sku", "AMOX", "--receipt", "DN-2",
                     "--batch", "LOT-Y", "--reason", "label misread")
    assert fixed["corrected_batch_id"] == "LOT-Y"
    batches = cli.json("batches", "--outlet", "O1", "--sku", "AMOX")["batches"]
    assert [(b["batch_id"], b["quantity"]) for b in batches] == [("LOT-Y", 6)]
    assert stock_of(cli, "O1", "AMOX")["available"] == 6


# --------------------------------------------------------------------------- counts


def test_a_whole_sku_count_counts_batches_not_named_as_zero_and_records_found_stock(
        cli: Cli) -> None:
    two_lots(cli)
    counted = cli.json("count", "--outlet", "O1", "--sku", "AMOX", "--whole-sku",
                       "--batch", "LOT-A=8", "--batch", "LOT-N=3", "--found", "LOT-N",
                       "--found-expires", f"LOT-N={date_in(30)}", "--found-cost", "LOT-N=0.5",
                       "--count-id", "C-1")
    variances = {c["batch_id"]: c["variance"] for c in counted["counts"]}
    assert variances["LOT-A"] == -2 and variances["LOT-B"] == -10
    assert counted["found"] == [{"batch_id": "LOT-N", "quantity": 3,
                                 "expires_on": date_in(30), "unit_cost": "0.5"}]
    assert stock_of(cli, "O1", "AMOX")["on_hand"] == 11
    kinds = {m["kind"] for m in cli.json("history", "--outlet", "O1")["movements"]}
    assert "found" in kinds
    again = cli.json("count", "--outlet", "O1", "--sku", "AMOX", "--whole-sku",
                     "--batch", "LOT-A=8", "--batch", "LOT-N=3", "--found", "LOT-N",
                     "--found-expires", f"LOT-N={date_in(30)}", "--found-cost", "LOT-N=0.5",
                     "--count-id", "C-1")
    assert again["replayed"] is True
    unknown = refused(cli, "count", "--outlet", "O1", "--sku", "AMOX", "--batch", "LOT-Q=1")
    assert "unknown_batch" in unknown, unknown


# --------------------------------------------------------------------------- late sales


def test_a_late_sale_short_of_stock_is_recorded_and_listed_until_a_receipt_settles_it(
        cli: Cli) -> None:
    cli.ok("receive", "--outlet", "O1", "--sku", "AMOX", "--batch", "LOT-A", "--qty", "2",
           "--at", days_ago(2))
    cli.ok("outlet", "--outlet", "O1", "--late-sales", "72h")
    assert cli.json("outlet", "--outlet", "O1")["allow_negative"] is False
    # The till was offline: it sold 5 a day ago, when only 2 were on the shelf.
    late = cli.json("sell", "--outlet", "O1", "--sale", "TILL3-17", "--line", "AMOX=5",
                    "--at", days_ago(1), "--key", "till3:17")
    assert late["lines"][0]["unallocated"] == 3
    # The till re-syncs after a crash: nothing is recorded twice.
    head = cli.head()
    again = cli.json("sell", "--outlet", "O1", "--sale", "TILL3-17", "--line", "AMOX=5",
                     "--at", days_ago(1), "--key", "till3:17")
    assert again["replayed"] is True and cli.head() == head
    listed = cli.json("discrepancies", "--outlet", "O1")["discrepancies"]
    assert [(d["sku"], d["shortfall"]) for d in listed] == [("AMOX", 3)]
    assert [(s["sale_id"], s["short"], s["late"]) for s in listed[0]["sales"]] == [
        ("TILL3-17", 3, True)]
    assert "TILL3-17" in cli.ok("discrepancies").stdout
    # Not late (now), the outlet still refuses a sale short of stock.
    assert "insufficient_stock" in refused(cli, "sell", "--outlet", "O1", "--sale", "S-NOW",
                                           "--line", "AMOX=1")
    cli.ok("receive", "--outlet", "O1", "--sku", "AMOX", "--batch", "LOT-B", "--qty", "10")
    assert cli.json("discrepancies")["discrepancies"] == []
    assert stock_of(cli, "O1", "AMOX")["on_hand"] == 7


def test_a_late_shortfall_is_settled_by_a_whole_sku_count(cli: Cli) -> None:
    cli.ok("receive", "--outlet", "O1", "--sku", "AMOX", "--batch", "LOT-A", "--qty", "1",
           "--at", days_ago(2))
    cli.ok("outlet", "--outlet", "O1", "--late-sales", "3d")
    cli.ok("sell", "--outlet", "O1", "--sale", "S-L", "--line", "AMOX=4", "--at", days_ago(1))
    assert "short 3" in cli.ok("discrepancies", "--outlet", "O1").stdout
    cli.ok("count", "--outlet", "O1", "--sku", "AMOX", "--whole-sku", "--batch", "LOT-A=0")
    assert cli.ok("discrepancies", "--outlet", "O1").stdout == "no discrepancies\n"


def test_units_of_a_late_sale_refunded_after_a_receipt_settled_its_shortfall_are_written_off(
        cli: Cli) -> None:
    cli.ok("receive", "--outlet", "O1", "--sku", "AMOX", "--batch", "LOT-A", "--qty", "1",
           "--cost", "1.00", "--at", days_ago(2))
    cli.ok("outlet", "--outlet", "O1", "--late-sales", "72h")
    cli.ok("sell", "--outlet", "O1", "--sale", "S-L", "--line", "AMOX=3", "--at", days_ago(1))
    cli.ok("receive", "--outlet", "O1", "--sku", "AMOX", "--batch", "LOT-B", "--qty", "5",
           "--cost", "2.00")
    cli.ok("refund", "--sale", "S-L", "--refund", "R-1", "--line", "AMOX=3")
    row = stock_of(cli, "O1", "AMOX")
    batches = cli.json("batches", "--outlet", "O1", "--sku", "AMOX")["batches"]
    assert row["on_hand"] == sum(b["quantity"] for b in batches) == 4  # none in no batch
    assert cli.json("discrepancies")["discrepancies"] == []
    assert cli.json("audit", "verify")["ok"] is True
