"""The change feed over HTTP: `GET /v1/feed` (pages, long-polling) and `GET /v1/feed/stream`
(server-sent events), both over `projections.feed` and so never past the horizon.

Waiting holds no thread: the routes are coroutines that run each read in the thread pool and
sleep on one `Watcher` per worker process, which follows the journal's position for every
waiting request (a thousand long-polls cost one poll). A stopping server wakes every waiter:
long-polls answer what they have and streams end, so that a graceful shutdown is not held up
by them (an EventSource reconnects by itself, with `Last-Event-ID`).
"""

# No `from __future__ import annotations`: the routes are defined inside `install`, and
# FastAPI reads their annotations, which must be objects, not names of local variables.

import asyncio
import contextlib
import json
import logging
import signal
import threading
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, StringConstraints
from starlette.concurrency import run_in_threadpool

from cli.bounds import position_text
from cli.http.schemas import Movement, Stuck
from cli.http.tokens import Token
from ledger.app.commands import MAX_POSITION
from ledger.domain.errors import InvalidInput
from projections.feed import MAX_LIMIT, Feed, FeedPage

log = logging.getLogger(__name__)

MAX_FEED_WAIT_SECONDS = 30.0
"""The longest a long-poll waits for a movement (as every wait of the API)."""
DEFAULT_LIMIT = 100
POLL_SECONDS = 0.1
"""How often the watcher looks at the journal while requests wait on it."""
STUCK_POLL_SECONDS = 5.0
"""How often it looks while the read models stand before an event they cannot read: only a
repair moves them, and each look reads up to that event again."""
STREAM_PAGE = 500
"""Movements read per page by a stream."""
HEARTBEAT_SECONDS = 15.0
"""A stream with nothing to send sends a comment this often, so proxies keep it open."""
MAX_STREAM_SECONDS = 300.0
"""A stream ends after this long; the client reconnects with `Last-Event-ID` and misses
nothing. Bounded, so that no request is held forever."""
RETRY_MILLISECONDS = 1000
"""Told to event-stream clients: how long to wait before reconnecting."""
ID_PATTERN = r"^[^\s\x00-\x1f\x7f]+$"

Authorise = Callable[..., None]
OutletId = Annotated[str, StringConstraints(min_length=1, max_length=100, pattern=ID_PATTERN)]


class FeedPageBody(BaseModel):
    """A page of the change feed."""

    after: int
    """The cursor the page was asked after."""
    next: int
    """Pass as `after` for the next page: every movement at or below it has been answered."""
    position: int
    """Where the journal stood: the feed never passes it (nor, so, the horizon)."""
    more: bool
    """True if positions beyond `next` are in the journal already: ask again without waiting."""
    movements: list[Movement]
    stuck: Stuck | None = None
    """Null, or the event the read models stop before because it cannot be read: the feed
    stops there too, until it is repaired (docs/audit.md)."""


class Watcher:
    """Follows the journal's position for every request waiting in this process."""

    def __init__(self, feed: Feed, stopping: threading.Event) -> None:
        self.feed = feed
        self.stopping = stopping
        self.position = -1
        self._changed = asyncio.Event()
        self._waiters = 0
        self._task: asyncio.Task[None] | None = None

    async def wait_beyond(self, position: int, timeout: float) -> bool:
        """Wait until the journal passes `position`, at most `timeout` seconds or until the
        server stops; whether it did."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        self._waiters += 1
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._follow())
        try:
            while self.position <= position and not self.stopping.is_set():
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                changed = self._changed
                # Slices of at most a second, so that a stopping server is noticed.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), min(remaining, 1.0))
        finally:
            self._waiters -= 1
        return self.position > position

    async def _follow(self) -> None:
        while self._waiters > 0 and not self.stopping.is_set():
            stuck = None
            try:
                position, stuck = await run_in_threadpool(self.feed.catch_up)
            except Exception:
                # The store went away: waiters time out and the next read answers the
                # problem (503); keep looking.
                log.exception("the change feed could not read the journal's position")
                position = self.position
            if position != self.position:
                self.position = position
                self._changed.set()
                self._changed = asyncio.Event()
            await asyncio.sleep(POLL_SECONDS if stuck is None else STUCK_POLL_SECONDS)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


def stop_on_signals(stopping: threading.Event) -> None:
    """Set `stopping` on SIGTERM and SIGINT, then let the server's own handler run.

    uvicorn handles the signals by stopping to accept and waiting for requests in flight;
    long-polls and streams would hold that up to its timeout, so they are told here. Only
    the main thread may set handlers (a test client runs the app elsewhere): there the
    server stops them by other means."""
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(sig)

        def handler(signum: int, frame: Any, previous: Any = previous) -> None:
            stopping.set()
            if callable(previous):
                previous(signum, frame)

        signal.signal(sig, handler)


def sse_message(page_position: int, rows: list[dict[str, Any]]) -> str:
    """One event's movements as a server-sent event whose id is its position."""
    data = json.dumps({"position": page_position, "movements": rows}, separators=(",", ":"))
    return f"id: {page_position}\nevent: movements\ndata: {data}\n\n"


def install(app: FastAPI, caller: Callable[..., Token], authorise: Authorise) -> None:
    """Add the feed's routes to `app`; `caller` is the dependency that verifies the token,
    `authorise` the role check (raising the service's 403)."""
    tags: list[Any] = ["feed"]

    def scope(token: Token, outlet: list[str] | None) -> frozenset[str] | None:
        """The outlets whose movements the caller gets (None: every outlet): a till's or a
        store's own outlets, or those it asked for if it may read them all (else 403)."""
        asked = outlet or (sorted(token.outlets) if token.scoped else [])
        authorise(token, "read-feed", *asked)
        return frozenset(asked) if asked else None

    def feed_of(request: Request) -> Feed:
        feed: Feed = request.app.state.feed
        return feed

    def check_after(feed: Feed, after: int) -> None:
        head = feed.models.head()
        if after > head:
            # No page ever answered with it: a cursor from another store, or a typo.
            raise InvalidInput("after", f"lies beyond the newest position {head}")

    Outlets = Annotated[list[OutletId] | None, Query(
        alias="outlet", max_length=100,
        description="Only these outlets' movements (repeat). Tills and stores get only "
                    "their own outlets in any case.")]
    After = Annotated[int, Query(ge=0, le=MAX_POSITION,
                                 description="The cursor: a `next` from an earlier page, "
                                             "or 0 for the first movement ever.")]

    @app.get("/v1/feed", response_model=FeedPageBody, tags=tags)
    async def feed(request: Request, token: Annotated[Token, Depends(caller)],
                   after: After = 0,
                   limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
                   wait: Annotated[float, Query(
                       ge=0, le=MAX_FEED_WAIT_SECONDS,
                       description="If there is nothing after the cursor, wait this long "
                                   "for a movement (long-polling), seconds.")] = 0.0,
                   outlet: Outlets = None) -> dict[str, Any]:
        """Movements in position order after the cursor `after`, and the cursor to resume
        from. Never past the horizon: resuming from each page's `next` gives every
        movement exactly once, in order."""
        outlets = scope(token, outlet)
        the_feed, watcher = feed_of(request), request.app.state.watcher
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait

        def first_page() -> FeedPage:
            check_after(the_feed, after)
            return the_feed.fresh_page(after, limit, outlets)

        page = await run_in_threadpool(first_page)
        while not page.movements and not page.more and not watcher.stopping.is_set():
            remaining = deadline - loop.time()
            if remaining <= 0 or not await watcher.wait_beyond(page.position, remaining):
                break
            page = await run_in_threadpool(the_feed.fresh_page, page.next, limit, outlets)
        return {"after": after, "next": page.next, "position": page.position,
                "more": page.more, "movements": page.movements,
                "stuck": None if page.stuck is None else page.stuck.as_dict()}

    @app.get("/v1/feed/stream", tags=tags, response_class=StreamingResponse,
             responses={200: {"content": {"text/event-stream": {}},
                              "description": "Server-sent events: `movements` events, each "
                                             "one position's movements, `id` the position"}})
    async def stream(request: Request, token: Annotated[Token, Depends(caller)],
                     after: After = 0, outlet: Outlets = None,
                     last_event_id: Annotated[str | None, Header(
                         alias="Last-Event-ID", max_length=19,
                         description="Sent by a reconnecting EventSource: resume after "
                                     "it (it wins over `after`).")] = None,
                     ) -> StreamingResponse:
        """The feed as server-sent events, for dashboards: each event is one position's
        movements with `id:` its position, so a reconnecting client resumes with
        `Last-Event-ID` and misses nothing. Ends after a few minutes or when the server
        stops; clients reconnect."""
        outlets = scope(token, outlet)
        start = after
        if last_event_id is not None:
            resumed = position_text(last_event_id.strip())
            if resumed is None:
                raise InvalidInput("Last-Event-ID", "must be a position (a whole number)")
            start = resumed
        the_feed, watcher = feed_of(request), request.app.state.watcher
        await run_in_threadpool(check_after, the_feed, start)
        return StreamingResponse(
            _events(the_feed, watcher, start, outlets), media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


async def _events(feed: Feed, watcher: Watcher, after: int,
                  outlets: frozenset[str] | None) -> AsyncIterator[str]:
    loop = asyncio.get_running_loop()
    ends = loop.time() + MAX_STREAM_SECONDS
    cursor = announced = after
    last_sent = loop.time()
    yield f"retry: {RETRY_MILLISECONDS}\n\n"
    read = feed.fresh_page  # the first page brings the read models up to the head
    while not watcher.stopping.is_set() and loop.time() < ends:
        try:
            page = await run_in_threadpool(read, cursor, STREAM_PAGE, outlets)
        except Exception:
            # The headers are sent: no problem document can be answered now. End the
            # stream; the client reconnects from its Last-Event-ID and gets the problem.
            log.exception("the change feed stream could not read the journal")
            return
        read = feed.page  # then the watcher does, while the stream waits
        for position, rows in page.events():
            yield sse_message(position, rows)
            announced, last_sent = position, loop.time()
        cursor = page.next
        if page.more:
            continue
        if cursor > announced:
            # Positions looked through with nothing for this client: an id-only message
            # moves the client's Last-Event-ID on (no event is dispatched), so that a
            # reconnect does not look through them again.
            yield f"id: {cursor}\n\n"
            announced, last_sent = cursor, loop.time()
        until_heartbeat = HEARTBEAT_SECONDS - (loop.time() - last_sent)
        if until_heartbeat <= 0:
            yield ": keep-alive\n\n"
            last_sent = loop.time()
            continue
        await watcher.wait_beyond(page.position, min(until_heartbeat, ends - loop.time()))
