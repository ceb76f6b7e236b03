"""The journal read model carries each movement's cost where the events record it (issue 21),
on both stores: receipts, sales, refunds and transfers costed, the rest "not recorded" (None,
never zero); `audit verify` recomputes it, and the holds read model, from the events; a store
whose journal was created before it kept costs is rebuilt by `ledger init`'s set-up."""

from __future__ import annotations

import dataclasses
import random
import sqlite3
import tempfile
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger import events
from ledger.app.audit import export_rows
from ledger.app.service import Ledger
from ledger.app.valuation import export_with_costs
from ledger.domain.errors import LedgerError
from ledger.domain.journal_costs import costed_journal
from ledger.domain.movements import JOURNAL_COLUMNS, movements
from ledger.domain.stock_item import StockItem
from projections import runner
from projections.dialect import Dialect
from projections.journal import COLUMNS, JOURNAL
from projections.queries import Reads
from projections.runner import ReadModels
from projections.store import ReadStore
from projections.verify import verify_read_models
from tests.stepping import step_in_random_batches


def caught_up(ledger: Ledger) -> ReadModels:
    models = ReadModels(ledger.application)
    models.create()
    models.catch_up()
    return models


def journal(ledger: Ledger, outlet: str) -> list[tuple[Any, ...]]:
    rows = Reads(ledger.application).history(outlet, limit=1000)
    return sorted((r["position"], r["seq"], r["kind"], r["batch_id"], int(r["quantity"]),
                   r["cost"]) for r in rows)


def costs(ledger: Ledger, outlet: str) -> list[tuple[Any, ...]]:
    return [row[2:] for row in journal(ledger, outlet)]


def stock(ledger: Ledger) -> None:
    ledger.receive(outlet="NBI-1", sku="AMOX-500", batch_id="B1", quantity=8, unit_cost="10",
                   occurred_at="2026-11-01T09:00:00Z")
    ledger.receive(outlet="NBI-1", sku="AMOX-500", batch_id="B1", quantity=4,
                   unit_cost="16.50", reference="DN-2", occurred_at="2026-11-02T09:00:00Z")


def execute(ledger: Ledger, statement: str) -> None:
    store = ReadStore(ledger.application)
    with store.transaction() as cursor:
        cursor.execute(statement)


def live_table(ledger: Ledger, name: str, base: str) -> str:
    store = ReadStore(ledger.application)
    return store.tables(name, ReadModels(ledger.application).generations()[name])[base]


def test_the_journal_carries_what_receipts_sales_refunds_and_transfers_cost(
        ledger: Ledger) -> None:
    stock(ledger)
    sold = ledger.sell(outlet="NBI-1", sale_id="S-1", lines=[("AMOX-500", 10)])
    ledger.refund(sale_id="S-1", refund_id="R-1", lines=[("AMOX-500", 4)])
    ledger.write_off(outlet="NBI-1", sku="AMOX-500", quantity=1, reason="dropped")
    ledger.transfer(from_outlet="NBI-1", to_outlet="MSA-1", sku="AMOX-500", quantity=3,
                    transfer_id="T-1")
    caught_up(ledger)
    # The sale takes 8 at 10 and 2 at 16.50 (first in, first out within B1): 113 in all, as
    # its result says; the refund restocks the first 4 units the sale took, at 10.
    assert sum(p.quantity * float(p.unit_cost or "nan") for p in sold.lines[0].costs) == 113
    assert costs(ledger, "NBI-1") == [
        ("received", "B1", 8, "80"),
        ("received", "B1", 4, "66.00"),
        ("sold", "B1", -10, "-113.00"),
        ("refunded", "B1", 4, "40"),
        ("written_off", "B1", -1, None),  # derived from the layers, not recorded
        # The write-off took the 16.50 layer's first unit; a row per batch and cost.
        ("transfer_dispatched", "B1", -1, "-16.50"),
        ("transfer_dispatched", "B1", -2, "-20"),
    ]
    assert costs(ledger, "MSA-1") == [("transfer_received", "B1", 1, "16.50"),
                                      ("transfer_received", "B1", 2, "20")]
    assert verify_read_models(ledger.application) == []
    # Where the journal has a cost, it is the value the export's replay fold gives.
    exported = {(row[0], row[1]): row[len(JOURNAL_COLUMNS)] for row in export_with_costs(
        ledger.application, export_rows(ledger.application))}
    recorded = journal(ledger, "NBI-1") + journal(ledger, "MSA-1")
    assert all(Decimal(str(exported[row[:2]])) == Decimal(row[5])
               for row in recorded if row[5] is not None)


def test_movements_whose_cost_is_not_recorded_read_back_as_none_never_zero(
        ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    ledger.receive(outlet="NBI-1", sku="AMOX-500", batch_id="B1", quantity=5)  # no cost
    ledger.receive(outlet="NBI-1", sku="AMOX-500", batch_id="B2", quantity=5, unit_cost="2",
                   expires_on="2030-01-01")
    # A sale line that records no costs, as every version 1 sale reads back.
    selling = StockItem.sell
    monkeypatch.setattr(StockItem, "sell", lambda self, *args, **kwargs: dataclasses.replace(
        selling(self, *args, **kwargs), costs=None))
    ledger.sell(outlet="NBI-1", sale_id="S-1", lines=[("AMOX-500", 2)])
    monkeypatch.undo()
    ledger.sell(outlet="NBI-1", sale_id="S-2", lines=[("AMOX-500", 5)])  # B1: no cost
    caught_up(ledger)
    rows = costs(ledger, "NBI-1")
    # B2 expires first, so each sale takes it first.
    assert rows == [("received", "B1", 5, None), ("received", "B2", 5, "10"),
                    ("sold", "B2", -2, None), ("sold", "B2", -3, "-6"),
                    ("sold", "B1", -2, None)]
    assert verify_read_models(ledger.application) == []


def test_a_sale_split_from_its_stock_items_events_across_batches_is_costed(
        ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    stock(ledger)
    ledger.receive(outlet="NBI-1", sku="PARA-1G", batch_id="P1", quantity=10, unit_cost="3")
    for n in range(3):
        ledger.sell(outlet="NBI-1", sale_id=f"S-{n}", lines=[("AMOX-500", 3), ("PARA-1G", 2)])
    # One event a batch: every sale's record and its lines' sold rows are written apart.
    monkeypatch.setattr(runner, "BATCH_SIZE", 1)
    caught_up(ledger)
    sold = sorted(row for row in costs(ledger, "NBI-1") if row[0] == "sold")
    # 8 at 10 then 4 at 16.50: the third sale's 3 units are 2 at 10 and 1 at 16.50.
    assert sold == sorted([("sold", "B1", -3, "-30")] * 2 + [("sold", "B1", -3, "-36.50")]
                          + [("sold", "P1", -2, "-6")] * 3)
    assert verify_read_models(ledger.application) == []
    waiting = live_table(ledger, "journal", "journal_sale_costs")
    store = ReadStore(ledger.application)
    with store.transaction() as cursor:
        cursor.execute(f"SELECT COUNT(*) AS n FROM {waiting}")
        assert cursor.fetchone()["n"] == 0  # every sale's costs found their rows


def test_verify_names_a_journal_cost_changed_in_the_read_model(ledger: Ledger) -> None:
    stock(ledger)
    ledger.sell(outlet="NBI-1", sale_id="S-1", lines=[("AMOX-500", 2)])
    caught_up(ledger)
    [position] = [row[0] for row in journal(ledger, "NBI-1") if row[2] == "sold"]
    execute(ledger, f"UPDATE {live_table(ledger, 'journal', 'journal')} SET cost = '-1' "
                    "WHERE kind = 'sold'")
    [finding] = verify_read_models(ledger.application)
    assert (finding.check, finding.position) == ("journal", position)
    assert "'cost': '-1'" in finding.message and "'cost': '-20'" in finding.message


def test_verify_names_holds_the_read_model_lost_invented_or_changed(ledger: Ledger) -> None:
    stock(ledger)
    ledger.hold(sku="AMOX-500", batch_id="B1", reason="recall", outlet="NBI-1")
    ledger.hold(sku="AMOX-500", batch_id="B9", reason="recall")
    ledger.hold(sku="AMOX-500", batch_id="B7", reason="check")
    ledger.release(sku="AMOX-500", batch_id="B7", reason="checked")
    caught_up(ledger)
    assert verify_read_models(ledger.application) == []
    table = live_table(ledger, "holds", "holds")
    execute(ledger, f"DELETE FROM {table} WHERE batch_id = 'B9'")
    execute(ledger, f"UPDATE {table} SET reason = 'none' WHERE batch_id = 'B1'")
    execute(ledger, f"INSERT INTO {table} (sku, batch_id, scope, held_at, reason, actor, "
                    "position) VALUES ('AMOX-500', 'B7', '', '2026-11-03T09:00:00+00:00', "
                    "'check', 'unknown', 1)")
    findings = verify_read_models(ledger.application)
    assert [(f.check, f.message.split(":")[0]) for f in findings] == [
        ("holds", "holds AMOX-500/B1 at NBI-1"),
        ("holds", "holds AMOX-500/B7 at every outlet"),
        ("holds", "holds AMOX-500/B9 at every outlet"),
    ]
    assert "stored None" in findings[2].message and "expected None" in findings[1].message


def test_a_journal_created_before_costs_is_rebuilt_with_them_on_set_up(
        ledger: Ledger) -> None:
    stock(ledger)
    ledger.sell(outlet="NBI-1", sale_id="S-1", lines=[("AMOX-500", 9)])
    models = caught_up(ledger)
    before = models.generations()["journal"]
    # The shape an earlier version created: no cost column, no table of waiting costs.
    store = ReadStore(ledger.application)
    views = store.views("journal")
    table, waiting = (live_table(ledger, "journal", base)
                      for base in ("journal", "journal_sale_costs"))
    with store.transaction() as cursor:
        cursor.execute(f"DROP VIEW {views['journal']}")
        cursor.execute(f"DROP VIEW {views['journal_sale_costs']}")
        cursor.execute(f"DROP TABLE {waiting}")
        cursor.execute(f"ALTER TABLE {table} DROP COLUMN cost")
        cursor.execute(f"CREATE VIEW {views['journal']} AS SELECT * FROM {table}")
    # Until set up again, verify checks the old journal on the columns it has.
    assert verify_read_models(ledger.application) == []
    execute(ledger, f"UPDATE {table} SET quantity = 7 WHERE kind = 'sold'")
    assert [f.check for f in verify_read_models(ledger.application)] == ["journal"]
    execute(ledger, f"UPDATE {table} SET quantity = -9 WHERE kind = 'sold'")
    models.create()
    assert models.generations()["journal"] == before + 1
    assert costs(ledger, "NBI-1")[-1:] == [("sold", "B1", -9, "-96.50")]
    assert verify_read_models(ledger.application) == []
    models.create()  # once upgraded, set-up rebuilds nothing
    assert models.generations()["journal"] == before + 1


@pytest.mark.parametrize("sale_first", [False, True])
def test_a_sale_read_before_or_after_its_sold_rows_costs_them_alike(
        sqlite_url: str, sale_first: bool) -> None:
    """The ledger appends a stock item's `StockSold` before its sale's record; a group of
    sales may not, and a batch may end between them: both orders, written a batch each,
    cost the rows as the replay (`costed_journal`) does."""
    with Ledger.open(sqlite_url, create_tables=True) as ledger:
        stock(ledger)
        ledger.sell(outlet="NBI-1", sale_id="S-1", lines=[("AMOX-500", 9)])
        app = ledger.application
        recorded = [(n.id, app.mapper.to_domain_event(n))
                    for n in app.recorder.select_notifications(1, 100)]
    [sold] = [r for r in recorded if isinstance(r[1], events.StockSold)]
    [sale] = [r for r in recorded if isinstance(r[1], events.SaleRecorded)]
    order = [sale, sold] if sale_first else [sold, sale]
    expected = list(costed_journal(order))
    assert [row[-1] for row in expected] == ["-96.50"]
    connection = sqlite3.connect(":memory:")
    cursor, dialect = connection.cursor(), Dialect("sqlite")
    tables = {"journal": "j", "journal_sale_costs": "w"}
    JOURNAL.prepare(cursor, dialect, tables)
    for position, event in order:
        JOURNAL.write(cursor, dialect, tables,
                      JOURNAL.changes([(position, event, tuple(movements(event)))]))
    cursor.execute(f"SELECT {', '.join(COLUMNS)} FROM j")
    assert [tuple(row) for row in cursor.fetchall()] == [dialect.row(row) for row in expected]
    assert cursor.execute("SELECT COUNT(*) FROM w").fetchone() == (0,)


@settings(max_examples=15, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(costs_of=st.lists(st.sampled_from(["1", "2.50", "0.125", None]), min_size=4,
                         max_size=4),
       sales=st.lists(st.tuples(st.integers(0, 6), st.integers(0, 6)), min_size=1,
                      max_size=6),
       seed=st.integers(0, 2**32))
def test_costs_in_the_journal_are_what_the_export_derives_however_the_batches_fall(
        costs_of: list[str | None], sales: list[tuple[int, int]], seed: int) -> None:
    """Property: for sales of two SKUs from batches of several costs, refunded in part, and
    the projections stepped in batches of random size, every cost the journal holds is the
    export's value of the row, and verify recomputes the journal exactly."""
    with tempfile.TemporaryDirectory() as directory, \
            Ledger.open(f"sqlite:///{directory}/l.sqlite3", create_tables=True) as ledger:
        for n, (sku, batch_id) in enumerate([("AMOX", "A1"), ("AMOX", "A1"), ("PARA", "P1"),
                                             ("PARA", "P2")]):
            ledger.receive(outlet="O1", sku=sku, batch_id=batch_id, quantity=5,
                           unit_cost=costs_of[n], reference=f"DN-{n}")
        for n, (amox, para) in enumerate(sales):
            lines = [(sku, q) for sku, q in (("AMOX", amox), ("PARA", para)) if q]
            if not lines:
                continue
            try:
                ledger.sell(outlet="O1", sale_id=f"S-{n}", lines=lines)
            except LedgerError:
                continue  # more than is on the shelf: refused, nothing recorded
            if n % 2:
                ledger.refund(sale_id=f"S-{n}", refund_id=f"R-{n}", lines=lines[:1])
        models = ReadModels(ledger.application)
        models.create()
        step_in_random_batches(models, random.Random(seed), 5, lambda: None)
        assert verify_read_models(ledger.application) == []
        exported = {(row[0], row[1]): row[len(JOURNAL_COLUMNS):] for row in export_with_costs(
            ledger.application, export_rows(ledger.application))}
        rows = journal(ledger, "O1")
        for row in rows:
            value, unvalued = exported[row[:2]][:2]
            if row[5] is not None:
                assert (Decimal(row[5]), unvalued) == (Decimal(str(value)), 0), row
            elif row[2] in ("sold", "received") and row[3] is not None:
                # Not costed in the journal only where some unit had no cost.
                assert unvalued != 0 or value in (None, ""), row


def as_version_1(app: Any, event: object, strip: Callable[[dict[str, Any]], None],
                 absent: bytes = b"") -> object:
    """`event` as a version 1 event of its class was stored, read back (upcast) by today's
    mapper: `strip` removes what version 2 added from the stored state, and `absent` is cut
    from the stored bytes (a nested field version 1 did not write)."""
    stored = app.mapper.to_stored_event(event)
    state = app.mapper.transcoder.decode(stored.state)
    state.pop("class_version")
    strip(state)
    encoded = app.mapper.transcoder.encode(state)
    if absent:
        assert absent in encoded
        encoded = encoded.replace(absent, b"")
    return app.mapper.to_domain_event(dataclasses.replace(stored, state=encoded))


def test_version_1_sales_and_refunds_read_back_with_cost_not_recorded(sqlite_url: str) -> None:
    with Ledger.open(sqlite_url, create_tables=True) as ledger:
        stock(ledger)
        ledger.sell(outlet="NBI-1", sale_id="S-1", lines=[("AMOX-500", 9)])
        ledger.refund(sale_id="S-1", refund_id="R-1", lines=[("AMOX-500", 2)])
        app = ledger.application
        recorded = [(n.id, app.mapper.to_domain_event(n))
                    for n in app.recorder.select_notifications(1, 100)]

        def old(event: object) -> object:
            if isinstance(event, events.SaleRecorded):
                return as_version_1(app, event, lambda state: state.update(lines=[
                    line.model_copy(update={"costs": None}) for line in state["lines"]]),
                    absent=b',"costs":null')
            if isinstance(event, events.StockRefunded):
                return as_version_1(app, event, lambda state: state.pop("restocked_costs"))
            return event

        now = [row[2:7:4] + row[-1:] for row in costed_journal(recorded)]
        then = [row[2:7:4] + row[-1:] for row in costed_journal(
            (position, old(event)) for position, event in recorded)]
    assert [row for row in now if row[0] in ("sold", "refunded")] == [
        ("sold", -9, "-96.50"), ("refunded", 2, "20")]
    assert [row for row in then if row[0] in ("sold", "refunded")] == [
        ("sold", -9, None), ("refunded", 2, None)]
