"""The repository: the library's, except that a snapshot is checked before it is used.

The library's repository loads a stream's latest snapshot and the events after it, taking the
snapshot on its word. Here a snapshot is used only if it is a `StockItemSnapshot` in the current
state format (with cost layers, `StockItemSnapshot.is_current`), signed under
this till's key, whose MAC holds, and whose recorded position is that of the stream's event at
its version (`ledger.store.snapshots`); otherwise the load logs why, naming the stream and
version, and replays the stream from its first event, so that the command still decides on
the events.

Cost: the MAC is computed in the process. The position costs no query of its own: the events
are read from the snapshot's version rather than after it, with their positions, so the first
row is the event the snapshot claims to follow; and the events of every stream a `load_many`
loads cold are read in one query. A cold load is the snapshot's query and the events' query,
as in the library; a warm (cached) command reads no snapshot, so it pays nothing. A refused
snapshot costs one more query, for the events before it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import chain
from typing import Any, cast
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, ProjectorFunction, Repository
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import EventStore, StoredEvent

from ledger.store.decoding import UnreadableEvent
from ledger.store.snapshot_keys import SnapshotKey
from ledger.store.snapshots import StockItemSnapshot

logger = logging.getLogger(__name__)

EventsFrom = Callable[[Sequence[tuple[UUID, int]], int | None], list[tuple[int, StoredEvent]]]
"""The events of several streams from the versions given (inclusive), up to a version (None:
to the end), each with its position, in stream order then version order."""


class CheckedRepository(Repository[UUID]):
    """Reconstructs aggregates from a checked snapshot and the events after it."""

    def __init__(self, event_store: EventStore[UUID], *, snapshot_store: EventStore[UUID],
                 events_from: EventsFrom,
                 latest_snapshots: Callable[[list[UUID], int | None], list[StoredEvent]],
                 key: Callable[[], SnapshotKey | None], **kwargs: Any) -> None:
        super().__init__(event_store, snapshot_store=snapshot_store, **kwargs)
        self.checked_snapshot_store = snapshot_store
        self.events_from = events_from
        self.latest_snapshots = latest_snapshots
        self.key = key

    def load(self, aggregate_ids: Sequence[UUID], lte: int | None = None,
             projector_func: ProjectorFunction[Any, Any] | None = None,
             ) -> dict[UUID, Aggregate]:
        """The aggregates of the streams (as of version `lte`), each from its latest snapshot
        if that passes every check, else from its first event; streams with no events are
        left out."""
        ids = list(dict.fromkeys(aggregate_ids))
        signed = self.signed_snapshots(ids, lte)
        events = _by_stream(self.events_from(
            [(i, signed[i].originator_version if i in signed else 1) for i in ids], lte))
        usable: dict[UUID, StockItemSnapshot] = {}
        refused: list[UUID] = []
        for aggregate_id, snapshot in signed.items():
            rows = events.get(aggregate_id, [])
            problem = _position_problem(snapshot, rows[0] if rows else None)
            if problem is None:
                usable[aggregate_id] = snapshot
                events[aggregate_id] = rows[1:]  # the snapshot stands for the first
            else:
                _refuse(aggregate_id, snapshot.originator_version, problem)
                refused.append(aggregate_id)
        if refused:
            events.update(_by_stream(self.events_from([(i, 1) for i in refused], lte)))
        project = projector_func or _project
        loaded: dict[UUID, Aggregate] = {}
        for aggregate_id in ids:
            start = [usable[aggregate_id]] if aggregate_id in usable else []
            aggregate = project(None, chain(start, self._decoded(events.get(aggregate_id, []))))
            if aggregate is not None:
                loaded[aggregate_id] = cast(Aggregate, aggregate)
        return loaded

    def _decoded(self, rows: Iterable[tuple[int, StoredEvent]]) -> Iterator[Any]:
        mapper = self.event_store.mapper
        for position, stored in rows:
            try:
                yield mapper.to_domain_event(stored)
            except UnreadableEvent as error:
                # The row's position came with it: whoever sees the error can find the row.
                if error.position is None:
                    error.position = position
                raise

    def signed_snapshots(self, aggregate_ids: Iterable[UUID],
                         lte: int | None = None) -> dict[UUID, StockItemSnapshot]:
        """The latest snapshot of each stream (at or below version `lte`), for those whose
        snapshot is signed under this till's key and whose MAC holds (their positions are
        yet to be checked against the events); each one refused is logged."""
        signed: dict[UUID, StockItemSnapshot] = {}
        store = self.checked_snapshot_store
        key: SnapshotKey | None = None
        for stored in self.latest_snapshots(list(aggregate_ids), lte):
            aggregate_id = UUID(str(stored.originator_id))
            if key is None:
                key = self.key()  # read once a load meets a snapshot, not before
            version = stored.originator_version
            try:
                snapshot = store.mapper.to_domain_event(stored)
            except Exception as error:  # whatever is unreadable is not used
                _refuse(aggregate_id, version, f"it cannot be read ({_first_line(error)})")
                continue
            if not isinstance(snapshot, StockItemSnapshot):
                _refuse(aggregate_id, version,
                        f"it is a {type(snapshot).__name__}, not a StockItemSnapshot")
                continue
            if not snapshot.is_current:
                # Its one cost per batch cannot stand for the events' cost layers, whoever
                # signed it; expected after an upgrade, like an unsigned one.
                _refuse(aggregate_id, version, "written before cost layers were kept (state "
                        f"format {snapshot.state.get('format')!r})", legacy=True)
                continue
            problem = snapshot.signature_problem(key)
            if problem is not None:
                _refuse(aggregate_id, version, problem, legacy=not snapshot.is_bound)
                continue
            signed[aggregate_id] = snapshot
        return signed

    def _reconstruct_aggregate(self, aggregate_id: UUID, version: int | None,
                               projector_func: ProjectorFunction[Any, Any]) -> Any:
        # The library's `get` reconstructs through this method on a cache miss, and for a
        # past version: the one place where it would take a snapshot on its word.
        loaded = self.load([aggregate_id], version, projector_func).get(aggregate_id)
        if loaded is None:
            raise AggregateNotFoundError(f"Aggregate {aggregate_id!r} version {version!r} "
                                         "not found.")
        return loaded


def _by_stream(rows: list[tuple[int, StoredEvent]]) -> dict[UUID, list[tuple[int, StoredEvent]]]:
    streams: dict[UUID, list[tuple[int, StoredEvent]]] = {}
    for position, stored in rows:
        originator_id = stored.originator_id
        stream = originator_id if isinstance(originator_id, UUID) else UUID(originator_id)
        streams.setdefault(stream, []).append((position, stored))
    return streams


def _position_problem(snapshot: StockItemSnapshot,
                      first: tuple[int, StoredEvent] | None) -> str | None:
    """Why the events read from a snapshot's version show it is not of them; None if the
    first is the event at its version, at the position it records."""
    if first is None or first[1].originator_version != snapshot.originator_version:
        return "the stream has no event at its version"
    if first[0] != snapshot.position:
        return (f"it records position {snapshot.position}, but the event at its version is "
                f"at position {first[0]}")
    return None


def _project(aggregate: Any, events: Iterable[Any]) -> Any:
    for event in events:
        aggregate = event.mutate(aggregate)
    return aggregate


def _first_line(error: Exception) -> str:
    return (str(error).splitlines() or [type(error).__name__])[0][:200]


def _refuse(aggregate_id: UUID, version: int, why: str, *, legacy: bool = False) -> None:
    # A legacy snapshot is expected after an upgrade, not a sign of tampering: the stream's
    # next snapshot replaces it with a signed one.
    logger.log(logging.INFO if legacy else logging.WARNING,
               "snapshot of stream %s at version %s not used, its events are replayed "
               "instead: %s", aggregate_id, version, why)
