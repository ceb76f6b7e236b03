"""Which streams an append's gate probes: the existing streams it writes, never one it starts."""

from __future__ import annotations

from uuid import UUID, uuid4

from eventsourcing.persistence import StoredEvent

from ledger.store.postgres.queue_locks import gate_keys
from ledger.store.postgres.values import stream_key


def _event(stream: UUID, version: int) -> StoredEvent:
    return StoredEvent(originator_id=stream, originator_version=version, topic="t", state=b"")


def test_a_stream_the_append_starts_is_not_gated_however_many_events_follow() -> None:
    started, existing, other = uuid4(), uuid4(), uuid4()
    events = [_event(started, 1), _event(started, 2), _event(started, 3),
              _event(existing, 8), _event(existing, 9), _event(other, 2)]
    assert gate_keys(events) == sorted({stream_key(existing), stream_key(other)})


def test_an_existing_stream_is_gated_once_and_a_new_one_alone_never() -> None:
    existing = uuid4()
    assert gate_keys([_event(existing, 2), _event(existing, 3)]) == [stream_key(existing)]
    assert gate_keys([_event(uuid4(), 1)]) == []
