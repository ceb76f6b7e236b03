"""Catch-up: apply the events recorded so far to the live generation of every projection.

A long way behind, the events go through worker processes (`projections.parallel`), then
batch by batch here. Generations and positions are read once and then carried from batch to
batch; only when another runner or a rebuild moved them are they read again. A catch-up that
applied events then seals the hash chain over them (`ReadStore.seal`), so every reader that
catches up (the CLI's reads, the HTTP service, `projections catch-up`, the follower, a
rebuild) keeps the chain close behind the appends, and the sealer checks each row's digest
on the way.
"""

from __future__ import annotations

import time

from eventsourcing.persistence import IntegrityError, PersistenceError

from ledger.app.commands import check_position, check_seconds
from ledger.store.privileges import permission_denied
from projections import generations, tracking
from projections.batch import BatchRunner, Progress, ProjectionsMoved
from projections.stuck import ProjectionStuck

Known = tuple[dict[str, int], dict[str, int]]
"""The live generations, and the positions they stand at."""
WAIT_POLL_SECONDS = 0.05
"""How often `wait_for` looks again for a position not yet appended."""


def catch_up(models: BatchRunner, *, until: int | None = None,
             progress: Progress | None = None, workers: int | None = None) -> int:
    """Apply events up to the head as it was on the call (or `until`); return how many
    events were read. `workers`: how many processes, if not as many as worth it.

    `ProjectionStuck` if an event on the way cannot be read: the events before it are
    applied (its `applied` counts them all), and it is recorded for `projections status`."""
    # Appends go on while we apply: stop at the head we started from, or we may never stop.
    # Never past it: positions above the head are not complete ranges (an append still in
    # flight may take them), and ranges up to a position far beyond it would not fit in
    # memory.
    target = models.store.head() if until is None else min(until, models.store.head())
    applied = 0
    known: Known | None = None
    parallel = True
    while True:
        if known is None:
            known = _read_known(models)
        if min(known[1].values()) >= target:
            return _sealed(models, applied)
        if parallel:
            parallel = False
            events = models.apply_in_parallel(*known, target, live=True, workers=workers,
                                              progress=progress)
            if events is not None:
                applied += events
                known = None  # the workers moved the positions: read where they got to
                continue
        try:
            count, positions = models.apply_next(*known, live=True)
        except (ProjectionsMoved, IntegrityError):
            known = None  # another runner moved first: start again from its position
            continue
        except ProjectionStuck as stuck:
            stuck.applied += applied
            _sealed(models, stuck.applied)  # what it did apply, as any catch-up's
            raise
        known = (known[0], positions)
        applied += count
        if progress is not None:
            progress(applied, models.store.head())
        if count == 0:
            return _sealed(models, applied)


def _sealed(models: BatchRunner, applied: int) -> int:
    # What was applied is sealed before anyone reads it as the ledger's: an event edited
    # after its append committed is refused here, never chained as if it were the original.
    if applied:
        models.store.seal()
    return applied


def catch_up_if_permitted(models: BatchRunner, *, workers: int | None = None) -> int | None:
    """Catch up, as `catch_up`, and return None; or, if this role may not write the read
    models (the auditor's, `docs/append_only_role.sql`), leave them as they stand, which
    `projections run` keeps up to date, and return how many events behind the head they are.
    Reads need no right to write: whoever may write brings them up to date first."""
    try:
        catch_up(models, workers=workers)
    except PersistenceError as error:
        if not permission_denied(error):
            raise
        return max(0, models.store.head() - min(_read_known(models)[1].values()))
    return None


def _read_known(models: BatchRunner) -> Known:
    live = generations.generations(models.store)
    return live, tracking.positions(models.store, live)


def wait_for(models: BatchRunner, position: int, timeout: float) -> bool:
    """Block until every projection has reached `position`, applying events here if no
    runner does it first; False if the deadline passed. `InvalidInput` if `position` is
    not one a store can hold or `timeout` is not a finite, bounded number of seconds."""
    check_position("position", position)
    deadline = time.monotonic() + check_seconds("timeout", timeout)
    may_write = True
    while min(_read_known(models)[1].values()) < position:
        if time.monotonic() > deadline:
            return False
        if may_write:
            try:
                catch_up(models, until=position)
            except PersistenceError as error:
                if not permission_denied(error):
                    raise
                # A role that may only read waits for whoever may write (`projections run`).
                may_write = False
        if not may_write or models.store.head() < position:
            time.sleep(WAIT_POLL_SECONDS)  # not there yet: wait for it, not spin
    return True
