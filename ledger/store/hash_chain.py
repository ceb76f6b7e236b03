"""The hash chain over stored events, that shows nobody edited the past.

Every stored event is linked by `chain_hash = sha256(previous chain_hash || position ||
originator id || version || topic || state)`, in position order, from `GENESIS`. Changing,
deleting or reordering any past row breaks the chain from that row on.

Every event is also stamped, by its own append, with `content_digest = sha256(position ||
originator id || version || topic || state)`: the chain's formula without the predecessor,
which an append on PostgreSQL cannot know yet (its predecessor may still be in flight). The
digest makes a row tamper-evident from the moment its append commits, before any seal; the
sealer refuses to chain a row whose digest does not match (`docs/audit.md`). Rows written
before digests existed have none: below the first digested position a missing digest is
"legacy, covered by the chain only"; above it, a missing digest is itself a finding.
"""

from __future__ import annotations

import hashlib
from typing import Any, Protocol, runtime_checkable
from uuid import UUID

GENESIS = bytes(32)
"""The predecessor of the first event's chain hash."""


def _header(position: int, originator_id: UUID | str, version: int, topic: str) -> bytes:
    return f"{position}:{originator_id}:{version}:{topic}".encode()


def chain_hash(previous: bytes, position: int, originator_id: UUID | str, version: int,
               topic: str, state: bytes) -> bytes:
    """The chain hash of one stored event: the formula `CHAIN_LINK_SQL` runs on PostgreSQL."""
    return hashlib.sha256(previous + _header(position, originator_id, version, topic)
                          + state).digest()


def content_digest(position: int, originator_id: UUID | str, version: int, topic: str,
                   state: bytes) -> bytes:
    """The digest an append stamps on one stored event: the chain's formula without the
    predecessor (`CONTENT_DIGEST_SQL` on PostgreSQL)."""
    return hashlib.sha256(_header(position, originator_id, version, topic) + state).digest()


_HEADER_SQL = (
    "convert_to({position}::text || ':' || {originator_id}::text || ':' "
    "|| {version}::text || ':' || coalesce({topic}, ''), 'UTF8') "
    "|| coalesce({state}, ''::bytea)"
)

CHAIN_LINK_SQL = ("sha256(coalesce(previous, decode(repeat('00', 32), 'hex')) || "
                  + _HEADER_SQL + ")")
"""`chain_hash` in SQL, over PL/pgSQL variables named by the placeholders."""

CONTENT_DIGEST_SQL = "sha256(" + _HEADER_SQL + ")"
"""`content_digest` in SQL, over the columns or variables named by the placeholders."""

VERSION_BREAKS_SQL = (
    "SELECT position, originator_id, version, previous_version FROM ("
    "SELECT {position} AS position, originator_id, originator_version AS version, "
    "lag(originator_version) OVER w AS previous_version, "
    "lag({position}) OVER w AS previous_position "
    "FROM {table} WHERE {position} <= {param} "
    "WINDOW w AS (PARTITION BY originator_id ORDER BY originator_version)) AS s "
    "WHERE version <> coalesce(previous_version, 0) + 1 OR position < previous_position "
    "ORDER BY position LIMIT {param}"
)
"""Rows up to a position whose stream does not run 1, 2, 3... in position order: the first
version is not 1, a version was skipped (an event deleted), or a later version sits at an
earlier position (rows moved). The window follows the primary key's order (stream, version),
so the server streams it from the index instead of sorting the table."""


@runtime_checkable
class ChainedRecorder(Protocol):
    """A recorder that keeps the chain: both of the ledger's do."""

    def select_chained(self, start: int, limit: int,
                       stop: int | None = None) -> list[dict[str, Any]]:
        """Stored rows from position `start` on (to `stop`), with their chain hashes and
        content digests."""
        ...

    def select_version_breaks(self, stop: int, limit: int) -> list[dict[str, Any]]:
        """Rows up to `stop` that break their stream's run of versions
        (`VERSION_BREAKS_SQL`): position, originator_id, version, previous_version."""
        ...


def select_chained(recorder: object, start: int, limit: int,
                   stop: int | None = None) -> list[dict[str, Any]]:
    """Stored rows from position `start` on (to `stop`), with their chain hashes, for
    verification: position, originator_id, originator_version, topic, state, chain_hash,
    content_digest."""
    return _chained(recorder).select_chained(start, limit, stop)


def select_version_breaks(recorder: object, stop: int, limit: int) -> list[dict[str, Any]]:
    """Rows up to `stop` that break their stream's run of versions, in position order."""
    return _chained(recorder).select_version_breaks(stop, limit)


def _chained(recorder: object) -> ChainedRecorder:
    if not isinstance(recorder, ChainedRecorder):
        raise TypeError(f"{type(recorder).__name__} keeps no hash chain")
    return recorder
