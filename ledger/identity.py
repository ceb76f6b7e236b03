"""Deterministic stream ids: "create once" becomes a uniqueness constraint of the event store."""

from __future__ import annotations

from functools import lru_cache
from uuid import UUID, uuid5

NAMESPACE = UUID("5b0c6a52-0f0e-4d3e-9a57-7d4f0e8c1a11")


@lru_cache(maxsize=65536)
def stock_item_id(outlet: str, sku: str) -> UUID:
    return uuid5(NAMESPACE, f"stock-item\x1f{outlet}\x1f{sku}")


@lru_cache(maxsize=65536)
def outlet_id(outlet: str) -> UUID:
    return uuid5(NAMESPACE, f"outlet\x1f{outlet}")


@lru_cache(maxsize=65536)
def sale_id(sale: str) -> UUID:
    return uuid5(NAMESPACE, f"sale\x1f{sale}")


@lru_cache(maxsize=65536)
def transfer_id(transfer: str) -> UUID:
    return uuid5(NAMESPACE, f"transfer\x1f{transfer}")


@lru_cache(maxsize=65536)
def command_record_id(key: str) -> UUID:
    return uuid5(NAMESPACE, f"command\x1f{key}")
