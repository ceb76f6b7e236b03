"""The record of a command accepted under an idempotency key.

Its stream id is derived from the key, so a second command under the same key collides with
the first in the event store's uniqueness constraint, in the same transaction as the movements:
idempotency holds across processes and restarts without a separate table or lock.
"""

from __future__ import annotations

from typing import Any

from eventsourcing.domain import Aggregate

from ledger import events
from ledger.domain.identity import command_record_id


class CommandRecord(Aggregate):
    def __init__(self, key: str, kind: str, fingerprint: str, result: dict[str, Any]) -> None:
        self.key = key
        self.kind = kind
        self.fingerprint = fingerprint
        self.result = result

    @classmethod
    def accept(
        cls, key: str, kind: str, fingerprint: str, result: dict[str, Any]
    ) -> events.CommandAccepted:
        """The event that records a command accepted under `key`: its stream's only one."""
        return events.created_event(
            cls, events.CommandAccepted, command_record_id(key),
            key=key,
            kind=kind,
            fingerprint=fingerprint,
            result=result,
        )
