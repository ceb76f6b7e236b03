"""How writers that lose a race get their turn: the one interface the command loop asks.

The command loop (`ledger.app.loop`) decides optimistically and retries after a conflict. What
a retry does differs by store: SQLite serialises every writer already, so a loser only backs
off; PostgreSQL lets losers queue on the streams they lost on
(`ledger.store.postgres.queued_writers`). Both answer the same four questions.
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Sequence
from typing import Protocol
from uuid import UUID

BACKOFF_CAP_SECONDS = 0.05


class WriterQueue(Protocol):
    """Where a command waits for its turn on contended streams."""

    @property
    def queues(self) -> bool:
        """Whether `serialised` really queues writers (else it is an empty block)."""
        ...

    def recently_contended(self, stream_ids: Sequence[UUID]) -> list[UUID]:
        """Of `stream_ids`, those to decide on in their queue from the first attempt."""
        ...

    def lost_race_on(self, stream_ids: Sequence[UUID]) -> None:
        """Note that an append lost a race on these streams."""
        ...

    def serialised(self, stream_ids: Sequence[UUID]) -> contextlib.AbstractContextManager[None]:
        """Hold the streams' queue while the block decides and appends."""
        ...

    def pause_before_retry(self, attempt: int, contended: Sequence[UUID]) -> None:
        """Wait before attempt number `attempt` (1 is the first retry)."""
        ...


def back_off(attempt: int) -> None:
    """Full jitter: concurrent writers that collided spread out instead of colliding again."""
    time.sleep(random.uniform(0, min(BACKOFF_CAP_SECONDS, 0.0005 * 2**attempt)))


class BackOffWriters:
    """Writers that never queue: a loser backs off and tries again (SQLite, where the
    database lets one writer in at a time anyway)."""

    queues = False

    def recently_contended(self, stream_ids: Sequence[UUID]) -> list[UUID]:
        return []

    def lost_race_on(self, stream_ids: Sequence[UUID]) -> None:
        return None

    def serialised(self, stream_ids: Sequence[UUID]) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()

    def pause_before_retry(self, attempt: int, contended: Sequence[UUID]) -> None:
        back_off(attempt)
