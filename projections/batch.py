"""A batch of events, and what catch-up, rebuild and parallel workers need from the runner.

`projections.runner` applies one batch at a time; the jobs built on it (`catch_up`, `rebuild`,
`parallel`) take it as a `BatchRunner`, so that they do not import the runner, whose façade
imports them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from projections.store import ReadStore
from projections.stuck import Stuck

Progress = Callable[[int, int], None]
"""Called with the events applied so far and the head (or the events to apply)."""


@dataclass(frozen=True)
class Batch:
    """Events read to be applied in one transaction, up to position `end`."""

    end: int
    count: int
    decoded: list[tuple[int, object | None]]
    stuck: Stuck | None = None
    """The event the batch stopped before, which cannot be read (then `end` is just before
    it, and applying the batch must not go further)."""


class ProjectionsMoved(Exception):
    """Another runner applied events between our read and our write; read again."""


class BatchRunner(Protocol):
    """Applies batches of events to the projections of one store."""

    @property
    def store(self) -> ReadStore: ...

    @property
    def batch_size(self) -> int:
        """At most how many events a batch holds."""
        ...

    def read(self, start: int, stop: int | None = None) -> Batch | None:
        """The next batch from position `start` (the whole range to `stop`, if given)."""
        ...

    def changes(self, batch: Batch, before: Mapping[str, int]) -> dict[str, Any]:
        """Each projection's changes for the events of `batch` after its position in
        `before`: pure work, outside any transaction."""
        ...

    def commit(self, generations: Mapping[str, int], before: Mapping[str, int], batch: Batch,
               prepared: Mapping[str, Any], *, live: bool) -> None:
        """Write prepared changes and the positions they reach in one transaction, or raise
        `ProjectionsMoved` if the positions are no longer `before`."""
        ...

    def apply_next(self, generations: Mapping[str, int], before: Mapping[str, int], *,
                   live: bool) -> tuple[int, dict[str, int]]:
        """Apply the batch after the positions `before`: how many events it read, and the
        positions now."""
        ...

    def apply_range(self, cursor: Any, name: str, generation: int, after: int,
                    until: int) -> int:
        """Apply a batch of the events after `after`, up to `until`, to one generation, in
        the caller's transaction; the position reached."""
        ...

    def apply_in_parallel(self, generations: Mapping[str, int], positions: Mapping[str, int],
                          target: int, *, live: bool, workers: int | None,
                          progress: Progress | None) -> int | None:
        """Apply events up to `target` in worker processes if that is worth it here: how many
        were applied, or None if it was not worth it (then nothing was)."""
        ...
