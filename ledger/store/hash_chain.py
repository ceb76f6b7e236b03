"""The hash chain over stored events, that shows nobody edited the past.

Every stored event is linked by `chain_hash = sha256(previous chain_hash || position ||
originator id || version || topic || state)`, in position order, from `GENESIS`. Changing,
deleting or reordering any past row breaks the chain from that row on.
"""

from __future__ import annotations

import hashlib
from typing import Any, Protocol, runtime_checkable
from uuid import UUID

GENESIS = bytes(32)
"""The predecessor of the first event's chain hash."""


def chain_hash(previous: bytes, position: int, originator_id: UUID | str, version: int,
               topic: str, state: bytes) -> bytes:
    """The chain hash of one stored event: the formula `CHAIN_LINK_SQL` runs on PostgreSQL."""
    header = f"{position}:{originator_id}:{version}:{topic}".encode()
    return hashlib.sha256(previous + header + state).digest()


CHAIN_LINK_SQL = (
    "sha256(coalesce(previous, decode(repeat('00', 32), 'hex')) "
    "|| convert_to({position}::text || ':' || {originator_id}::text || ':' "
    "|| {version}::text || ':' || coalesce({topic}, ''), 'UTF8') "
    "|| coalesce({state}, ''::bytea))"
)
"""`chain_hash` in SQL, over PL/pgSQL variables named by the placeholders."""


@runtime_checkable
class ChainedRecorder(Protocol):
    """A recorder that keeps the chain: both of the ledger's do."""

    def select_chained(self, start: int, limit: int,
                       stop: int | None = None) -> list[dict[str, Any]]:
        """Stored rows from position `start` on (to `stop`), with their chain hashes."""
        ...


def select_chained(recorder: object, start: int, limit: int,
                   stop: int | None = None) -> list[dict[str, Any]]:
    """Stored rows from position `start` on (to `stop`), with their chain hashes, for
    verification: position, originator_id, originator_version, topic, state, chain_hash."""
    if not isinstance(recorder, ChainedRecorder):
        raise TypeError(f"{type(recorder).__name__} keeps no hash chain")
    return recorder.select_chained(start, limit, stop)
