"""Webhooks: subscriptions to the change feed, kept in the store, and the worker that delivers
them.

A subscription is a URL, a secret and optionally some outlets. The worker posts it the feed's
pages (`projections.feed`) in position order, each signed (`cli.http.signing`), and moves the
subscription's position on only once the receiver has answered 2xx: the position is a row of
the store, moved by a compare-and-set from the position the delivery started at, as a
projection's tracking record moves only forward from the position its batch started at. A
crash between the receiver's answer and that write delivers the page again; nothing is ever
skipped. So delivery is at least once, in order; a receiver drops what it has seen by
position (docs/http.md).

A failed attempt (no 2xx, a timeout, no connection) is retried after a doubling, bounded,
jittered delay, for as long as it takes: a subscription is never moved past a page its
receiver did not take. Its failures, last error and lag are in `ledger webhooks status`.

Every worker process (each `ledger serve` worker, each `ledger webhooks run`) may run a
worker; one subscription is delivered by one of them at a time, the holder of its lease (a
time-limited claim in its row, renewed while it delivers), so pages reach a receiver one at a
time and in order. A worker that dies loses its leases when they run out, and another takes
the subscription over from its recorded position.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import httpx

from cli.http import signing
from ledger.app.commands import check_position
from ledger.domain.errors import InvalidInput, LedgerError
from ledger.store.application import LedgerApplication
from ledger.store.privileges import permission_denied
from projections.feed import Feed, FeedPage
from projections.store import ReadStore

log = logging.getLogger(__name__)

MAX_SUBSCRIPTIONS = 100
"""Each subscription has a delivery thread in every worker that holds it: bounded."""
MAX_URL_LENGTH = 2000
MIN_SECRET_LENGTH = 16
MAX_SECRET_LENGTH = 500
USER_AGENT = "stockledger-webhooks/1"
STUCK_SECONDS = 5.0
"""How often a worker tries the read models again while they stand before an unreadable
event."""

CREATE = """
    CREATE TABLE IF NOT EXISTS {table} (
        id TEXT PRIMARY KEY,
        url TEXT NOT NULL,
        secret TEXT NOT NULL,
        outlets TEXT,
        created_at TEXT NOT NULL,
        position BIGINT NOT NULL,
        delivered BIGINT NOT NULL DEFAULT 0,
        failures BIGINT NOT NULL DEFAULT 0,
        next_attempt_at DOUBLE PRECISION,
        last_error TEXT,
        last_error_at TEXT,
        last_delivered_at TEXT,
        lease_owner TEXT,
        lease_until DOUBLE PRECISION
    )"""
COLUMNS = ("id, url, secret, outlets, created_at, position, delivered, failures, "
           "next_attempt_at, last_error, last_error_at, last_delivered_at, lease_owner, "
           "lease_until")
CLAIM = ("UPDATE {table} SET lease_owner = %s, lease_until = %s WHERE id = %s AND "
         "(lease_owner IS NULL OR lease_owner = %s OR lease_until < %s) RETURNING " + COLUMNS)
ADVANCE = ("UPDATE {table} SET position = %s, failures = 0, next_attempt_at = NULL "
           "WHERE id = %s AND position = %s AND lease_owner = %s RETURNING position")
DELIVERED = ("UPDATE {table} SET position = %s, failures = 0, next_attempt_at = NULL, "
             "delivered = delivered + 1, last_delivered_at = %s "
             "WHERE id = %s AND position = %s AND lease_owner = %s RETURNING position")
FAILED = ("UPDATE {table} SET failures = failures + 1, next_attempt_at = %s, "
          "last_error = %s, last_error_at = %s "
          "WHERE id = %s AND position = %s AND lease_owner = %s RETURNING failures")
RELEASE = ("UPDATE {table} SET lease_owner = NULL, lease_until = NULL "
           "WHERE id = %s AND lease_owner = %s")


class WebhookError(LedgerError):
    """A subscription could not be added or removed (unknown id, too many)."""


@dataclass(frozen=True)
class Subscription:
    """One subscription as stored (the secret is never printed: it is left out of repr)."""

    id: str
    url: str
    secret: str = field(repr=False)
    outlets: frozenset[str] | None
    position: int
    failures: int
    next_attempt_at: float | None
    lease_owner: str | None
    lease_until: float | None


def check_url(url: str) -> str:
    """`url` if it is an absolute http(s) URL a worker can post to, else `InvalidInput`."""
    if len(url) > MAX_URL_LENGTH or any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127
                                        for ch in url):
        raise InvalidInput("url", f"must be at most {MAX_URL_LENGTH} characters, no spaces")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInput("url", "must be an absolute http:// or https:// URL")
    return url


def check_secret(secret: str) -> str:
    if not MIN_SECRET_LENGTH <= len(secret) <= MAX_SECRET_LENGTH or not secret.isprintable():
        raise InvalidInput("secret", f"must be {MIN_SECRET_LENGTH} to {MAX_SECRET_LENGTH} "
                                     "printable characters")
    return secret


def now_text() -> str:
    return datetime.now(UTC).isoformat()


def moment(seconds: float | None) -> str | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC).isoformat()


class WebhookStore:
    """The subscriptions table of one store (`ledger_webhooks`, both backends)."""

    def __init__(self, app: LedgerApplication) -> None:
        self._store = ReadStore(app)
        self.table = f"{self._store.prefix}ledger_webhooks"

    def create_table(self) -> None:
        with self._store.transaction() as cursor:
            cursor.execute(self._sql(CREATE))

    def ensure_table(self) -> None:
        """Create the table unless it exists, asking the catalog first: the service and the
        worker may run as a role without DDL rights (`docs/append_only_role.sql`), for which
        even `CREATE TABLE IF NOT EXISTS` of a table that exists is refused."""
        if not self._store.tables_exist(["ledger_webhooks"]):
            self.create_table()

    def add(self, url: str, secret: str, outlets: list[str], after: int | None) -> str:
        """Store a subscription and return its id. It gets the movements after position
        `after` (default: the newest position now, so only what happens from here on)."""
        check_url(url)
        check_secret(secret)
        if after is not None:
            check_position("after", after)
        self.ensure_table()
        if len(self._rows("", [])) >= MAX_SUBSCRIPTIONS:
            raise WebhookError(f"at most {MAX_SUBSCRIPTIONS} subscriptions")
        head = self._store.head()
        if after is not None and after > head:
            raise InvalidInput("after", f"lies beyond the newest position {head}")
        identifier = "wh-" + secrets.token_hex(6)
        with self._store.transaction() as cursor:
            cursor.execute(self._sql(
                f"INSERT INTO {self.table} (id, url, secret, outlets, created_at, position) "
                "VALUES (%s, %s, %s, %s, %s, %s)"),
                [identifier, url, secret, json.dumps(sorted(set(outlets))) if outlets else None,
                 now_text(), head if after is None else after])
        return identifier

    def remove(self, identifier: str) -> None:
        self.ensure_table()
        if not self._rows("WHERE id = %s", [identifier]):
            raise WebhookError(f"no subscription {identifier}")
        with self._store.transaction() as cursor:
            cursor.execute(self._sql(f"DELETE FROM {self.table} WHERE id = %s"), [identifier])

    def listing(self) -> list[dict[str, Any]]:
        """Every subscription as shown to operators: never its secret."""
        self.ensure_table()
        return [{"id": row["id"], "url": row["url"], "outlets": _outlets(row["outlets"]),
                 "created_at": row["created_at"], "position": int(row["position"])}
                for row in self._rows("ORDER BY id", [])]

    def status(self) -> list[dict[str, Any]]:
        """Each subscription's position, lag, deliveries and last error."""
        self.ensure_table()
        head = self._store.head()
        report = []
        for row in self._rows("ORDER BY id", []):
            position = int(row["position"])
            lag_events = max(0, head - position)
            report.append({
                "id": row["id"], "url": row["url"], "outlets": _outlets(row["outlets"]),
                "position": position, "head": head, "lag_events": lag_events,
                "lag_seconds": round(self._lag_seconds(position), 3) if lag_events else 0.0,
                "delivered": int(row["delivered"]), "failures": int(row["failures"]),
                "next_attempt_at": moment(row["next_attempt_at"]),
                "last_error": row["last_error"], "last_error_at": row["last_error_at"],
                "last_delivered_at": row["last_delivered_at"],
                "delivering": row["lease_owner"] if (row["lease_until"] or 0) > time.time()
                else None,
            })
        return report

    def get(self, identifier: str) -> Subscription | None:
        rows = self._rows("WHERE id = %s", [identifier])
        return _subscription(rows[0]) if rows else None

    def claimable(self, owner: str, now: float) -> list[str]:
        """The subscriptions `owner` holds or may claim (no live lease of another)."""
        return [row["id"] for row in self._rows(
            "WHERE lease_owner IS NULL OR lease_owner = %s OR lease_until < %s ORDER BY id",
            [owner, now])]

    def claim(self, identifier: str, owner: str, until: float, now: float
              ) -> Subscription | None:
        """Take or renew the lease on a subscription until `until`; the subscription, or None
        if another worker holds it or it was removed."""
        row = self._returning(CLAIM, [owner, until, identifier, owner, now])
        return None if row is None else _subscription(row)

    def advance(self, subscription: Subscription, owner: str, position: int, *,
                delivered: bool) -> bool:
        """Move the subscription from the position its delivery started at to `position`
        (after a 2xx if `delivered`, else past positions with nothing for it); False if it
        had moved, was removed, or its lease was lost meanwhile."""
        if delivered:
            return self._returning(DELIVERED, [position, now_text(), subscription.id,
                                               subscription.position, owner]) is not None
        return self._returning(ADVANCE, [position, subscription.id, subscription.position,
                                         owner]) is not None

    def failed(self, subscription: Subscription, owner: str, error: str,
               next_attempt_at: float) -> bool:
        """Record a failed attempt and when to try again; False if the lease was lost."""
        return self._returning(FAILED, [next_attempt_at, error[:500], now_text(),
                                        subscription.id, subscription.position,
                                        owner]) is not None

    def release(self, identifier: str, owner: str) -> None:
        with self._store.transaction() as cursor:
            cursor.execute(self._sql(RELEASE), [identifier, owner])

    def _returning(self, statement: str, params: list[Any]) -> dict[str, Any] | None:
        with self._store.transaction() as cursor:
            cursor.execute(self._sql(statement), params)
            row = cursor.fetchone()
            return None if row is None else dict(row)

    def _rows(self, where: str, params: list[Any]) -> list[dict[str, Any]]:
        return self._store.query(self._sql(f"SELECT {COLUMNS} FROM {self.table} {where}"),
                                 params)

    def _sql(self, statement: str) -> str:
        return self._store.sql(statement, table=self.table)

    def _lag_seconds(self, position: int) -> float:
        """How long the first event after `position` has been waiting."""
        waiting = self._store.app.recorder.select_notifications(position + 1, 1)
        if not waiting:
            return 0.0
        event: Any = self._store.app.mapper.to_domain_event(waiting[0])
        recorded: datetime = event.timestamp
        return max(0.0, (datetime.now(UTC) - recorded).total_seconds())


def _outlets(text: str | None) -> list[str] | None:
    return None if text is None else list(json.loads(text))


def _subscription(row: dict[str, Any]) -> Subscription:
    outlets = _outlets(row["outlets"])
    return Subscription(
        id=row["id"], url=row["url"], secret=row["secret"],
        outlets=None if outlets is None else frozenset(outlets),
        position=int(row["position"]), failures=int(row["failures"]),
        next_attempt_at=row["next_attempt_at"], lease_owner=row["lease_owner"],
        lease_until=row["lease_until"])


# --------------------------------------------------------------------------- delivery


@dataclass(frozen=True)
class DeliverySettings:
    """How a worker delivers. The lease outlasts several attempts, so that a worker that is
    merely slow keeps its subscriptions, and is renewed when half of it has run."""

    timeout_seconds: float = 10.0
    """How long one attempt may take, connecting and answering included."""
    backoff_seconds: float = 1.0
    """The delay after the first failure; it doubles after each one..."""
    max_backoff_seconds: float = 300.0
    """... up to this."""
    poll_seconds: float = 0.5
    """How often an idle worker looks for new movements and new subscriptions."""
    page_movements: int = 100
    """At most how many movements one delivery carries (an event is never split)."""

    @property
    def lease_seconds(self) -> float:
        """Renewed at half time, so it outlasts the longest attempt twice over."""
        return 4 * (self.timeout_seconds + self.poll_seconds)


def delivery_body(subscription: Subscription, page: FeedPage) -> bytes:
    """What a delivery posts: the page, as the feed answers it, and whose it is."""
    return json.dumps({"subscription": subscription.id, "after": page.after,
                       "next": page.next, "movements": page.movements},
                      separators=(",", ":")).encode()


def post(client: httpx.Client, subscription: Subscription, body: bytes,
         clock: Callable[[], float] = time.time) -> str | None:
    """One signed attempt; None if the receiver took it (2xx), else what went wrong."""
    timestamp = int(clock())
    headers = {"Content-Type": "application/json",
               signing.HEADER: signing.signature_header(subscription.secret, timestamp, body),
               "Ledger-Webhook": subscription.id}
    try:
        response = client.post(subscription.url, content=body, headers=headers)
    except httpx.TimeoutException:
        return "timed out"
    except httpx.HTTPError as error:
        return f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
    if 200 <= response.status_code < 300:
        return None
    return f"HTTP {response.status_code}"


class DeliveryWorker:
    """Delivers every subscription it can claim, one thread each, until stopped."""

    def __init__(self, app: LedgerApplication, settings: DeliverySettings | None = None,
                 owner: str | None = None) -> None:
        self.settings = settings or DeliverySettings()
        self.store = WebhookStore(app)
        self.feed = Feed(app)
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self.refused: str | None = None
        """Why this database role may not deliver (it may not write the subscriptions), once
        a delivery found out: the worker then stops."""

    def run(self, stop: threading.Event) -> None:
        """Claim and deliver subscriptions until `stop` is set; then wait for the deliveries
        in flight (at most one attempt's timeout) and give up the leases."""
        threads: dict[str, threading.Thread] = {}
        poll = self.settings.poll_seconds
        created = False
        catch_up_at = 0.0
        while not stop.is_set() and self.refused is None:
            try:
                if not created:
                    self.store.ensure_table()
                    created = True
                claimable = self.store.claimable(self.owner, time.time())
                if (claimable or threads) and time.monotonic() >= catch_up_at:
                    _, stuck = self.feed.catch_up()
                    # Stuck before an event it cannot read, the journal moves only once the
                    # row is repaired (`projections status` says so); deliveries stop there.
                    catch_up_at = time.monotonic() + (0 if stuck is None else STUCK_SECONDS)
            except Exception as error:
                if permission_denied(error):
                    self.refused = str(error).splitlines()[0]
                    break
                log.exception("webhooks: the store could not be read; trying again")
                stop.wait(min(10.0, 4 * poll))
                continue
            for identifier in claimable:
                thread = threads.get(identifier)
                if thread is None or not thread.is_alive():
                    threads[identifier] = thread = threading.Thread(
                        target=self._deliver, args=(identifier, stop), daemon=True,
                        name=f"webhook {identifier}")
                    thread.start()
            stop.wait(poll)
        if self.refused is not None:
            # No retry helps: an operator runs the worker as a role that may.
            log.error("webhooks: this database role may not deliver webhooks (%s); the "
                      "delivery worker stops", self.refused)
        for thread in threads.values():
            thread.join(timeout=self.settings.timeout_seconds + 5)

    def _deliver(self, identifier: str, stop: threading.Event) -> None:
        settings = self.settings
        renew_at = 0.0
        with httpx.Client(timeout=settings.timeout_seconds, follow_redirects=False,
                          headers={"User-Agent": USER_AGENT}) as client:
            try:
                while not stop.is_set():
                    now = time.time()
                    if now >= renew_at:
                        subscription = self.store.claim(identifier, self.owner,
                                                        now + settings.lease_seconds, now)
                        renew_at = now + settings.lease_seconds / 2
                    else:
                        subscription = self.store.get(identifier)
                        if subscription is not None and subscription.lease_owner != self.owner:
                            subscription = None
                    if subscription is None:
                        return  # removed, or another worker holds it now
                    if not self._step(client, subscription, stop):
                        return
            except Exception as error:
                if permission_denied(error):
                    self.refused = str(error).splitlines()[0]
                    return
                log.exception("webhooks: delivering %s failed; the next worker poll takes it "
                              "up again", identifier)
                stop.wait(min(10.0, 4 * settings.poll_seconds))
            finally:
                try:
                    self.store.release(identifier, self.owner)
                except Exception:
                    log.warning("webhooks: could not release %s (its lease runs out)",
                                identifier)

    def _step(self, client: httpx.Client, subscription: Subscription,
              stop: threading.Event) -> bool:
        """One attempt, or one wait; False if the subscription is no longer this worker's."""
        settings = self.settings
        now = time.time()
        if subscription.next_attempt_at is not None and subscription.next_attempt_at > now:
            stop.wait(min(subscription.next_attempt_at - now, settings.poll_seconds))
            return True
        page = self.feed.page(subscription.position, settings.page_movements,
                              subscription.outlets)
        if page.next == subscription.position:
            stop.wait(settings.poll_seconds)  # nothing new
            return True
        if not page.movements:
            # Positions with nothing for this subscription: passed over, nothing to send.
            return self.store.advance(subscription, self.owner, page.next, delivered=False)
        error = post(client, subscription, delivery_body(subscription, page))
        if error is None:
            return self.store.advance(subscription, self.owner, page.next, delivered=True)
        delay = signing.backoff_seconds(subscription.failures + 1, settings.backoff_seconds,
                                        settings.max_backoff_seconds)
        log.warning("webhooks: %s after position %d: %s; next attempt in %.1fs",
                    subscription.id, subscription.position, error, delay)
        return self.store.failed(subscription, self.owner, error, time.time() + delay)


def run_worker(url: str | None, stop: threading.Event,
               settings: DeliverySettings | None = None) -> None:
    """Deliver the webhooks of the store at `url` with a ledger of the worker's own (its
    own connections: deliveries never wait for the service's), until `stop` is set."""
    from cli.context import open_ledger

    while not stop.is_set():
        try:
            ledger = open_ledger(url)
        except Exception:
            log.exception("webhooks: cannot open the store; trying again")
            stop.wait(5.0)
            continue
        worker = DeliveryWorker(ledger.application, settings)
        try:
            worker.run(stop)
        finally:
            ledger.close()
        if worker.refused is not None:
            return
