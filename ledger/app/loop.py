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
from ledger.app.handlers import RESULT_CLASSES, Handler, already_recorded
from ledger.app.idempotency import acceptance, command_fingerprint, recorded_result
from ledger.app.results import CommandResult
from ledger.app.unit_of_work import (
    GroupUnitOfWork,
    NotInThisGroup,
    StartedInThisGroup,
    StepEvents,
    UnitOfWork,
)
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

    # ------------------------------------------------------------------ groups

    def run_group(self, commands: Sequence[tuple[Command, Handler[Any, Any]]]) -> list[Outcome]:
        """Decide commands that arrived together, in order, each by its handler on the state
        the accepted ones before it left, and append every accepted one's events, each with
        its key's record, in one transaction; return each command's own outcome.

        Each outcome is what `run` would have given that command had the group's commands
        come one by one, in order: a refused command gets its refusal (answered once the
        group's append is recorded, since it may rest on what the commands before it took)
        and leaves the state as it found it (a sale is all or nothing); a key seen earlier in
        the group, or recorded already, gets the answer `run` gives a repeat (`_replay`, read
        from the record). After a lost race the whole group is decided again on fresh state;
        a refusal made on cached state is too, before it is answered. A command that reads a
        stream an earlier one starts by an event alone (a refund of a sale in the group), or
        starts a stream an earlier one starts (a sale id under a second key), is not decided
        (None): run it again once the group is recorded. One command alone goes through
        `run`.
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
                for member in waiting:
                    if member.done and member.outcome is None:
                        member.reopen()  # put off behind a step the retry decides again
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
        attempt must be made again (`_Retry`), when those not finished are decided again."""
        group = GroupUnitOfWork(self._app, fast_forward=stale)
        accepted: list[_Accepted] = []
        accepted_keys: set[str] = set()
        twins: list[_Member] = []
        refused: list[tuple[_Member, Refusal]] = []
        resting: list[_Member] = []
        with self._queue.serialised(contended):
            for index, member in enumerate(members):
                if member.key in accepted_keys:
                    twins.append(member)  # answered from its key's record once recorded
                    continue
                step = group.step()
                try:
                    result = member.handler.decide(step, member.command, member.key)
                    appended = group.merge(step)
                except NotInThisGroup:
                    for later in members[index:]:
                        if not later.done:
                            later.finish(None)
                    break
                except StartedInThisGroup:
                    member.finish(None)  # refused as `run` refuses it, once the first is in
                    continue
                except Refusal as refusal:
                    if not stale:
                        return _Retry(contended, lost=False)  # refused on possibly stale state
                    refused.append((member, refusal))
                    if accepted:
                        resting.append(member)  # it may rest on what those before it took
                    continue
                except Exception as error:
                    member.finish(error)  # the step's copies are dropped with it
                    continue
                accepted.append(_Accepted(member, result, appended))
                accepted_keys.add(member.key)
            if not accepted:
                self._answer_refusals(refused, accepted_keys)
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
                # The append every command goes through (`LedgerApplication.record` is this
                # for one command): the same read checks, gate, registration and content
                # digests, one transaction.
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
                # Nothing of the group is recorded: the repeats, and the refusals that may
                # rest on an accepted command before them, are decided again, first in the
                # lane's next group (where nothing comes before them: each is answered then).
                for member in [*twins, *resting]:
                    member.finish(None)
                self._answer_refusals([(m, why) for m, why in refused if not m.done], set())
                return None
            except BaseException:
                group.forget(everything=True)
                raise
            group.recorded()
        # Out of the queue's block, whose connection is back in the pool: a snapshot or a
        # read made in it would make the pool open a second one.
        self._app.take_snapshots(changed, versions_before)
        last: dict[int, int] = {}
        for owner, position in zip(owners, positions, strict=True):
            last[owner] = max(position, last.get(owner, 0))
        for index, one in enumerate(accepted):
            one.member.finish(one.result.model_copy(update={"position": last[index]}))
        for member in twins:
            member.finish(self._replayed(member))
        self._answer_refusals(refused, accepted_keys)
        return None

    def _replayed(self, member: _Member) -> Outcome:
        """What `run` answers a command whose key is recorded (`_replay`): the first answer,
        or the refusal of a different command under the key; None if it is not recorded."""
        try:
            return self._replay(member.handler, member.key, member.fingerprint,
                                member.command)
        except IdempotencyKeyReused as reused:
            return reused
        except Exception as error:
            # This member's own answer, as `run` would raise it: the others' stand (those
            # of a recorded group among them).
            return error

    def _answer_refusals(self, refused: list[tuple[_Member, Refusal]],
                         accepted_keys: set[str]) -> None:
        """Answer refusals made on fresh state as `run` does: the recorded answer if the key
        was recorded before the group, else the refusal. Which keys are recorded is one read
        for them all; only those found are read again, one by one, as `run` reads them."""
        asking = [member for member, _ in refused if member.key not in accepted_keys]
        try:
            recorded = self._app.existing_streams(
                [identity.command_record_id(member.key) for member in asking])
        except Exception as error:
            for member, _ in refused:
                member.finish(error)  # as `run` raises it, reading the key before refusing
            return
        for member, refusal in refused:
            replay = None
            if identity.command_record_id(member.key) in recorded \
                    and member.key not in accepted_keys:
                replay = self._replayed(member)
            member.finish(refusal if replay is None else replay)

    def _after_group_conflict(self, accepted: list[_Accepted], twins: list[_Member],
                              changed: list[Any], versions_before: list[int],
                              contended: list[UUID]) -> _Retry:
        """After a failed group append, answer as `_replay_after_conflict` does the commands
        whose key was recorded meanwhile (a repeat of a recorded command, and the group's
        repeats of it) or that start a stream recorded since (a sale id under another key),
        from one read of which of those streams exist; the rest are decided again, queueing
        on the streams the group lost on if nothing else explains the conflict."""
        records = {identity.command_record_id(one.member.key): one.member for one in accepted}
        references = {aggregate_id: (one.member, reference) for one in accepted
                      for aggregate_id, reference in one.appended.unique_references}
        existing = self._app.existing_streams([*records, *references])
        explained = False
        for member in [*records.values(), *twins]:
            if identity.command_record_id(member.key) in existing:
                replay = self._replayed(member)
                if replay is not None:  # it is: its stream holds the record
                    member.finish(replay)
                explained = True
        for aggregate_id, (member, reference) in references.items():
            if aggregate_id in existing and not member.done:
                # Recorded by a concurrent writer since: if it was this very command, its
                # record is visible now too.
                replay = self._replayed(member)
                if replay is None:
                    replay = DuplicateReference(
                        already_recorded(reference, self._app.load(aggregate_id)))
                member.finish(replay)
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

    def reopen(self) -> None:
        self.outcome = None
        self.done = False


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
