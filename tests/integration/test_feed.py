"""The change feed's pages (`projections.feed`) on both stores, with the scan windows made
tiny so that their edges are crossed: an outlet's rare movements far apart, empty pages that
move the cursor on, a page cut before an event rather than through it."""

from __future__ import annotations

from typing import Any

import pytest

from ledger.app.service import Ledger
from ledger.domain.errors import InvalidInput
from projections import feed as feed_module
from projections.feed import Feed
from projections.runner import create_read_models

HERE, THERE = "NAIROBI-1", "MOMBASA-2"


def journal(ledger: Ledger) -> list[dict[str, Any]]:
    """Every movement in the journal, in position order, from the journal itself."""
    models = Feed(ledger.application).models
    view = models.views("journal")["journal"]
    rows = models.query(f"SELECT position, seq, outlet FROM {view} ORDER BY position, seq", [])
    return [{"position": int(r["position"]), "seq": int(r["seq"]), "outlet": r["outlet"]}
            for r in rows]


def follow(feed: Feed, limit: int, outlets: set[str] | None = None
           ) -> tuple[list[tuple[int, int]], list[dict[str, Any]]]:
    seen: list[tuple[int, int]] = []
    pages: list[dict[str, Any]] = []
    after = 0
    while True:
        page = feed.page(after, limit, outlets)
        assert page.after == after and after <= page.next <= page.position
        pages.append({"next": page.next, "more": page.more, "count": len(page.movements)})
        seen += [(row["position"], row["seq"]) for row in page.movements]
        if page.next == after and not page.more:
            return seen, pages
        after = page.next


def test_pages_cross_scan_windows_without_losing_or_repeating_a_movement(
        ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    create_read_models(ledger.application)
    ledger.receive(outlet=THERE, sku="RARE", batch_id="R1", quantity=5)
    for i in range(12):
        ledger.receive(outlet=HERE, sku="BUSY", batch_id=f"B{i}", quantity=1,
                       expires_on=f"2090-01-{i + 1:02d}")
    ledger.receive(outlet=THERE, sku="RARE", batch_id="R2", quantity=5)
    sale = ledger.sell(outlet=HERE, sale_id="S-MANY", lines=[("BUSY", 5)])  # five batches
    ledger.receive(outlet=THERE, sku="RARE", batch_id="R3", quantity=5)
    feed = Feed(ledger.application)
    feed.catch_up()
    everything = journal(ledger)
    many = [row for row in everything if row["position"] < sale.position
            and row["outlet"] == HERE][-5:]
    assert len({row["position"] for row in many}) == 1  # one event, five movements

    monkeypatch.setattr(feed_module, "WINDOW_POSITIONS", 3)
    monkeypatch.setattr(feed_module, "MAX_SCAN_POSITIONS", 6)
    for limit in (1, 2, 4, 1000):
        seen, _ = follow(feed, limit)
        assert seen == [(r["position"], r["seq"]) for r in everything], limit
    there, pages = follow(feed, 2, {THERE})
    assert there == [(r["position"], r["seq"]) for r in everything if r["outlet"] == THERE]
    # Between the rare movements, pages came back empty with the cursor moved on.
    assert any(p["count"] == 0 and p["more"] for p in pages)
    assert [p["next"] for p in pages] == sorted(p["next"] for p in pages)

    # A page of 3 ends before the five-movement event rather than cut through it; the next
    # page is that event, whole, though bigger than the page.
    event = many[0]["position"]
    just_before = max(r["position"] for r in everything if r["position"] < event)
    cut = feed.page(just_before - 1, 3)
    assert [r["position"] for r in cut.movements] == [just_before] and cut.next == event - 1
    whole = feed.page(cut.next, 3)
    assert [(r["position"], r["seq"]) for r in whole.movements] == [
        (r["position"], r["seq"]) for r in many] and whole.next == event
    monkeypatch.undo()  # one window takes in the whole store again
    assert feed.page(0, 1000).next == feed.position()
    with pytest.raises(InvalidInput):
        feed.page(0, 0)
    with pytest.raises(InvalidInput):
        feed.page(-1, 10)
    with pytest.raises(InvalidInput):
        feed.page(0, 10, set())
