"""Rebuild: fill a fresh generation of some projections from the first event, then switch
readers and runners over to it in one transaction.

Appends and the live runner go on meanwhile; no reader ever sees a half-built view.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from projections import generations, schema, tracking
from projections.batch import BatchRunner, Progress
from projections.catch_up import catch_up


def rebuild(models: BatchRunner, names: Sequence[str], progress: Progress | None = None,
            workers: int | None = None) -> int:
    """Rebuild projections `names` into a fresh generation and switch readers over
    atomically; return how many events the fresh generation read."""
    store = models.store
    current = generations.generations(store)
    fresh = {name: current[name] + 1 for name in names}
    _start_afresh(models, fresh)
    positions = dict.fromkeys(fresh, 0)
    applied = models.apply_in_parallel(fresh, positions, store.head(), live=False,
                                       workers=workers, progress=progress)
    if applied is None:
        applied = 0
    else:
        positions = tracking.positions(store, fresh)
    while True:
        count, positions = models.apply_next(fresh, positions, live=False)
        applied += count
        if progress is not None:
            progress(applied, store.head())
        if count < models.batch_size:
            _switch(models, current, fresh)
            break
    # The views now read the new generation; the old one has no readers left.
    _drop(models, {name: current[name] for name in fresh})
    catch_up(models, progress=progress)
    return applied


def _start_afresh(models: BatchRunner, fresh: Mapping[str, int]) -> None:
    """Empty tables and no position for each fresh generation.

    A rebuild that died part-way left tables and a position; both start afresh."""
    with models.store.transaction() as cursor:
        for name, generation in fresh.items():
            schema.drop_tables(models.store, cursor, name, generation)
            tracking.forget(models.store, cursor, name, generation)
            schema.create_tables(models.store, cursor, name, generation)


def _drop(models: BatchRunner, old: Mapping[str, int]) -> None:
    """Drop the tables and positions of generations no one reads any more."""
    with models.store.transaction() as cursor:
        for name, generation in old.items():
            schema.drop_tables(models.store, cursor, name, generation)
            tracking.forget(models.store, cursor, name, generation)


def _switch(models: BatchRunner, current: Mapping[str, int], fresh: Mapping[str, int]) -> None:
    """Bring the fresh generation up to the live one and point readers and runners at it,
    in one transaction.

    Locking the state rows stops live runners between their batches, so the live
    generation cannot move while the fresh one closes the gap: readers never see the
    views go back to an earlier position, and a rebuild chasing busy appenders finishes.
    """
    store = models.store
    with store.transaction() as cursor:
        for name, generation in sorted(fresh.items()):
            generations.lock(store, cursor, name)
            live = tracking.position(store, cursor, name, current[name])
            position = tracking.position(store, cursor, name, generation)
            while position < live:
                position = models.apply_range(cursor, name, generation, position, live)
        for name, generation in sorted(fresh.items()):
            generations.set_generation(store, cursor, name, generation)
            schema.point_views(store, cursor, name, generation, replace=True)
