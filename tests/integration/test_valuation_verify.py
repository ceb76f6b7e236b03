"""`audit verify`'s value checks on a real store: a history that conserves value passes; a
sale whose recorded costs are not what its stock item's layers give on replay is named."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ledger.app.service import Ledger
from ledger.app.valuation import conservation_findings, valuation_report
from ledger.domain.costing import CostPiece
from ledger.domain.stock_item import StockItem


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    opened = Ledger.open(f"sqlite:///{tmp_path}/v.sqlite3", create_tables=True)
    yield opened
    opened.close()


def stock(ledger: Ledger) -> None:
    ledger.receive(outlet="O1", sku="AMOX", batch_id="B1", quantity=8, unit_cost="10",
                   occurred_at="2026-11-01T09:00:00Z")
    ledger.receive(outlet="O1", sku="AMOX", batch_id="B1", quantity=4, unit_cost="16",
                   reference="DN-2", occurred_at="2026-11-02T09:00:00Z")


def test_a_history_that_conserves_value_passes(ledger: Ledger) -> None:
    stock(ledger)
    ledger.sell(outlet="O1", sale_id="S-1", lines=[("AMOX", 10)])
    ledger.refund(sale_id="S-1", refund_id="R-1", lines=[("AMOX", 4)])
    ledger.write_off(outlet="O1", sku="AMOX", quantity=1, reason="dropped")
    assert conservation_findings(ledger.application) == []
    [item] = valuation_report(ledger.application)["items"]
    # 2 left at 16, then 4 back (the first 4 of the sale's 8 at 10), less one at 16.
    assert (item["quantity"], item["value"]) == (5, "56")


def test_a_sale_recorded_with_costs_the_layers_do_not_give_is_named(
        ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    stock(ledger)
    # A ledger whose costing was wrong when the sale was decided: it records 10 at 10.
    monkeypatch.setattr(StockItem, "costs_of", lambda self, takes: (
        CostPiece(batch_id="B1", quantity=10, unit_cost="10"),))
    sold = ledger.sell(outlet="O1", sale_id="S-1", lines=[("AMOX", 10)])
    monkeypatch.undo()
    [finding] = conservation_findings(ledger.application)
    assert finding.check == "value"
    assert finding.message == (
        "sale S-1 line AMOX: recorded costs B1:10@10, its stock item's layers give "
        "B1:8@10;B1:2@16 on replay")
    assert finding.position is not None and finding.position <= (sold.position or 0)
