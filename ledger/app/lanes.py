"""Lanes: commands that threads of one process submit at the same moment for the same streams
are decided together and appended in one transaction.

A service whose threads share one `Ledger` (the HTTP service's worker process) runs one
command at a time, so while one runs the others wait. A lane gathers the waiting commands of
one set of streams (a stock item's sales, say). Its head, once the ledger is free, takes every
command waiting in the lane and runs them as one group (`CommandLoop.run_group`); each thread
gets its own command's outcome, and the first thread still waiting, if any, leads the next
group. Commands of other lanes wait for the ledger as before, and nothing is held back to
make a group bigger: a command that arrives to an idle lane runs at once, alone.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable, Sequence
from contextlib import AbstractContextManager
from typing import Any

from ledger.app.commands import Command
from ledger.app.handlers import Handler
from ledger.app.loop import Outcome
from ledger.app.results import CommandResult

MAX_GROUP = 64
"""Commands decided and appended together at most: the rest of a lane waits for the next."""

RunGroup = Callable[[Sequence[tuple[Command, Handler[Any, Any]]]], list[Outcome]]


class _Ticket:
    """One submitted command, waiting for its outcome or for its turn to lead its lane."""

    __slots__ = ("command", "done", "handler", "leads", "outcome", "woken")

    def __init__(self, command: Command, handler: Handler[Any, Any]) -> None:
        self.command = command
        self.handler = handler
        self.woken = threading.Event()
        self.done = False
        self.leads = False
        self.outcome: Outcome = None


class _Lane:
    __slots__ = ("busy", "waiting")

    def __init__(self) -> None:
        self.waiting: list[_Ticket] = []
        self.busy = False
        """Whether a thread leads the lane: then a new command waits to be taken along."""


def lane_of(command: Command, handler: Handler[Any, Any]) -> Hashable:
    """The lane of a command: the set of streams its handler names for it (a one-line sale's
    outlet and stock item), so that commands on one stock item meet in one lane."""
    return frozenset(handler.streams(command))


class Lanes:
    """The lanes of one ledger: `run` blocks until the command's group has run."""

    def __init__(self, run_group: RunGroup,
                 exclusive: Callable[[], AbstractContextManager[Any]]) -> None:
        self._run_group = run_group
        self._exclusive = exclusive
        self._guard = threading.Lock()
        self._lanes: dict[Hashable, _Lane] = {}

    def run(self, command: Command, handler: Handler[Any, Any]) -> CommandResult:
        """Run `command` in its lane: with the commands submitted for the same streams while
        it waited, or alone; return its own result or raise its own error."""
        ticket = _Ticket(command, handler)
        name = lane_of(command, handler)
        with self._guard:
            lane = self._lanes.get(name)
            if lane is None:
                lane = self._lanes[name] = _Lane()
            lane.waiting.append(ticket)
            ticket.leads = not lane.busy
            lane.busy = True
        if not ticket.leads:
            ticket.woken.wait()
        if not ticket.done:
            self._lead(name, lane, ticket)
        outcome = ticket.outcome
        if isinstance(outcome, Exception):
            raise outcome
        assert isinstance(outcome, CommandResult)
        return outcome

    def _lead(self, name: Hashable, lane: _Lane, ticket: _Ticket) -> None:
        """Run groups of the lane until `ticket`'s is done, then hand the lane on."""
        try:
            while not ticket.done:
                self._run_next_group(lane, ticket)
        finally:
            with self._guard:
                if lane.waiting:
                    successor = lane.waiting[0]
                    successor.leads = True
                    successor.woken.set()
                else:
                    lane.busy = False
                    del self._lanes[name]

    def _run_next_group(self, lane: _Lane, ticket: _Ticket) -> None:
        group: list[_Ticket] = []
        try:
            # The group is taken once the ledger is free, so that every command that arrived
            # while the one before ran goes with it.
            with self._exclusive():
                with self._guard:
                    group = lane.waiting[:MAX_GROUP]
                    del lane.waiting[:MAX_GROUP]
                outcomes = self._run_group([(t.command, t.handler) for t in group])
            again = []
            for other, outcome in zip(group, outcomes, strict=True):
                if outcome is None:
                    again.append(other)  # to be decided once this group is recorded
                else:
                    other.outcome, other.done = outcome, True
            with self._guard:
                lane.waiting[:0] = again
        except BaseException as error:
            for other in group:
                if not other.done:
                    other.outcome = error if isinstance(error, Exception) else RuntimeError(
                        f"the group was interrupted: {error!r}")
                    other.done = True
            raise
        finally:
            for other in group:
                if other.done and other is not ticket:
                    other.woken.set()
