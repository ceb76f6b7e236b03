"""The one command loop: load, decide, append; on a lost race, decide again on fresh state.

Every command goes through `CommandLoop.run`, the expiry sweep's per-item expiries included.
An attempt decides on the cached aggregates and lets the append validate what it read; after
a refusal or a conflict the next attempt decides on fresh state. Where a till waits between
attempts (backing off, or queueing on the streams it lost on) is the store's `WriterQueue`.
"""

from __future__ import annotations

import threading
from typing import TypeVar
from uuid import UUID

from eventsourcing.persistence import IntegrityError

from ledger.app.commands import Command
from ledger.app.handlers import RESULT_CLASSES, Handler, already_recorded
from ledger.app.idempotency import acceptance, command_fingerprint, recorded_result
from ledger.app.results import CommandResult
from ledger.app.unit_of_work import UnitOfWork
from ledger.domain.errors import (
    ConcurrencyConflict,
    DuplicateReference,
    IdempotencyKeyReused,
    Refusal,
)
from ledger.store.application import LedgerApplication

CommandT = TypeVar("CommandT", bound=Command)
ResultT = TypeVar("ResultT", bound=CommandResult)

MAX_ATTEMPTS = 40


class CommandLoop:
    """Runs commands one at a time against one store."""

    def __init__(self, app: LedgerApplication) -> None:
        self._app = app
        self._queue = app.writer_queue
        self.lock = threading.RLock()
        self.conflict_retries = 0
        """How many appends were retried after losing a race with another writer."""

    def run(self, command: CommandT, handler: Handler[CommandT, ResultT]) -> ResultT:
        """Decide `command` with `handler` and append what it changed, with the record of its
        idempotency key, in one transaction; return its result with the recorded position."""
        key = command.idempotency_key()
        fingerprint = command_fingerprint(handler.kind, command)
        with self.lock:
            contended = self._queue.recently_contended(handler.streams(command))
            lost, stale = False, handler.fresh_first
            for attempt in range(MAX_ATTEMPTS):
                if attempt and lost:
                    self._queue.pause_before_retry(attempt, contended)
                outcome = self._attempt(command, handler, key, fingerprint, contended, stale)
                if not isinstance(outcome, _Retry):
                    return outcome
                contended, lost, stale = outcome.contended, outcome.lost, True
        raise ConcurrencyConflict(
            f"{handler.kind} under key {key!r}: {MAX_ATTEMPTS} conflicts")

    def _attempt(self, command: CommandT, handler: Handler[CommandT, ResultT], key: str,
                 fingerprint: str, contended: list[UUID], stale: bool) -> ResultT | _Retry:
        uow = UnitOfWork(self._app, fast_forward=stale)
        with self._queue.serialised(contended):
            try:
                result = handler.decide(uow, command, key)
            except Refusal:
                uow.forget()
                replay = self._replay(handler, key, fingerprint, command)
                if replay is not None:
                    return replay
                if stale:
                    raise
                return _Retry(contended, lost=False)  # refused on possibly stale state
            except BaseException:
                uow.forget(everything=True)
                raise
            changed = uow.changed()
            versions_before = [a.version - len(a.pending_events) for a in changed]
            created = list(uow.created)
            if handler.records_command:
                created.append(acceptance(key, handler.kind, fingerprint, result))
            elif not changed and not created:
                return result  # nothing to record
            try:
                position = self._app.record(*changed, created=created,
                                            expect_versions=uow.read_only(),
                                            serialised=bool(contended))
            except IntegrityError:
                uow.forget()
                replay = self._replay_after_conflict(handler, uow, key, fingerprint, command)
                if replay is not None:
                    return replay
                self.conflict_retries += 1
                # Retry under the locks of the streams that were contended (those that
                # existed: a new stream's clash is a duplicate, handled above).
                lost_on = [a.id for a, before in zip(changed, versions_before, strict=True)
                           if before > 0]
                self._queue.lost_race_on(lost_on)
                return _Retry(lost_on, lost=True)
            except BaseException:
                uow.forget(everything=True)
                raise
            uow.recorded()
        # Out of the queue's block, whose connection is back in the pool: a snapshot written
        # in it would make the pool open a second one.
        self._app.take_snapshots(changed, versions_before)
        return result.model_copy(update={"position": position})

    def _replay(self, handler: Handler[CommandT, ResultT], key: str, fingerprint: str,
                command: CommandT) -> ResultT | None:
        """The first answer to this very command if it is recorded under `key`; refuses a
        different command recorded under it, saying which id it shares if that is why (a
        sale's own key is its id, and sale ids are unique across outlets)."""
        if not handler.records_command:
            return None
        try:
            replay = recorded_result(self._app, key, fingerprint, RESULT_CLASSES)
        except IdempotencyKeyReused as reused:
            for stream, reference in handler.references(command):
                existing = self._app.load(stream)
                if existing is not None:
                    raise IdempotencyKeyReused(reused.key, reused.recorded_kind,
                                               already_recorded(reference, existing)) from None
            raise
        return replay  # type: ignore[return-value]  # the kind names the class

    def _replay_after_conflict(self, handler: Handler[CommandT, ResultT], uow: UnitOfWork,
                               key: str, fingerprint: str,
                               command: CommandT) -> ResultT | None:
        """The first answer if a conflict was this very command, recorded already; refuses a
        sale or transfer id that another command recorded, naming where."""
        replay = self._replay(handler, key, fingerprint, command)
        if replay is not None:
            return replay
        recorded = uow.recorded_reference()
        if recorded is None:
            return None
        # Recorded by a concurrent writer since the check above; if it was this very
        # command, its record is visible now too.
        replay = self._replay(handler, key, fingerprint, command)
        if replay is not None:
            return replay
        raise DuplicateReference(already_recorded(*recorded)) from None


class _Retry:
    """An attempt that must be made again, and on which streams' queue."""

    __slots__ = ("contended", "lost")

    def __init__(self, contended: list[UUID], *, lost: bool) -> None:
        self.contended = contended
        self.lost = lost
