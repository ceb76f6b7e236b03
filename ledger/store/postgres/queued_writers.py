"""Losers write next: the PostgreSQL writer queue as the command loop sees it.

A till that lost a race retries while holding an exclusive advisory lock on the streams it
lost on, and every other append to those streams fails at once as a conflict while the lock is
held, so those tills queue behind it (the gate, in the append function). Without it the last
winner, whose cached state is fresh, kept winning and a slower till could lose forty times in
a row. For `QUEUE_AFTER_CONFLICT_SECONDS` after losing on a stream, a till also decides its
next commands on that stream in its queue instead of first losing again on its cached state.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING
from uuid import UUID

from ledger.store.postgres.values import stream_key
from ledger.store.writer_queue import back_off

if TYPE_CHECKING:
    from ledger.store.application import LedgerApplication
    from ledger.store.postgres.recorder import ChainedPostgresRecorder

QUEUE_AFTER_CONFLICT_SECONDS = 1.0
"""How long a till goes straight to a stream's queue after losing a race on it."""


class QueuedWriters:
    """The writer queue of one till (one `Ledger`): which streams it lost on lately, and the
    block that holds their locks."""

    queues = True

    def __init__(self, app: LedgerApplication, recorder: ChainedPostgresRecorder) -> None:
        self._app = app
        self._recorder = recorder
        self._queue_first_until: dict[UUID, float] = {}

    def recently_contended(self, stream_ids: Sequence[UUID]) -> list[UUID]:
        """Of `stream_ids`, those this till lost a race on in the last
        `QUEUE_AFTER_CONFLICT_SECONDS`.

        Other tills are likely queued on them still, and while one holds a stream's lock an
        optimistic append to it fails anyway: deciding, appending and checking for a replay
        first would only cost three round trips and the CPU the queue's head needs.
        """
        if not self._queue_first_until:
            return []
        now = time.monotonic()
        for stream_id in [i for i, until in self._queue_first_until.items() if until <= now]:
            del self._queue_first_until[stream_id]
        return [i for i in stream_ids if i in self._queue_first_until]

    def lost_race_on(self, stream_ids: Sequence[UUID]) -> None:
        """This till lost a race on `stream_ids`: queue first on them for a while."""
        until = time.monotonic() + QUEUE_AFTER_CONFLICT_SECONDS
        self._queue_first_until.update(dict.fromkeys(stream_ids, until))

    def serialised(self, stream_ids: Sequence[UUID]) -> contextlib.AbstractContextManager[None]:
        """Hold an exclusive advisory lock on each stream while the block runs.

        Appends made inside the block pass `serialised=True`. The cached states of the
        streams are brought up to date as the locks are taken, in the same round trip.
        """
        if not stream_ids:
            return contextlib.nullcontext()  # every uncontended command comes this way
        return self._streams_locked(stream_ids)

    def pause_before_retry(self, attempt: int, contended: Sequence[UUID]) -> None:
        """Back off before retry `attempt`, unless it queues on `contended` streams."""
        # A retry that queues waits on the locks instead (taken after this, never while
        # holding them); one that does not backs off.
        if not contended:
            back_off(attempt)

    @contextlib.contextmanager
    def _streams_locked(self, stream_ids: Sequence[UUID]) -> Iterator[None]:
        cached = self._app.cached(stream_ids)
        with self._recorder.streams_locked(sorted({stream_key(i) for i in stream_ids}),
                                           [(i, a.version) for i, a in cached.items()]) as newer:
            self._app.fast_forward(cached, newer)
            yield
