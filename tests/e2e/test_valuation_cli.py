"""Valuation as an accountant types it (issue 21): a store currency, opening balances
imported from a CSV, a sale, a refund, a transfer through transit, the expiry sweep, then
`ledger report valuation` and `ledger report cogs` against figures worked out by hand below;
`audit export`'s cost columns and `audit verify`'s value conservation on the same store.

Every test runs the `ledger` command in process (`InProcessCli`), on SQLite and PostgreSQL.
"""

from __future__ import annotations

import csv
import io
import json
import time
from datetime import UTC, datetime
from pathlib import Path

from ledger.app.service import Ledger
from projections.runner import ReadModels
from projections.store import ReadStore
from tests.e2e.test_cli import Cli, one_line_reason

BALANCES = (
    "outlet,sku,batch,quantity,expires_on,unit_cost,received_at\n"
    "O1,AMOX,L1,10,2030-01-01,1.00,2026-11-01T09:00:00Z\n"
    "O1,AMOX,L1,10,2030-01-01,1.20,2026-11-02T09:00:00Z\n"
    "O1,AMOX,L2,5,2026-11-20,0.50,2026-11-01T10:00:00Z\n"
    "O1,PARA,P1,20,,,2026-11-01T09:00:00Z\n"
)


def today() -> str:
    return datetime.now(UTC).date().isoformat()


def cogs(cli: Cli, *extra: str) -> list[dict[str, str]]:
    done = cli.ok("report", "cogs", "--from", "2026-01-01", "--to", today(), *extra)
    return list(csv.DictReader(io.StringIO(done.stdout)))


def item(report: dict[str, object], outlet: str, sku: str) -> dict[str, object]:
    rows = report["items"]
    assert isinstance(rows, list)
    [found] = [row for row in rows if (row["outlet"], row["sku"]) == (outlet, sku)]
    return found


def test_import_sell_refund_transfer_expire_then_valuation_and_cogs_by_hand(
        cli: Cli, tmp_path: Path) -> None:
    assert cli.json("settings", "--currency", "EUR", "--cost-places", "2")["currency"] == "EUR"
    path = tmp_path / "balances.csv"
    path.write_text(BALANCES, encoding="utf-8")
    cli.ok("import", "balances", str(path))

    # Today L2 has expired (2026-11-20): FEFO passes it over. L1 has two layers from the
    # import: 10 at 1.00 (1 Nov) then 10 at 1.20 (2 Nov).
    sale = cli.json("sell", "--outlet", "O1", "--sale", "S-1", "--line", "AMOX=12")
    line = sale["lines"][0]
    assert line["costs"] == [{"batch_id": "L1", "quantity": 10, "unit_cost": "1.00"},
                             {"batch_id": "L1", "quantity": 2, "unit_cost": "1.20"}]
    assert line["cost"] == "12.40"                   # 10 * 1.00 + 2 * 1.20
    time.sleep(0.05)
    after_sale = datetime.now(UTC).isoformat()
    time.sleep(0.05)

    # The 3 returned left first at 1.00: they come back at 1.00.
    refund = cli.json("refund", "--sale", "S-1", "--refund", "R-1", "--line", "AMOX=3")
    assert refund["lines"][0]["restocked_cost"] == "3.00"

    # 6 to O2 through transit: L1's oldest layer now is the 8 left at 1.20 (received 2 Nov;
    # the refund's layer arrived today).
    cli.ok("transfer", "--from", "O1", "--to", "O2", "--sku", "AMOX", "--qty", "6",
           "--transfer", "T-1", "--in-transit")
    in_transit = cli.json("report", "valuation")
    assert in_transit["in_transit"] == [{
        "transfer_id": "T-1", "from_outlet": "O1", "to_outlet": "O2", "sku": "AMOX",
        "quantity": 6, "value": "7.20", "unvalued": 0}]
    assert in_transit["totals"]["in_transit_value"] == "7.20"
    cli.ok("transfer-receive", "--transfer", "T-1")

    # The sweep writes off L2: 5 at 0.50.
    cli.ok("expire")
    cli.ok("sell", "--outlet", "O2", "--sale", "S-2", "--line", "AMOX=2")  # 2 * 1.20

    report = cli.json("report", "valuation")
    assert report["currency"] == "EUR"
    # O1 AMOX: L1 holds 2 at 1.20 and the 3 refunded at 1.00 = 5.40; L2 none.
    assert item(report, "O1", "AMOX") == {"outlet": "O1", "sku": "AMOX", "quantity": 5,
                                          "value": "5.40", "unvalued": 0, "shortfall": 0}
    # PARA came without a cost: unvalued, never zero.
    assert item(report, "O1", "PARA")["unvalued"] == 20
    # O2 AMOX: 4 left of the 6 at 1.20.
    assert item(report, "O2", "AMOX")["value"] == "4.80"
    assert report["outlets"] == [
        {"outlet": "O1", "quantity": 25, "value": "5.40", "unvalued": 20},
        {"outlet": "O2", "quantity": 4, "value": "4.80", "unvalued": 0}]
    assert report["totals"] == {"quantity": 29, "value": "10.20", "unvalued": 20,
                                "in_transit_quantity": 0, "in_transit_value": "0"}
    assert cli.json("report", "valuation", "--outlet", "O2")["totals"]["value"] == "4.80"
    text = cli.ok("report", "valuation").stdout.splitlines()
    assert text[0] == "valuation in EUR"
    assert "  O1 PARA: 20, 20 unvalued (no cost recorded)" in text
    assert text[-1] == "total: 29 worth 10.20, 20 unvalued (no cost recorded)"

    # Between the sale and the refund, by replay: L1 8 at 1.20 = 9.60, L2 5 at 0.50 = 2.50.
    then = cli.json("report", "valuation", "--as-of", after_sale)
    assert item(then, "O1", "AMOX")["value"] == "12.10"
    assert item(then, "O1", "AMOX")["quantity"] == 13

    rows = cogs(cli)
    lines = [(r["kind"], r["sale_id"], r["sku"], r["outlet"], r["batches"], r["quantity"],
              r["cost"]) for r in rows if r["type"] == "line"]
    assert lines == [
        ("sale", "S-1", "AMOX", "O1", "L1:10@1.00;L1:2@1.20", "12", "12.40"),
        ("refund", "S-1", "AMOX", "O1", "L1:3@1.00", "-3", "-3.00"),
        ("sale", "S-2", "AMOX", "O2", "L1:2@1.20", "2", "2.40")]
    # 12.40 - 3.00 + 2.40
    assert [(r["date"], r["cost"]) for r in rows if r["type"] == "day"] == [
        (today(), "11.80")]
    assert [r["sale_id"] for r in cogs(cli, "--outlet", "O2") if r["type"] == "line"] == \
        ["S-2"]
    jsonl = cli.ok("report", "cogs", "--from", today(), "--to", today(), "--format", "jsonl")
    assert [json.loads(text)["cost"] for text in jsonl.stdout.splitlines()] == [
        "12.40", "-3.00", "2.40", "11.80"]

    export = cli.ok("audit", "export", "--format", "csv")
    exported = list(csv.DictReader(io.StringIO(export.stdout)))
    by_kind = {(r["kind"], r["reference"], r["batch_id"]): r["value"] for r in exported}
    assert by_kind[("sold", "S-1", "L1")] == "-12.40"
    assert by_kind[("refunded", "R-1", "L1")] == "3.00"
    assert by_kind[("expired", "expiry sweep as of " + today(), "L2")] == "-2.50"
    assert by_kind[("transfer_dispatched", "T-1", "L1")] == "-7.20"
    assert by_kind[("transfer_received", "T-1", "L1")] == "7.20"
    assert [r["unvalued"] for r in exported if r["sku"] == "PARA"] == ["20"]

    assert cli.json("audit", "verify")["ok"] is True


def test_a_sale_into_negative_stock_is_valued_when_a_receipt_settles_it(cli: Cli) -> None:
    cli.ok("outlet", "--outlet", "O3", "--allow-negative")
    cli.ok("receive", "--outlet", "O3", "--sku", "AMOX", "--batch", "B1", "--qty", "4",
           "--cost", "1.50", "--at", "2026-11-01T09:00:00Z")
    sale = cli.json("sell", "--outlet", "O3", "--sale", "S-9", "--line", "AMOX=6")
    assert (sale["lines"][0]["cost"], sale["lines"][0]["unallocated"]) == ("6.00", 2)
    assert cli.json("report", "valuation")["pending_valuation"] == [
        {"outlet": "O3", "sku": "AMOX", "sale_id": "S-9", "quantity": 2}]
    cli.ok("receive", "--outlet", "O3", "--sku", "AMOX", "--batch", "B2", "--qty", "10",
           "--cost", "2.25")
    rows = [r for r in cogs(cli) if r["type"] == "line"]
    assert [(r["kind"], r["sale_id"], r["quantity"], r["cost"], r["valued_late"],
             r["pending"]) for r in rows] == [
        ("sale", "S-9", "4", "6.00", "False", "2"),
        ("valued late", "S-9", "2", "4.50", "True", "0")]
    report = cli.json("report", "valuation")
    assert report["pending_valuation"] == []
    assert report["valued_late"] == [
        {"outlet": "O3", "sku": "AMOX", "sale_id": "S-9", "quantity": 2}]
    assert item(report, "O3", "AMOX")["value"] == "18.00"  # 8 of B2 at 2.25
    assert cli.json("audit", "verify")["ok"] is True


def test_a_cost_with_more_places_than_the_store_allows_is_refused(cli: Cli,
                                                                  tmp_path: Path) -> None:
    cli.ok("settings", "--currency", "KES", "--cost-places", "2")
    shown = cli.ok("settings")
    assert shown.stdout.strip() == "store currency: KES, costs of up to 2 places"
    head = cli.head()
    done = cli("receive", "--outlet", "O1", "--sku", "AMOX", "--batch", "B1", "--qty", "4",
               "--cost", "1.505")
    assert done.returncode == 2
    assert one_line_reason(done) == (
        "ledger: invalid unit_cost: 1.505 has 3 decimal places; this store's costs have at "
        "most 2 (KES)")
    assert cli.head() == head, "nothing recorded"
    path = tmp_path / "balances.csv"
    path.write_text(BALANCES.replace("1.20", "1.205"), encoding="utf-8")
    imported = cli("import", "balances", str(path))
    assert imported.returncode == 2
    assert "line 3: unit_cost: 1.205 has 3 decimal places" in imported.stderr, imported.stderr
    assert cli.head() == head, "nothing imported"
    again = cli("settings", "--currency", "EUR", "--cost-places", "2")
    assert again.returncode == 1 and "currency_already_set" in again.stderr
    cli.ok("settings", "--currency", "KES", "--cost-places", "2")  # the same: a no-op


def test_history_shows_each_movements_cost_and_says_where_it_is_not_recorded(
        cli: Cli) -> None:
    cli.ok("receive", "--outlet", "O1", "--sku", "AMOX", "--batch", "L1", "--qty", "10",
           "--cost", "1.25")
    cli.ok("sell", "--outlet", "O1", "--sale", "S-1", "--line", "AMOX=4")
    cli.ok("write-off", "--outlet", "O1", "--sku", "AMOX", "--qty", "1", "--reason", "dropped")
    history = cli.json("history", "--outlet", "O1")
    assert [(m["kind"], m["quantity"], m["cost"]) for m in history["movements"]] == [
        ("written_off", -1, None), ("sold", -4, "-5.00"), ("received", 10, "12.50")]
    text = cli.ok("history", "--outlet", "O1").stdout.splitlines()
    assert ["cost not recorded" in line for line in text] == [True, False, False]
    assert "cost -5.00" in text[1] and "cost 12.50" in text[2]
    assert cli.json("audit", "verify")["ok"] is True


def test_a_store_whose_journal_predates_costs_shows_them_once_set_up_again(cli: Cli) -> None:
    """Upgrading: the embedded store rebuilds its journal on first use; a PostgreSQL store on
    `ledger init`, as for every upgrade (docs/design.md, "Upgrading a store")."""
    cli.ok("receive", "--outlet", "O1", "--sku", "AMOX", "--batch", "L1", "--qty", "10",
           "--cost", "0.40")
    cli.ok("sell", "--outlet", "O1", "--sale", "S-1", "--line", "AMOX=3")
    with Ledger.open(cli.url) as ledger:
        store = ReadStore(ledger.application)
        generation = ReadModels(ledger.application).generations()["journal"]
        tables, views = store.tables("journal", generation), store.views("journal")
        with store.transaction() as cursor:  # the journal as an earlier version made it
            for base in ("journal", "journal_sale_costs"):
                cursor.execute(f"DROP VIEW {views[base]}")
            cursor.execute(f"DROP TABLE {tables['journal_sale_costs']}")
            cursor.execute(f"ALTER TABLE {tables['journal']} DROP COLUMN cost")
            cursor.execute(f"CREATE VIEW {views['journal']} AS SELECT * FROM "
                           f"{tables['journal']}")
    if not cli.url.startswith("sqlite"):
        cli.ok("init")
    history = cli.json("history", "--outlet", "O1")
    assert [(m["kind"], m["cost"]) for m in history["movements"]] == [
        ("sold", "-1.20"), ("received", "4.00")]
    assert cli.json("audit", "verify")["ok"] is True
