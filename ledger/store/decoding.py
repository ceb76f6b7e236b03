"""Reading stored events back, refusing any row that is not one of the ledger's events.

The library's mapper trusts what it reads: it imports whatever module a topic names, and sets
an event's attributes to whatever keys the stored JSON holds, so a row appended with the
application's rights but not by the ledger (a topic no class has, state that is not JSON, or
JSON of the wrong shape) surfaced as a `TopicError`, a `MapperDeserialisationError`, or an
`AttributeError` deep inside whatever read it next. `LedgerMapper` reads every row the same
way, then checks it, and raises `UnreadableEvent` naming the row and why, so that each reader
can decide what to do about one unreadable row (a projection stops at it, verify reports it,
export marks it) instead of failing with a traceback.

What is checked:

* the topic: it must name a module of the ledger (`ledger.…`, old names included through
  `ledger.store.topics`), which is imported only then, and resolve to an event class;
* the state: it must decode, and for the recorded contract (the classes of `ledger.events`)
  hold exactly the class's fields, each of its declared type (payload models are validated by
  their transcodings as they decode).

The check is built once per class, and costs a dictionary lookup and a type test per field.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable, Hashable, Mapping, Sequence
from datetime import date, datetime
from typing import Any, cast
from uuid import UUID

from eventsourcing.domain import DomainEvent, DomainEventProtocol
from eventsourcing.persistence import Mapper, StoredEvent
from eventsourcing.utils import TopicError, resolve_topic
from pydantic import BaseModel

from ledger import events
from ledger.domain.errors import LedgerError

LEDGER_MODULES = "ledger."
"""Topics outside the ledger's own modules are never resolved: resolving one imports it."""
MAX_REASON = 300
"""Reasons are cut to this length: they are shown on one line and kept in a table."""

Check = Callable[[object], bool]


class UnreadableEvent(LedgerError, ValueError):
    """A stored row that is not one of the ledger's events: its topic names no event class,
    its state is not JSON, or its JSON is not the shape of its class.

    `position` is the row's place in the global order when the reader knows it (a reader in
    position order always does; a reader of one stream fills it in with
    `LedgerApplication.position_of`)."""

    def __init__(self, topic: str, originator_id: UUID | str, originator_version: int,
                 reason: str, position: int | None = None) -> None:
        self.topic = topic
        self.originator_id = originator_id
        self.originator_version = originator_version
        # One line, and storable as text anywhere (PostgreSQL's text holds no NUL).
        self.reason = " ".join(reason.replace("\x00", "\\x00").split())[:MAX_REASON]
        self.position = position
        super().__init__(self.describe())

    def describe(self) -> str:
        """One line: where the row is and why it cannot be read."""
        where = f"position {self.position}" if self.position is not None else "a row"
        return (f"the event at {where} (stream {self.originator_id} version "
                f"{self.originator_version}, topic {self.topic!r}) cannot be read: "
                f"{self.reason}")

    def __str__(self) -> str:
        # Described afresh: the position may have been filled in since it was raised.
        return self.describe()


class LedgerMapper(Mapper[UUID]):
    """The library's mapper, refusing rows that are not the ledger's events
    (`UnreadableEvent`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._resolved: dict[str, tuple[type[Any], Callable[[Mapping[str, object]], str | None]]]
        self._resolved = {}

    def to_domain_event(self, stored_event: StoredEvent) -> DomainEventProtocol[UUID]:
        resolved = self._resolved.get(stored_event.topic)
        if resolved is None:
            resolved = self._resolve(stored_event)
        try:
            event = super().to_domain_event(stored_event)
        except Exception as error:  # whatever the row made the library raise
            raise self._unreadable(stored_event, _cause(error)) from error
        problem = resolved[1](vars(event))
        if problem is not None:
            raise self._unreadable(stored_event, problem)
        return event

    def _resolve(self, stored_event: StoredEvent) -> tuple[
            type[Any], Callable[[Mapping[str, object]], str | None]]:
        """The class a topic names and the check of its state, or `UnreadableEvent`."""
        topic = stored_event.topic
        if not topic.startswith(LEDGER_MODULES):
            raise self._unreadable(stored_event, "unknown topic: not a module of the ledger")
        try:
            cls = resolve_topic(topic)
        except (TopicError, ImportError, AttributeError, ValueError) as error:
            raise self._unreadable(stored_event, f"unknown topic: {error}") from error
        if not (isinstance(cls, type) and issubclass(cls, DomainEvent)):
            raise self._unreadable(stored_event, "unknown topic: it names no event class")
        resolved = (cls, state_check(cls))
        self._resolved[topic] = resolved
        return resolved

    @staticmethod
    def _unreadable(stored_event: StoredEvent, reason: str) -> UnreadableEvent:
        return UnreadableEvent(stored_event.topic, stored_event.originator_id,
                               stored_event.originator_version, reason,
                               getattr(stored_event, "id", None))


def _cause(error: BaseException) -> str:
    """The innermost reason the library gives (its message repeats the row's identity)."""
    while error.__cause__ is not None:
        error = error.__cause__
    text = str(error).splitlines()[0] if str(error) else type(error).__name__
    return f"state does not decode as the class: {type(error).__name__}: {text}"


def state_check(cls: type[Any]) -> Callable[[Mapping[str, object]], str | None]:
    """The check of a decoded event's attributes for class `cls`: what is wrong, or None.

    Only the recorded contract, the event classes of `ledger.events`, is checked field by
    field; another class a ledger topic names (a snapshot's) is read as the library reads it.
    """
    if cls.__module__ != events.__name__ or not dataclasses.is_dataclass(cls):
        return _anything
    hints = typing.get_type_hints(cls)
    fields = [(field.name, type_check(hints[field.name])) for field in dataclasses.fields(cls)]
    names = frozenset(name for name, _ in fields)

    def check(state: Mapping[str, object]) -> str | None:
        if state.keys() != names:
            missing = sorted(names - state.keys())
            extra = sorted(state.keys() - names)
            return ("state is not the shape of " + cls.__name__ + ":"
                    + (f" missing {', '.join(missing)}" if missing else "")
                    + (f" unexpected {', '.join(extra)}" if extra else ""))
        for name, is_valid in fields:
            if not is_valid(state[name]):
                return (f"state is not the shape of {cls.__name__}: {name} is "
                        f"{type(state[name]).__name__} {_shown(state[name])}")
        return None

    return check


def _anything(_: Mapping[str, object]) -> None:
    return None


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def type_check(annotation: object) -> Check:
    """A test that a decoded value has the declared type `annotation` (exactly: a bool is
    not an int here, and a sequence is a JSON array of the declared items)."""
    if annotation in (str, int, bool):
        exact = cast(type, annotation)
        return lambda value: type(value) is exact
    if isinstance(annotation, typing.TypeVar):
        # The originator id, which the mapper sets itself from the row's own column.
        return lambda value: isinstance(value, UUID | str)
    if annotation in (datetime, date, UUID) or (
            isinstance(annotation, type) and issubclass(annotation, BaseModel)):
        kind = cast(type, annotation)
        return lambda value: isinstance(value, kind)
    origin = typing.get_origin(annotation)
    arguments = typing.get_args(annotation)
    if origin is typing.Literal:
        allowed = frozenset(cast(tuple[Hashable, ...], arguments))
        return lambda value: isinstance(value, Hashable) and value in allowed
    if origin in (typing.Union, types.UnionType):
        alternatives = [type_check(argument) for argument in arguments]
        return lambda value: any(check(value) for check in alternatives)
    if annotation is type(None):
        return lambda value: value is None
    if annotation is typing.Any:
        return _any_value
    if origin is dict:
        key = type_check(arguments[0]) if arguments else _any_value
        value_type = type_check(arguments[1]) if arguments else _any_value
        return lambda value: isinstance(value, dict) and all(
            key(k) and value_type(v) for k, v in value.items())
    if origin is not None and isinstance(origin, type) and issubclass(origin, Sequence):
        item = type_check(arguments[0]) if arguments else _any_value
        return lambda value: isinstance(value, list | tuple) and all(item(i) for i in value)
    raise TypeError(f"no check for a field of type {annotation!r}: add one here")


def _any_value(_: object) -> bool:
    return True
