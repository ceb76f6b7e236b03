"""`ledger demo`: a short run of a pharmacy's day on a fresh embedded store."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import click

from cli.context import open_ledger
from ledger.app.service import Ledger
from ledger.domain.errors import Refusal
from ledger.store.settings import default_sqlite_path
from projections.queries import Reads
from projections.runner import ReadModels

Show = Callable[[str], None]


@click.command()
@click.option("--db", "demo_db", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="SQLite file to (re)create (default: demo.sqlite3 next "
                                 "to the embedded store).")
def demo(demo_db: Path | None) -> None:
    """Receive, sell, refund, transfer, count, expire and read back, on a fresh store."""
    path = demo_db or default_sqlite_path().with_name("demo.sqlite3")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    url = f"sqlite:///{path.resolve()}"
    click.echo(f"demo store: {url}")

    def show(line: str) -> None:
        click.echo(f"  {line}")

    with open_ledger(url) as ledger:
        _sell_and_refund(ledger, show)
        _move_count_and_expire(ledger, show)
        _read_back(ledger, url, show)


def _sell_and_refund(ledger: Ledger, show: Show) -> None:
    """Three batches in, a sale allocated FEFO, a till's retry, a refusal and a refund."""
    today = date.today()
    yesterday = datetime.now(UTC) - timedelta(days=1)
    ledger.set_outlet_policy(outlet="NAIROBI-1", actor="demo")
    for batch, quantity, expires in (("AMOX-B1", 40, today + timedelta(days=30)),
                                     ("AMOX-B2", 60, today + timedelta(days=200)),
                                     ("AMOX-OLD", 5, today)):
        ledger.receive(outlet="NAIROBI-1", sku="AMOX-500", batch_id=batch,
                       quantity=quantity, expires_on=expires, unit_cost="0.12",
                       occurred_at=yesterday, actor="demo")
    show("received 3 batches of AMOX-500 at NAIROBI-1 (one expires today)")
    sale = ledger.sell(outlet="NAIROBI-1", sale_id="S-1001",
                       lines=[("AMOX-500", 50)], actor="till-3")
    takes = ", ".join(f"{t.batch_id} x{t.quantity}" for t in sale.lines[0].takes)
    show(f"sale S-1001 of 50 took {takes}  (FEFO; the batch expiring today is not sold)")
    again = ledger.sell(outlet="NAIROBI-1", sale_id="S-1001",
                        lines=[("AMOX-500", 50)], actor="till-3")
    show(f"the till retried S-1001: replayed={again.replayed}, nothing recorded twice")
    try:
        ledger.sell(outlet="NAIROBI-1", sale_id="S-1002", lines=[("AMOX-500", 500)],
                    actor="till-1")
    except Refusal as refusal:
        show(f"refused: {refusal}")
    refund = ledger.refund(sale_id="S-1001", refund_id="R-1", lines=[("AMOX-500", 4)],
                           actor="till-3")
    show("refund R-1 of 4 went back to " + ", ".join(
        f"{t.batch_id} x{t.quantity}" for t in refund.lines[0].restocked))


def _move_count_and_expire(ledger: Ledger, show: Show) -> None:
    """A transfer, a stock take with a variance, the expiry sweep and a reorder level."""
    ledger.transfer(from_outlet="NAIROBI-1", to_outlet="MOMBASA-2", sku="AMOX-500",
                    quantity=10, transfer_id="T-77", actor="warehouse")
    show("transferred 10 to MOMBASA-2 with batch and expiry kept")
    count = ledger.count(outlet="NAIROBI-1", sku="AMOX-500", counts={"AMOX-B2": 58},
                         count_id="C-9", actor="auditor")
    show(f"count C-9 of AMOX-B2: variance {count.counts[0].variance:+d}")
    expired = ledger.expire(actor="night-sweep")
    show(f"expiry sweep wrote off {sum(e.quantity for e in expired.expired)} units "
         f"from {len(expired.expired)} batch(es)")
    ledger.set_reorder_level(outlet="NAIROBI-1", sku="AMOX-500", level=60, actor="demo")


def _read_back(ledger: Ledger, url: str, show: Show) -> None:
    """Stock at both outlets, what is low, and the journal's size, from the read models."""
    models = ReadModels(ledger.application)
    models.catch_up()
    reads = Reads(ledger.application)
    for row in reads.stock("NAIROBI-1") + reads.stock("MOMBASA-2"):
        show(f"{row['outlet']}/{row['sku']}: on hand {row['on_hand']}, "
             f"available {row['available']}")
    low = reads.low_stock("NAIROBI-1")
    show("low stock at NAIROBI-1: " + (", ".join(r["sku"] for r in low) or "none"))
    show(f"{len(reads.history('NAIROBI-1', limit=1000))} movements in the journal; "
         f"try: ledger --db {url} history --outlet NAIROBI-1")
