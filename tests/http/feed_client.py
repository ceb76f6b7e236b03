"""What the feed tests share: reading the feed and the server-sent stream as a consumer does,
and the movements the events themselves say happened (the oracle, read without the journal)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx

from ledger.app.audit import notifications
from ledger.app.service import Ledger
from ledger.domain.journal_costs import costed_journal
from projections.journal import COLUMNS

Key = tuple[int, int]
"""A movement's identity: (position, seq)."""


def page(client: httpx.Client, after: int, **params: Any) -> dict[str, Any]:
    response = client.get("/v1/feed", params={"after": after, **params})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert body["after"] == after and body["next"] >= after
    assert body["next"] <= body["position"]
    return body


def read_all(client: httpx.Client, after: int, **params: Any) -> tuple[list[dict[str, Any]], int]:
    """Every movement after `after` the feed has now, page by page; and the last cursor."""
    rows: list[dict[str, Any]] = []
    while True:
        body = page(client, after, **params)
        rows += body["movements"]
        after = body["next"]
        if not body["more"]:
            return rows, after


def keys(rows: list[dict[str, Any]]) -> list[Key]:
    return [(row["position"], row["seq"]) for row in rows]


def recorded_movements(store_url: str, after: int = 0,
                       outlets: set[str] | None = None) -> list[dict[str, Any]]:
    """The movements after `after`, in position order, with their costs, worked out from the
    events, not from the journal read model the feed serves."""
    with Ledger.open(store_url) as ledger:
        app = ledger.application
        rows = [dict(zip(COLUMNS, row, strict=True)) for row in costed_journal(
            (n.id, app.mapper.to_domain_event(n))
            for n in notifications(app))]
    return [row for row in rows if row["position"] > after
            and (outlets is None or row["outlet"] in outlets)]


def sse_events(lines: Iterator[str]) -> Iterator[dict[str, Any]]:
    """The dispatched events of a text/event-stream (fields `id`, `event`, `data` decoded),
    and id-only messages as {"id": ...}: what an EventSource would act on."""
    message: dict[str, Any] = {}
    for line in lines:
        if line == "":
            if message:
                if "data" in message:
                    message["data"] = json.loads(message["data"])
                yield message
            message = {}
        elif line.startswith(":"):
            continue
        else:
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            message[name] = message.get(name, "") + value if name == "data" else value
