"""A hold placed by one till is obeyed by another till's very next sale, whatever that till
had cached: its decision relied on the SKU's hold register (absent, or at a version), and the
append checks that (docs/decisions/0013). On SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ledger.app.service import Ledger


@pytest.fixture
def tills(store_url: str) -> Iterator[tuple[Ledger, Ledger]]:
    first = Ledger.open(store_url, create_tables=True)
    second = Ledger.open(store_url)
    yield first, second
    first.close()
    second.close()


def stock(ledger: Ledger) -> None:
    ledger.receive(outlet="O1", sku="AMOX", batch_id="EARLY", quantity=10,
                   expires_on="2090-01-01")
    ledger.receive(outlet="O1", sku="AMOX", batch_id="LATE", quantity=10,
                   expires_on="2095-01-01")


def test_a_till_that_found_no_holds_obeys_a_hold_recorded_since(
        tills: tuple[Ledger, Ledger]) -> None:
    till, back_office = tills
    stock(till)
    first = till.sell(outlet="O1", sale_id="S-1", lines=[("AMOX", 1)])
    assert first.lines[0].takes[0].batch_id == "EARLY"  # and the till now knows: no holds
    back_office.hold(sku="AMOX", batch_id="EARLY", reason="recall")
    retries = till.conflict_retries
    sale = till.sell(outlet="O1", sale_id="S-2", lines=[("AMOX", 2)])
    assert [(t.batch_id, t.quantity) for t in sale.lines[0].takes] == [("LATE", 2)]
    assert till.conflict_retries == retries + 1, "the cached absence was checked at append"
    assert sale.lines[0].stock.held == 9


def test_a_till_that_cached_the_register_obeys_a_hold_recorded_since(
        tills: tuple[Ledger, Ledger]) -> None:
    till, back_office = tills
    stock(till)
    back_office.hold(sku="AMOX", batch_id="OTHER", reason="unrelated lot")
    till.sell(outlet="O1", sale_id="S-1", lines=[("AMOX", 1)])  # caches the register
    back_office.hold(sku="AMOX", batch_id="EARLY", outlet="O1", reason="damp")
    sale = till.sell(outlet="O1", sale_id="S-2", lines=[("AMOX", 2)])
    assert [(t.batch_id, t.quantity) for t in sale.lines[0].takes] == [("LATE", 2)]
    back_office.release(sku="AMOX", batch_id="EARLY", outlet="O1", reason="dry")
    again = till.sell(outlet="O1", sale_id="S-3", lines=[("AMOX", 1)])
    assert again.lines[0].takes[0].batch_id == "EARLY"


def test_sales_decided_together_obey_a_hold_recorded_since(
        tills: tuple[Ledger, Ledger]) -> None:
    """The HTTP service's hot-SKU groups (`CommandLoop.run_group`) check what each sale
    relied on having no events, with the group's one append."""
    from ledger.app import commands as c
    from ledger.app import handlers

    till, back_office = tills
    stock(till)
    till.sell(outlet="O1", sale_id="S-0", lines=[("AMOX", 1)])
    back_office.hold(sku="AMOX", batch_id="EARLY", reason="recall")
    group = [(c.parse(c.SellStock, outlet="O1", sale_id=f"S-{i}",
                      lines=[{"sku": "AMOX", "quantity": 1}]), handlers.SELL)
             for i in (1, 2)]
    outcomes = till._loop.run_group(group)
    for outcome in outcomes:
        assert not isinstance(outcome, Exception), outcome
        assert [t.batch_id for t in outcome.lines[0].takes] == ["LATE"]
