"""What the PostgreSQL recorder sends and receives, as plain values: the append's arguments as
binary arrays (or, for a statement's text, array literals), stored events from rows,
psycopg's errors as the library's."""

from __future__ import annotations

import struct
from collections.abc import Sequence
from uuid import UUID

import psycopg
from eventsourcing.persistence import (
    DatabaseError,
    DataError,
    IntegrityError,
    InterfaceError,
    InternalError,
    NotSupportedError,
    OperationalError,
    PersistenceError,
    ProgrammingError,
    StoredEvent,
)
from psycopg import pq

_LIBRARY_ERRORS: tuple[tuple[type[psycopg.Error], type[PersistenceError]], ...] = (
    (psycopg.InterfaceError, InterfaceError),
    (psycopg.OperationalError, OperationalError),
    (psycopg.DataError, DataError),
    (psycopg.IntegrityError, IntegrityError),
    (psycopg.InternalError, InternalError),
    (psycopg.ProgrammingError, ProgrammingError),
    (psycopg.NotSupportedError, NotSupportedError),
    (psycopg.DatabaseError, DatabaseError),
)


def persistence_error(error: psycopg.Error) -> PersistenceError:
    """The library's error for a psycopg error, as its datastore raises them (a conflict is an
    `IntegrityError`; a dropped connection an `OperationalError`, which its recorders retry)."""
    for psycopg_class, library_class in _LIBRARY_ERRORS:
        if isinstance(error, psycopg_class):
            return library_class(str(error))
    return PersistenceError(str(error))


def stored_events_from_binary(result: pq.abc.PGresult) -> list[StoredEvent]:
    """The stored events of a result in binary format, of the columns `originator_id`,
    `originator_version`, `topic` and `state` in that order."""
    value = result.get_value
    events = []
    for row in range(result.ntuples):
        originator_id, version, topic = value(row, 0), value(row, 1), value(row, 2)
        assert originator_id is not None and version is not None and topic is not None
        events.append(StoredEvent(originator_id=UUID(bytes=bytes(originator_id)),
                                  originator_version=int.from_bytes(version, "big", signed=True),
                                  topic=bytes(topic).decode(), state=bytes(value(row, 3) or b"")))
    return events


DOLLAR_QUOTE = "$stockledger$"
"""Quotes the append's array literals where they go in a statement's text."""


def array_literal(elements: list[str]) -> str:
    """A PostgreSQL array literal of elements already written as its elements."""
    return "{" + ",".join(elements) + "}"


def array_element(text: str) -> str:
    """`text` as a quoted element of an array literal."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def as_uuid(value: UUID | str) -> UUID:
    """`value` as a UUID (stream ids reach the recorder as either)."""
    return value if isinstance(value, UUID) else UUID(value)


def stream_key(stream_id: UUID | str) -> int:
    """The queue's key of a stream: its id's first 64 bits, signed. (The lock taken is this
    key XORed with the events table's oid, as every lock key of a store is.)"""
    return int.from_bytes(as_uuid(stream_id).bytes[:8], "big", signed=True)


APPEND_ARGUMENT_TYPES = ("uuid", "bigint", "text", "bytea", "uuid", "bigint", "bigint")


def append_arrays(stored_events: Sequence[StoredEvent], expected: Sequence[tuple[UUID, int]],
                  gated: Sequence[int] = ()) -> list[str]:
    """The append function's seven arguments as array literals: the events' stream ids,
    versions, topics and states, the read checks' stream ids and versions, the gate keys.
    (A uuid's 32 hex digits without hyphens are a valid uuid literal, and cheaper to write.)"""
    return [
        array_literal([as_uuid(e.originator_id).hex for e in stored_events]),
        array_literal([str(int(e.originator_version)) for e in stored_events]),
        array_literal([array_element(e.topic) for e in stored_events]),
        array_literal(['"\\\\x' + e.state.hex() + '"' for e in stored_events]),
        array_literal([as_uuid(i).hex for i, _ in expected]),
        array_literal([str(int(v)) for _, v in expected]),
        array_literal([str(int(k)) for k in gated]),
    ]


UUID_OID, BIGINT_OID, TEXT_OID, BYTEA_OID = 2950, 20, 25, 17
"""The element types of the append's arrays (`APPEND_ARGUMENT_TYPES`), by oid."""

_ARRAY_HEADER = struct.Struct("!iiiii")
_EMPTY_ARRAY = struct.Struct("!iii")
_LENGTH = struct.Struct("!i")
_BIGINT = struct.Struct("!iq")
_UUID_LENGTH = _LENGTH.pack(16)


def binary_array(oid: int, elements: Sequence[bytes]) -> bytes:
    """A one-dimensional array of `elements`, each already in its type's binary form, in
    PostgreSQL's binary array format (`array_recv`), without nulls."""
    if not elements:
        return _EMPTY_ARRAY.pack(0, 0, oid)
    pack = _LENGTH.pack
    parts = [_ARRAY_HEADER.pack(1, 0, oid, len(elements), 1)]
    for element in elements:
        parts.append(pack(len(element)))
        parts.append(element)
    return b"".join(parts)


def _uuid_array(ids: Sequence[UUID | str]) -> bytes:
    if not ids:
        return _EMPTY_ARRAY.pack(0, 0, UUID_OID)
    return b"".join([_ARRAY_HEADER.pack(1, 0, UUID_OID, len(ids), 1), *(
        _UUID_LENGTH + as_uuid(i).bytes for i in ids)])


def _bigint_array(values: Sequence[int]) -> bytes:
    if not values:
        return _EMPTY_ARRAY.pack(0, 0, BIGINT_OID)
    pack = _BIGINT.pack
    return b"".join([_ARRAY_HEADER.pack(1, 0, BIGINT_OID, len(values), 1), *(
        pack(8, int(v)) for v in values)])


def text_element(text: str) -> bytes:
    """`text` as a text element in binary form: its UTF-8, refused with ValueError if it
    holds a NUL, which PostgreSQL's text cannot (as psycopg refuses it in a text parameter,
    before anything is sent)."""
    if "\x00" in text:
        raise ValueError("PostgreSQL text fields cannot contain NUL (0x00) bytes")
    return text.encode()


def append_parameters(stored_events: Sequence[StoredEvent],
                      expected: Sequence[tuple[UUID, int]],
                      gated: Sequence[int] = ()) -> list[bytes]:
    """The append function's seven arguments (`append_arrays`) in the binary array format,
    for the prepared append. A bulk append's states are most of what it sends: as text each
    state went as hex, twice its size, which this process wrote and the server parsed back
    character by character; in binary the state's bytes go as they are and the server copies
    them. (A bigint is its 8 bytes in network order, a uuid its 16, a text its UTF-8.)"""
    return [
        _uuid_array([e.originator_id for e in stored_events]),
        _bigint_array([e.originator_version for e in stored_events]),
        binary_array(TEXT_OID, [text_element(e.topic) for e in stored_events]),
        binary_array(BYTEA_OID, [e.state for e in stored_events]),
        _uuid_array([i for i, _ in expected]),
        _bigint_array([v for _, v in expected]),
        _bigint_array(gated),
    ]
