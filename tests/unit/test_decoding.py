"""Reading rows back: every event class has a check of its recorded shape, a true event reads
back, and each kind of forged row is refused by name, without importing what its topic says."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from uuid import uuid4

import pytest
from eventsourcing.domain import AggregateEvent
from eventsourcing.persistence import StoredEvent

from ledger import events
from ledger.domain.quantities import BatchTake
from ledger.store.application import LedgerApplication
from ledger.store.decoding import UnreadableEvent, state_check
from ledger.store.settings import parse_url


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LedgerApplication]:
    """An application for its mapper (nothing is stored)."""
    opened = LedgerApplication(parse_url(f"sqlite:///{tmp_path_factory.mktemp('m')}/l.db"),
                               create_tables=True)
    yield opened
    opened.close()


def a_sale_line(app: LedgerApplication) -> StoredEvent:
    event = events.StockSold(
        originator_id=uuid4(), originator_version=2, timestamp=datetime.now(UTC),
        outlet="OUT-A", sku="AMOX-500", occurred_at=datetime.now(UTC), actor="till",
        reference="S1", idempotency_key="sale:S1", sale_id="S1",
        takes=[BatchTake(batch_id="B1", quantity=2)], unallocated=0)
    return app.mapper.to_stored_event(event)


def test_every_event_class_has_a_check_of_its_shape() -> None:
    classes = [value for value in vars(events).values() if isinstance(value, type)
               and value.__module__ == events.__name__ and issubclass(value, AggregateEvent)]
    assert len(classes) > 15
    for cls in classes:
        state_check(cls)  # raises TypeError for a field type it has no check for


def test_a_true_event_reads_back(app: LedgerApplication) -> None:
    event = app.mapper.to_domain_event(a_sale_line(app))
    assert isinstance(event, events.StockSold) and event.takes[0].quantity == 2


@pytest.mark.parametrize(("topic", "state", "why"), [
    ("ledger.events:StockTeleported", None, "unknown topic"),
    ("this:zen", None, "not a module of the ledger"),
    (None, b"\x00not json", "does not decode"),
    (None, b"[1, 2]", "does not decode"),
    (None, b'{"outlet": "OUT-A"}', "missing"),
    (None, "unallocated", "unallocated is bool"),
    (None, "extra", "unexpected colour"),
])
def test_forged_rows_are_refused_by_name(app: LedgerApplication, topic: str | None,
                                         state: bytes | str | None, why: str) -> None:
    true = a_sale_line(app)
    stored = true.state
    if state == "unallocated":
        stored = stored.replace(b'"unallocated":0', b'"unallocated":true')
    elif state == "extra":
        stored = stored[:-1] + b',"colour":"red"}'
    elif isinstance(state, bytes):
        stored = state
    forged = StoredEvent(true.originator_id, true.originator_version, topic or true.topic,
                         stored)
    with pytest.raises(UnreadableEvent) as refused:
        app.mapper.to_domain_event(forged)
    assert why in str(refused.value) and str(true.originator_id) in str(refused.value)
    assert "this" not in sys.modules  # the topic's module was never imported


def test_a_reason_is_one_line_that_any_store_can_hold() -> None:
    error = UnreadableEvent("ledger.events:StockSold", uuid4(), 3,
                            "state does not decode:\n a\x00b\tc " + "x" * 400, position=9)
    assert error.reason.startswith("state does not decode: a\\x00b c ")
    assert "\x00" not in error.reason and "\n" not in str(error)
    assert len(error.reason) == 300 and str(error).startswith("the event at position 9 ")
