"""The one command loop: load, decide, append; on a lost race, decide again on fresh state.

Every command goes through `CommandLoop.run`, the expiry sweep's per-item expiries included.
An attempt decides on the cached aggregates and lets the append validate what it read; after
a refusal or a conflict the next attempt decides on fresh state. Where a till waits between
attempts (backing off, or queueing on the streams it lost on) is the store's `WriterQueue`.

`CommandLoop.run_group` is the same loop for commands that arrived together (the HTTP
service's, on one stock item): the same handlers decide them one after another on the state
the ones before left, and one append records every accepted one with its key's record.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any, TypeVar
from uuid import UUID

from eventsourcing.persistence import IntegrityError

from ledger.app.commands import Command
from ledger.app.handlers import RESULT_CLASSES, Handler
from ledger.app.idempotency import acceptance, command_fingerprint, recorded_result
from ledger.app.results import CommandResult
from ledger.app.unit_of_work import GroupUnitOfWork, NotInThisGroup, StepEvents, UnitOfWork
from ledger.domain import identity
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

Outcome = CommandResult | Exception | None
"""What became of one command of a group: its result, the error `run` would have raised for
it, or None if it must be run again in a later group."""


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
                replay = self._replay(handler, key, fingerprint)
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
                replay = self._replay_after_conflict(handler, uow, key, fingerprint)
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

    def _replay(self, handler: Handler[CommandT, ResultT], key: str,
                fingerprint: str) -> ResultT | None:
        if not handler.records_command:
            return None
        replay = recorded_result(self._app, key, fingerprint, RESULT_CLASSES)
        return replay  # type: ignore[return-value]  # the kind names the class

    def _replay_after_conflict(self, handler: Handler[CommandT, ResultT], uow: UnitOfWork,
                               key: str, fingerprint: str) -> ResultT | None:
        """The first answer if a conflict was this very command, recorded already; refuses a
        sale or transfer id that another command recorded."""
        replay = self._replay(handler, key, fingerprint)
        if replay is not None:
            return replay
        reference = uow.recorded_reference()
        if reference is None:
            return None
        # Recorded by a concurrent writer since the check above; if it was this very
        # command, its record is visible now too.
        replay = self._replay(handler, key, fingerprint)
        if replay is not None:
            return replay
        raise DuplicateReference(f"{reference} is already recorded") from None

    # ------------------------------------------------------------------ groups

    def run_group(self, commands: Sequence[tuple[Command, Handler[Any, Any]]]) -> list[Outcome]:
        """Decide commands that arrived together, in order, each by its handler on the state
        the accepted ones before it left, and append every accepted one's events, each with
        its key's record, in one transaction; return each command's own outcome.

        A refused command gets its refusal and leaves the state as it found it (a sale is all
        or nothing). A key seen earlier in the group gets the first answer (or is refused as
        reused, if the command differs); a key recorded already gets its recorded answer, as
        from `run`. After a lost race the whole group is decided again on fresh state; a
        refusal made on cached state is too, before it is answered. A command that reads a
        stream an earlier one starts by an event alone (a refund of a sale in the group) is
        not decided (None): run it again. One command alone goes through `run`.
        """
        if len(commands) == 1:
            command, handler = commands[0]
            try:
                return [self.run(command, handler)]
            except Exception as error:
                return [error]
        members = [_Member(command, handler) for command, handler in commands]
        for member in members:
            if not member.handler.records_command:
                raise ValueError(f"{member.handler.kind} commands are not decided in groups")
        with self.lock:
            streams = list(dict.fromkeys(
                i for member in members for i in member.handler.streams(member.command)))
            contended = self._queue.recently_contended(streams)
            lost, stale = False, any(member.handler.fresh_first for member in members)
            for attempt in range(MAX_ATTEMPTS):
                waiting = [member for member in members if not member.done]
                if not waiting:
                    break
                if attempt and lost:
                    self._queue.pause_before_retry(attempt, contended)
                retry = self._attempt_group(waiting, contended, stale)
                if retry is None:
                    break
                contended, lost, stale = retry.contended, retry.lost, True
            for member in members:
                if not member.done:
                    member.finish(ConcurrencyConflict(
                        f"{member.handler.kind} under key {member.key!r}: "
                        f"{MAX_ATTEMPTS} conflicts"))
        return [member.outcome for member in members]

    def _attempt_group(self, members: list[_Member], contended: list[UUID],
                       stale: bool) -> _Retry | None:
        """One attempt at the group's undecided members: every one is finished, unless the
        attempt must be made again (`_Retry`)."""
        group = GroupUnitOfWork(self._app, fast_forward=stale)
        accepted: list[_Accepted] = []
        first_of_key: dict[str, _Accepted] = {}
        twins: list[tuple[_Member, _Accepted]] = []
        refused: list[tuple[_Member, Refusal]] = []
        with self._queue.serialised(contended):
            for index, member in enumerate(members):
                first = first_of_key.get(member.key)
                if first is not None:
                    twins.append((member, first))
                    continue
                step = group.step()
                try:
                    result = member.handler.decide(step, member.command, member.key)
                    appended = group.merge(step)
                except NotInThisGroup:
                    for later in members[index:]:
                        later.finish(None)
                    break
                except Refusal as refusal:
                    if not stale:
                        return _Retry(contended, lost=False)  # refused on possibly stale state
                    refused.append((member, refusal))
                    continue
                except Exception as error:
                    member.finish(error)  # the step's copies are dropped with it
                    continue
                accepted.append(_Accepted(member, result, appended))
                first_of_key[member.key] = accepted[-1]
            for member, reason in refused:
                member.finish(self._answer_to_refusal(member, reason))
            if not accepted:
                return None
            appending, owners = [], []
            for index, one in enumerate(accepted):
                own = [*one.appended.events, acceptance(one.member.key, one.member.handler.kind,
                                                        one.member.fingerprint, one.result)]
                appending.extend(own)
                owners.extend([index] * len(own))
            changed = group.changed()
            versions_before = [a.version - len(a.pending_events) for a in changed]
            read_only = group.read_only()
            for aggregate in changed:
                aggregate.collect_events()  # `appending` holds them, in the group's order
            try:
                positions = self._app.append(appending, expect_versions=read_only,
                                             serialised=bool(contended))
            except IntegrityError:
                group.forget()
                return self._after_group_conflict(accepted, twins, changed, versions_before,
                                                  contended)
            except Exception as error:
                group.forget(everything=True)
                for one in accepted:
                    one.member.finish(error)
                for member, _ in twins:
                    member.finish(error)
                return None
            except BaseException:
                group.forget(everything=True)
                raise
            group.recorded()
        self._app.take_snapshots(changed, versions_before)
        last: dict[int, int] = {}
        for owner, position in zip(owners, positions, strict=True):
            last[owner] = max(position, last.get(owner, 0))
        for index, one in enumerate(accepted):
            one.member.finish(one.result.model_copy(update={"position": last[index]}))
        for member, first in twins:
            if member.fingerprint != first.member.fingerprint:
                member.finish(IdempotencyKeyReused(member.key, first.member.handler.kind))
            else:
                answer = first.member.outcome
                assert isinstance(answer, CommandResult)
                member.finish(answer.model_copy(update={"replayed": True}))
        return None

    def _answer_to_refusal(self, member: _Member, refusal: Refusal) -> Outcome:
        """A refusal on fresh state, unless the key has an answer recorded already."""
        try:
            replay = self._replay(member.handler, member.key, member.fingerprint)
        except IdempotencyKeyReused as reused:
            return reused
        return refusal if replay is None else replay

    def _after_group_conflict(self, accepted: list[_Accepted],
                              twins: list[tuple[_Member, _Accepted]], changed: list[Any],
                              versions_before: list[int], contended: list[UUID]) -> _Retry:
        """After a failed group append: answer the commands whose key was recorded meanwhile
        (a repeat of a recorded command, and the group's repeats of it) or that start a
        stream recorded since (a sale id under another key), from one read of their streams;
        the rest are decided again, queueing on the streams the group lost on if nothing
        else explains the conflict."""
        records = {identity.command_record_id(one.member.key): one.member for one in accepted}
        references = {aggregate_id: (one.member, reference) for one in accepted
                      for aggregate_id, reference in one.appended.unique_references}
        existing = self._app.existing_streams([*records, *references])
        explained = False
        for member in [*records.values(), *(twin for twin, _ in twins)]:
            if identity.command_record_id(member.key) in existing:
                try:
                    replay = self._replay(member.handler, member.key, member.fingerprint)
                except IdempotencyKeyReused as reused:
                    member.finish(reused)
                else:
                    if replay is not None:  # it is: its stream holds the record
                        member.finish(replay)
                explained = True
        for aggregate_id, (member, reference) in references.items():
            if aggregate_id in existing and not member.done:
                # Recorded by a concurrent writer since: if it was this very command, its
                # record is visible now too.
                try:
                    replay = self._replay(member.handler, member.key, member.fingerprint)
                except IdempotencyKeyReused as reused:
                    replay = None
                    member.finish(reused)
                if not member.done:
                    member.finish(replay if replay is not None else
                                  DuplicateReference(f"{reference} is already recorded"))
                explained = True
        if explained:
            return _Retry(contended, lost=False)
        self.conflict_retries += 1
        lost_on = [a.id for a, before in zip(changed, versions_before, strict=True) if before > 0]
        self._queue.lost_race_on(lost_on)
        return _Retry(lost_on, lost=True)


class _Member:
    """One command of a group, and what became of it once it is done."""

    __slots__ = ("command", "done", "fingerprint", "handler", "key", "outcome")

    def __init__(self, command: Command, handler: Handler[Any, Any]) -> None:
        self.command = command
        self.handler = handler
        self.key = command.idempotency_key()
        self.fingerprint = command_fingerprint(handler.kind, command)
        self.outcome: Outcome = None
        self.done = False

    def finish(self, outcome: Outcome) -> None:
        self.outcome = outcome
        self.done = True


class _Accepted:
    """A member decided and accepted in one attempt: its result and what it appends."""

    __slots__ = ("appended", "member", "result")

    def __init__(self, member: _Member, result: CommandResult, appended: StepEvents) -> None:
        self.member = member
        self.result = result
        self.appended = appended


class _Retry:
    """An attempt that must be made again, and on which streams' queue."""

    __slots__ = ("contended", "lost")

    def __init__(self, contended: list[UUID], *, lost: bool) -> None:
        self.contended = contended
        self.lost = lost
