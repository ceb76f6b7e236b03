"""Payload models are stored as JSON objects; the fast path for flat models must write exactly
what pydantic would, and every model must read back equal to what was written."""

from __future__ import annotations

import copy
import functools
import typing
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from enum import Enum
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from eventsourcing.domain import DomainEvent
from eventsourcing.persistence import JSONTranscoder
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from ledger import events
from ledger.app import handlers
from ledger.app.commands import WriteOffStock
from ledger.app.service import Ledger
from ledger.domain import identity
from ledger.domain.quantities import BatchCount, BatchIdentity, BatchTake
from ledger.events import PAYLOAD_MODELS
from ledger.store.application import open_application
from ledger.store.snapshots import StockItemSnapshot
from ledger.store.transcoding import LedgerTranscoder, PayloadModelAsDict


@given(st.data())
def test_every_payload_model_encodes_as_pydantic_would_and_reads_back(data: Any) -> None:
    for model in PAYLOAD_MODELS:
        instance: BaseModel = data.draw(st.builds(model))
        transcoding = PayloadModelAsDict(model)
        encoded = transcoding.encode(instance)
        assert encoded == instance.model_dump(mode="json")
        assert transcoding.decode(encoded) == instance


def test_flat_models_take_the_fast_path() -> None:
    flat = {model.__name__ for model in PAYLOAD_MODELS if PayloadModelAsDict(model).flat}
    assert "BatchTake" in flat
    assert "BatchIdentity" not in flat  # holds a date: pydantic renders it
    assert "BatchCount" not in flat  # its variance is computed


# --------------------------------------------------------------------------- LedgerTranscoder
# The ledger encodes with orjson but must write, byte for byte, what the library's encoder
# writes: the recorded format, the hash chain and every stored event depend on those bytes.


@functools.cache
def _transcoders() -> tuple[LedgerTranscoder, JSONTranscoder]:
    """The ledger's transcoder and the library's, with the same transcodings registered."""
    app = open_application("sqlite:///:memory:", create_tables=True)
    fast = app.mapper.transcoder
    assert isinstance(fast, LedgerTranscoder)
    reference = JSONTranscoder()
    reference.types, reference.names = dict(fast.types), dict(fast.names)
    return fast, reference


_scalars = (
    st.none() | st.booleans() | st.integers() | st.text()
    | st.dates() | st.datetimes(timezones=st.none() | st.just(UTC))
    | st.decimals() | st.builds(BatchTake) | st.builds(BatchIdentity) | st.builds(BatchCount)
)
_values = st.recursive(
    _scalars,
    lambda children: (st.lists(children, max_size=4)
                      | st.lists(children, max_size=4).map(tuple)
                      | st.dictionaries(st.text(max_size=8), children, max_size=4)
                      # keys JSON has no type for: orjson declines, the library writes them
                      | st.dictionaries(st.integers() | st.booleans(), children, max_size=2)),
    max_leaves=12,
)


@settings(max_examples=300)
@given(value=_values)
def test_ledger_transcoder_writes_the_library_bytes(value: Any) -> None:
    fast, reference = _transcoders()
    assert fast.encode(value) == reference.encode(value)


def test_ledger_transcoder_fails_as_the_library_does() -> None:
    fast, reference = _transcoders()
    for value in ({"lone surrogate": "\udc80"}, {"unregistered": object()}):
        with pytest.raises(Exception) as expected:
            reference.encode(value)
        with pytest.raises(type(expected.value)):
            fast.encode(value)


def _field_types(annotation: Any) -> Iterator[Any]:
    """Every type an annotation names, through generics and into payload models."""
    yield annotation
    for argument in typing.get_args(annotation):
        yield from _field_types(argument)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        for model_field in annotation.model_fields.values():
            yield from _field_types(model_field.annotation)


def _event_classes() -> list[type[Any]]:
    members = [*vars(events).values(), StockItemSnapshot]
    return [member for member in members
            if isinstance(member, type) and issubclass(member, DomainEvent)
            and member.__module__.startswith("ledger.")]


def test_no_event_records_a_value_orjson_would_write_differently() -> None:
    """orjson writes UUIDs as text and enums by value, where the library's encoder hands them
    to their transcodings, and formats floats its own way: no event field may hold one (the
    stream id is the mapper's business, not the state's)."""
    classes = _event_classes()
    assert len(classes) >= 18
    for cls in classes:
        hints = typing.get_type_hints(cls)
        hints.pop("originator_id")
        for name, annotation in hints.items():
            if typing.get_origin(annotation) is typing.ClassVar:
                continue  # the class's, not the state's
            for kind in _field_types(annotation):
                assert not (isinstance(kind, type) and issubclass(kind, (UUID, float, Enum))), (
                    f"{cls.__name__}.{name} holds {kind}")


def test_every_event_is_written_as_the_library_would_write_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A history with every kind of event, a snapshot, and text JSON must escape: each state
    the ledger encoded is byte for byte what the library's encoder makes of it, and reads back
    to the same bytes."""
    written: list[tuple[Any, bytes]] = []
    ledger_encode = LedgerTranscoder.encode

    def spy(self: LedgerTranscoder, obj: Any) -> bytes:
        data = ledger_encode(self, obj)
        written.append((copy.deepcopy(obj), data))
        return data

    monkeypatch.setattr(LedgerTranscoder, "encode", spy)
    url = f"sqlite:///{tmp_path / 'history.sqlite3'}"
    today = datetime.now(UTC).date()
    actor = 'till "7" \\ naïve 收银 😀'
    # Controls are refused at the boundary now, but stores written before hold them.
    old_actor = 'till "7" \\ naïve 收银 \x01\t😀'
    with Ledger.open(url, create_tables=True) as ledger:
        ledger.set_outlet_policy(outlet="A", allocation_policy="fifo", allow_negative=True,
                                 actor=actor)
        for batch, expiry in (("B1", today), ("B2", today + timedelta(days=9)), ("B3", None)):
            ledger.receive(outlet="A", sku="S", batch_id=batch, quantity=300,
                           expires_on=expiry, unit_cost="0.125", actor=actor)
        ledger.set_outlet_policy(outlet="A", allocation_policy="fefo", allow_negative=True,
                                 actor=actor)
        for n in range(210):  # past a snapshot
            ledger.sell(outlet="A", sale_id=f"S{n}", lines=[("S", 2)], actor=actor)
        ledger.refund(sale_id="S1", refund_id="R1", lines=[("S", 1)], actor=actor)
        ledger.write_off(outlet="A", sku="S", quantity=3, reason=actor, actor=actor)
        ledger._loop.run(WriteOffStock.model_construct(  # as a version without the check did
            outlet="A", sku="S", quantity=1, reason=old_actor, actor=old_actor,
            key="old-write-off"), handlers.WRITE_OFF)
        ledger.count(outlet="A", sku="S", counts={"B2": 50}, count_id="C1", actor=actor)
        ledger.transfer(from_outlet="A", to_outlet="B", sku="S", quantity=5, transfer_id="T1",
                        in_transit=True, actor=actor)
        ledger.receive_transfer(transfer_id="T1", actor=actor)
        ledger.set_reorder_level(outlet="A", sku="S", level=10, actor=actor)
        ledger.expire(actor=actor)
        app = ledger.application
        stored = list(app.recorder.select_notifications(1, 100_000))
        assert app.snapshots is not None
        stored += app.snapshots.recorder.select_events(identity.stock_item_id("A", "S"))
    topics = {record.topic.rsplit(":", 1)[1] for record in stored}
    assert {"BatchExpired", "StockCounted", "TransferReceived", "StockItemSnapshot",
            "CommandAccepted", "SaleRefunded", "OutletPolicySet"} <= topics, topics
    _, reference = _transcoders()
    for state, data in written:
        assert reference.encode(state) == data
    assert {record.state for record in stored} <= {data for _, data in written}


@given(st.text())
def test_stream_ids_are_the_standard_name_based_uuids(name: str) -> None:
    assert identity.name_based_id(name) == uuid.uuid5(identity.NAMESPACE, name)
