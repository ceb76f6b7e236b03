"""Topics recorded before a class moved still resolve to it: they are in every old event."""

from __future__ import annotations

import pytest
from eventsourcing.utils import get_topic, resolve_topic

import ledger.store.application  # noqa: F401  (registers the moved topics)
from ledger.domain.command_record import CommandRecord
from ledger.domain.outlet import Outlet
from ledger.domain.sale import Sale
from ledger.domain.stock_item import StockItem
from ledger.domain.transfer import Transfer
from ledger.store.snapshots import StockItemSnapshot


@pytest.mark.parametrize(("recorded", "cls"), [
    ("ledger.stock_item:StockItem", StockItem),
    ("ledger.stock_item:StockItemSnapshot", StockItemSnapshot),
    ("ledger.sale:Sale", Sale),
    ("ledger.outlet:Outlet", Outlet),
    ("ledger.transfer:Transfer", Transfer),
    ("ledger.command_record:CommandRecord", CommandRecord),
])
def test_a_topic_recorded_before_the_layered_layout_resolves_to_the_moved_class(
        recorded: str, cls: type) -> None:
    assert resolve_topic(recorded) is cls


@pytest.mark.parametrize("cls", [StockItem, StockItemSnapshot, Sale, Outlet, Transfer,
                                 CommandRecord])
def test_the_topic_recorded_now_resolves_to_the_same_class(cls: type) -> None:
    assert resolve_topic(get_topic(cls)) is cls
