"""Recorded topics of classes that have moved since they were recorded.

Every stored event names its aggregate's class (`originator_topic`) and every snapshot its own
class by topic, as `module:Class`. Those bytes are part of the hash chain and are never edited,
so when a module moves, its old name is registered here and old records keep resolving.
"""

from __future__ import annotations

import importlib

from eventsourcing.utils import register_topic

MOVED_MODULES: dict[str, str] = {
    # Until the layered layout of 2026-12 the aggregates lived at the package's top level.
    "ledger.stock_item": "ledger.domain.stock_item",
    "ledger.sale": "ledger.domain.sale",
    "ledger.outlet": "ledger.domain.outlet",
    "ledger.transfer": "ledger.domain.transfer",
    "ledger.command_record": "ledger.domain.command_record",
}


MOVED_CLASSES: dict[str, str] = {
    # Snapshots are the store's business, not the aggregate's, since the same layout.
    "ledger.stock_item:StockItemSnapshot": "ledger.store.snapshots:StockItemSnapshot",
}


def register_moved_modules() -> None:
    """Make every old module name, and every class that left its old module, resolve to
    where it lives now (a class's own entry wins over its old module's)."""
    for old_name, new_name in MOVED_MODULES.items():
        register_topic(old_name, importlib.import_module(new_name))
    for old_topic, new_topic in MOVED_CLASSES.items():
        module_name, _, class_name = new_topic.partition(":")
        register_topic(old_topic, getattr(importlib.import_module(module_name), class_name))
