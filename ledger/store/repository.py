"""The repository: the library's, except that a snapshot is checked before it is used.

The library's repository loads a stream's latest snapshot and the events after it, taking the
snapshot on its word. Here a snapshot is used only if it is a `StockItemSnapshot` signed under
this till's key, whose MAC holds, and whose recorded position is that of the stream's event at
its version (`ledger.store.snapshots`); otherwise the load logs why, naming the stream and
version, and replays the stream from its first event, so that the command still decides on
the events.

Cost: the MAC is computed in the process; the position is one indexed lookup, batched for
every snapshot a `load_many` uses. A cold load is then the snapshot, the lookup and the events
after the snapshot: one round trip more than the library's; a warm (cached) command reads no
snapshot, so it pays nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from itertools import chain
from typing import Any, cast
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, ProjectorFunction, Repository
from eventsourcing.domain import Aggregate, DomainEventProtocol
from eventsourcing.persistence import EventStore

from ledger.store.snapshot_keys import SnapshotKey
from ledger.store.snapshots import StockItemSnapshot

logger = logging.getLogger(__name__)

PositionsOf = Callable[[Sequence[tuple[UUID, int]]], dict[tuple[UUID, int], int]]
"""The global positions of the events at several (stream, version) pairs, in one lookup;
pairs with no event are left out."""


class CheckedRepository(Repository[UUID]):
    """Reconstructs aggregates from a checked snapshot and the events after it."""

    def __init__(self, event_store: EventStore[UUID], *, snapshot_store: EventStore[UUID],
                 positions_of: PositionsOf, key: Callable[[], SnapshotKey | None],
                 **kwargs: Any) -> None:
        super().__init__(event_store, snapshot_store=snapshot_store, **kwargs)
        self.checked_snapshot_store = snapshot_store
        self.positions_of = positions_of
        self.key = key

    def usable_snapshots(self, aggregate_ids: Iterable[UUID],
                         lte: int | None = None) -> dict[UUID, StockItemSnapshot]:
        """The latest snapshot of each stream (at or below version `lte`), for those whose
        snapshot passes every check; each one refused is logged."""
        candidates: dict[UUID, StockItemSnapshot] = {}
        store = self.checked_snapshot_store
        key: SnapshotKey | None = None
        for aggregate_id in aggregate_ids:
            stored = store.recorder.select_events(aggregate_id, desc=True, limit=1, lte=lte)
            if not stored:
                continue
            if key is None:
                key = self.key()  # read once a load meets a snapshot, not before
            version = stored[0].originator_version
            try:
                snapshot = store.mapper.to_domain_event(stored[0])
            except Exception as error:  # whatever is unreadable is not used
                _refuse(aggregate_id, version, f"it cannot be read ({_first_line(error)})")
                continue
            if not isinstance(snapshot, StockItemSnapshot):
                _refuse(aggregate_id, version,
                        f"it is a {type(snapshot).__name__}, not a StockItemSnapshot")
                continue
            problem = snapshot.signature_problem(key)
            if problem is not None:
                _refuse(aggregate_id, version, problem, legacy=not snapshot.is_bound)
                continue
            candidates[aggregate_id] = snapshot
        if not candidates:
            return candidates
        positions = self.positions_of(
            [(i, s.originator_version) for i, s in candidates.items()])
        usable: dict[UUID, StockItemSnapshot] = {}
        for aggregate_id, snapshot in candidates.items():
            found = positions.get((aggregate_id, snapshot.originator_version))
            if found is None:
                _refuse(aggregate_id, snapshot.originator_version,
                        "the stream has no event at its version")
            elif found != snapshot.position:
                _refuse(aggregate_id, snapshot.originator_version,
                        f"it records position {snapshot.position}, but the event at its "
                        f"version is at position {found}")
            else:
                usable[aggregate_id] = snapshot
        return usable

    def reconstruct(self, aggregate_id: UUID, snapshot: StockItemSnapshot | None,
                    version: int | None = None,
                    projector_func: ProjectorFunction[Any, Any] | None = None) -> Aggregate:
        """The aggregate from `snapshot` (checked already, or None: from the first event) and
        the events after it, up to `version`."""
        gt = snapshot.originator_version if snapshot is not None else None
        events = self.event_store.get(originator_id=aggregate_id, gt=gt, lte=version)
        start: list[DomainEventProtocol[UUID]] = [snapshot] if snapshot is not None else []
        project = projector_func or _project
        aggregate = project(None, chain(start, events))
        if aggregate is None:
            raise AggregateNotFoundError(f"Aggregate {aggregate_id!r} version {version!r} "
                                         "not found.")
        return cast(Aggregate, aggregate)

    def _reconstruct_aggregate(self, aggregate_id: UUID, version: int | None,
                               projector_func: ProjectorFunction[Any, Any]) -> Any:
        # The library's `get` reconstructs through this method on a cache miss, and for a
        # past version: the one place where it would take a snapshot on its word.
        snapshot = self.usable_snapshots([aggregate_id], lte=version).get(aggregate_id)
        return self.reconstruct(aggregate_id, snapshot, version, projector_func)


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
