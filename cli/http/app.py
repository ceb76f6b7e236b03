"""The HTTP API: every command and read of the CLI's contract under `/v1`, as FastAPI routes.

Request bodies are the command models of `ledger.app.commands` (the API's field names are the
models' field names); answers are the typed results of `ledger.app.results` with the recorded
position. Handlers are plain functions, so FastAPI runs them in its thread pool: a command is
a blocking transaction, and the event loop must keep accepting while it runs.

Idempotency (the IETF `Idempotency-Key` header draft): the header, else the body's `key`,
else the command's own default, becomes the command's idempotency key. The ledger records the
key with the command in one transaction, so the same request again, from any worker process
or after a restart, gets the first answer (status and body) and records nothing, and a
different request under the key is refused (422). A repeat that arrives while the first is in
flight waits for it: the second append collides with the first on the key's stream and then
answers with the first's result; nothing is recorded twice.

Commands go to the worker's ledger through `Ledger.submit`: requests for one stock item that
arrive while the ledger is busy wait in that item's lane and are then decided together, in
the order they came, and appended in one transaction (`ledger.app.lanes`), each answered
with its own result and position. Between worker processes and service instances, optimistic
concurrency remains the guard: a group that lost a race is decided again on fresh state.
"""

from __future__ import annotations

import csv
import io
import json
import re
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any, Literal

from eventsourcing.persistence import PersistenceError
from fastapi import Depends, FastAPI, Header, Path, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.security.utils import get_authorization_scheme_param
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cli.audit import verify_report, verify_store
from cli.context import open_ledger
from cli.http import feed as change_feed
from cli.http import problems
from cli.http import schemas as s
from cli.http import webhooks as web_hooks
from cli.http.tokens import Token, TokenStore
from ledger.app import audit as ledger_audit
from ledger.app import commands as c
from ledger.app import results as r
from ledger.app import valuation
from ledger.app.service import Ledger
from ledger.domain.errors import (
    ConcurrencyConflict,
    InvalidInput,
    InvariantBroken,
    Refusal,
    StoreNotInitialised,
    UnknownSale,
    UnknownTransfer,
)
from ledger.domain.movements import JOURNAL_COLUMNS
from ledger.store.decoding import UnreadableEvent
from ledger.store.privileges import permission_denied
from projections.feed import Feed
from projections.lot_queries import MAX_EXPIRING, LotReads
from projections.queries import Reads
from projections.runner import ReadModels
from projections.stuck import ProjectionStuck

GRACEFUL_WORKER_SECONDS = 15.0
"""How long a stopping server waits for the webhook deliveries in flight."""
MAX_BODY_BYTES = 1024 * 1024
"""A sale of MAX_LINES lines is about 40 KiB; a count of 10,000 batches about 400 KiB."""
MAX_WAIT_SECONDS = 30.0
DEFAULT_WAIT_SECONDS = 10.0
MAX_PAGE = 1000
ANCHOR = re.compile(r"^[0-9]{1,18}:[0-9a-f]{1,128}$")
MAX_POSITION = 2**63 - 1
"""Positions are 64-bit in both stores: a larger one is malformed, not merely unknown."""
ID_PATTERN = r"^[^\s\x00-\x1f\x7f]+$"
"""As `ledger.app.commands.Identifier`: ids in paths and queries are the ids of commands."""

Action = Literal["sell", "refund", "receive", "count", "write-off", "transfer",
                 "transfer-receive", "reorder-level", "expire", "outlet-policy",
                 "hold", "correct-receipt",
                 "read-stock", "read-history", "trace", "audit", "read-feed",
                 "read-valuation"]

PERMISSIONS: dict[Action, frozenset[str]] = {
    # Deny by default: an action no role names here is allowed to no one.
    "sell": frozenset({"till", "store", "admin"}),
    "refund": frozenset({"till", "store", "admin"}),
    "read-stock": frozenset({"till", "store", "auditor", "admin"}),
    "receive": frozenset({"store", "admin"}),
    "count": frozenset({"store", "admin"}),
    "write-off": frozenset({"store", "admin"}),
    "transfer": frozenset({"store", "admin"}),
    "transfer-receive": frozenset({"store", "admin"}),
    "reorder-level": frozenset({"store", "admin"}),
    "expire": frozenset({"store", "admin"}),
    "hold": frozenset({"store", "admin"}),
    "correct-receipt": frozenset({"store", "admin"}),
    "read-history": frozenset({"store", "auditor", "admin"}),
    "trace": frozenset({"store", "auditor", "admin"}),
    "outlet-policy": frozenset({"admin"}),
    "audit": frozenset({"auditor", "admin"}),
    "read-feed": frozenset({"till", "store", "auditor", "admin"}),
    "read-valuation": frozenset({"store", "auditor", "admin"}),
}
"""Which roles may do what. Tills and stores only at their token's outlets."""


class Denied(Exception):
    """The caller may not do this: 401 (no valid token) or 403 (out of its role or outlets)."""

    def __init__(self, rule: Literal["unauthenticated", "forbidden"], detail: str) -> None:
        super().__init__(detail)
        self.rule = rule
        self.detail = detail


class Behind(Exception):
    """The read models did not reach the asked position within the wait."""


def authorise(token: Token, action: Action, *outlets: str | None) -> None:
    """Raise `Denied` unless the token's role allows `action` at every one of `outlets`."""
    if token.role not in PERMISSIONS[action]:
        raise Denied("forbidden", f"token {token.name} ({token.role}) may not {action}")
    for outlet in outlets or (None,):
        if not token.covers(outlet):
            where = f"at outlet {outlet}" if outlet else "without naming one of its outlets"
            raise Denied("forbidden", f"token {token.name} may not {action} {where}")


# --------------------------------------------------------------------------- the app


_bearer = HTTPBearer(auto_error=False, description="A token made by `ledger tokens create`.")

IdPath = Annotated[str, Path(min_length=1, max_length=100, pattern=ID_PATTERN)]
IdQuery = Annotated[str | None, Query(min_length=1, max_length=100, pattern=ID_PATTERN)]
Moment = Annotated[datetime | None, Query(
    description="ISO 8601; without a time zone it is UTC.")]

IdempotencyKey = Annotated[str | None, Header(
    alias="Idempotency-Key", min_length=1, max_length=200, pattern=r"^[\x21-\x7e]+$",
    description="The request's idempotency key; default: the body's `key`, else the "
                "command's own id (sale, refund, transfer or delivery-note id).")]
AfterPosition = Annotated[int | None, Query(
    ge=0, le=MAX_POSITION,
    description="Read-your-writes: wait until the read models include this position (a "
                "`position` a write answered with).")]
Wait = Annotated[float, Query(ge=0, le=MAX_WAIT_SECONDS,
                              description="How long to wait for `after_position`, seconds.")]


async def ledger_of(request: Request) -> Ledger:
    """The worker's ledger. A coroutine, since it does no I/O: FastAPI would run a plain
    function in its thread pool, a hop to a thread and back on every request."""
    ledger: Ledger = request.app.state.ledger
    return ledger


def verified(tokens: TokenStore, secret: str | None) -> Token:
    """The live token whose secret this is, or `Denied` (401). Looked up on every request,
    never cached: a revoked token's next request is refused."""
    if secret is None:
        raise Denied("unauthenticated", "an Authorization: Bearer token is required")
    token = tokens.verify(secret)
    if token is None:
        raise Denied("unauthenticated", "the token is unknown or revoked")
    return token


def caller(request: Request,
           credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
           ) -> Token:
    """The verified token of the request, or `Denied` (401): nothing runs without one."""
    return verified(request.app.state.tokens,
                    credentials.credentials if credentials is not None else None)


class Unverified:
    """A write's bearer token, not yet looked up: the write's endpoint verifies it first
    (`verify`), in the thread it runs in anyway. A dependency that looked it up would cost a
    hop to the thread pool and back of its own on every request, about a tenth of a sale's
    server CPU (`docs/performance.md`, "The HTTP service"), and one on the event loop would
    stall every request of the worker while the database is slow."""

    __slots__ = ("secret", "tokens")

    def __init__(self, tokens: TokenStore, secret: str | None) -> None:
        self.tokens = tokens
        self.secret = secret

    def verify(self) -> Token:
        return verified(self.tokens, self.secret)


async def unverified(request: Request,
                     credentials: Annotated[HTTPAuthorizationCredentials | None,
                                            Depends(_bearer)]) -> Unverified:
    """The request's bearer token, to be verified by the endpoint before it does anything
    else. A coroutine: it does no I/O."""
    if credentials is None:
        raise Denied("unauthenticated", "an Authorization: Bearer token is required")
    return Unverified(request.app.state.tokens, credentials.credentials)


def unauthenticated(request: Request) -> Denied | None:
    """Why the request is refused as unauthenticated (401), or None if its token is live."""
    scheme, secret = get_authorization_scheme_param(request.headers.get("Authorization"))
    try:
        verified(request.app.state.tokens,
                 secret if scheme.lower() == "bearer" and secret else None)
    except Denied as denied:
        return denied
    return None


Caller = Annotated[Token, Depends(caller)]
WriteCaller = Annotated[Unverified, Depends(unverified)]
LedgerDep = Annotated[Ledger, Depends(ledger_of)]


def execute(ledger: Ledger, command: c.Command, token: Token, header_key: str | None
            ) -> Response:
    """Run `command` as the token (its name is the actor) under the request's key."""
    if header_key is not None and command.key is not None and header_key != command.key:
        raise InvalidInput("key", "differs from the Idempotency-Key header")
    update: dict[str, Any] = {"actor": token.name}
    if header_key is not None:
        update["key"] = header_key
    # Submitted, not executed: requests for one stock item that arrive together are decided
    # together and appended in one transaction (`Ledger.submit`).
    result = ledger.submit(command.model_copy(update=update))
    # The body of a repeat is the first answer's, byte for byte (`replayed` is left out and
    # said by the header instead, as Stripe does), so a client may compare or cache it.
    headers = {"Idempotent-Replayed": "true"} if result.replayed else {}
    if result.position is not None:
        headers["Ledger-Position"] = str(result.position)
    return JSONResponse(result.model_dump(mode="json", exclude={"replayed"}), headers=headers)


def fresh_reads(ledger: Ledger, after_position: int | None, wait: float
                ) -> tuple[Reads, int, dict[str, Any] | None]:
    """Reads that include `after_position` (waiting up to `wait` s), or without it every
    append made so far, as the CLI's reads; the position they stand at; and the event they
    are stuck before (None unless one cannot be read).

    As in the CLI, a read of a store holding an unreadable event answers as far as the read
    models got, saying where they stop; one that asked for a position beyond it cannot be
    answered (`ProjectionStuck`)."""
    app = ledger.application
    models = ReadModels(app)
    stuck: dict[str, Any] | None = None
    if after_position is not None:
        head = ledger.head_position()
        if after_position > head:
            # No write was ever answered with it: waiting could only time out.
            raise InvalidInput("after_position", f"lies beyond the newest position {head}")
        if not models.wait_for(after_position, wait):
            raise Behind(f"read models did not reach position {after_position} in {wait}s")
    else:
        try:
            # A service whose database role may only read (the auditor's) answers from the
            # read models as they stand, at the `position` it reports, as the CLI's reads do.
            models.catch_up_if_permitted(workers=1)
        except ProjectionStuck as error:
            stuck = error.stuck.as_dict()
    reads = Reads(app)
    return reads, min(reads.models.positions().values()), stuck


def _aware(moment: datetime | None) -> datetime | None:
    """A moment without a time zone is UTC, as in the command models."""
    if moment is not None and moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment


def _rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    encoded: list[dict[str, Any]] = jsonable_encoder(rows)
    return encoded


def _scoped_stock(token: Token, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [row for row in rows if token.covers(row["outlet"])]


class BodyLimit:
    """Refuses a request body over `limit` bytes (413) before it is parsed, whether it
    declares its length or streams in chunks."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._refuse(scope, receive, send)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise _TooLarge
            return message

        try:
            await self.app(scope, counted, send)
        except _TooLarge:
            await self._refuse(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = problems.problem("payload_too_large",
                                    f"the request body exceeds {self.limit} bytes")
        await response(scope, receive, send)


class _TooLarge(Exception):
    pass


def create_app(url: str | None = None, *, webhooks: bool = True) -> FastAPI:
    """The service over the store at `url` ($LEDGER_DATABASE_URL, else the embedded default),
    delivering webhooks too unless told not to (`cli.http.webhooks`).

    One ledger per worker process, opened at start-up and closed after the last request in
    flight has finished (uvicorn stops accepting first, then waits for them). Long-polls and
    event streams are told when the server begins to stop, so they do not hold that up."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        ledger = open_ledger(url)
        tokens = TokenStore(ledger.application)
        tokens.ensure_table()
        app.state.ledger, app.state.tokens = ledger, tokens
        stopping = threading.Event()
        change_feed.stop_on_signals(stopping)
        app.state.feed = Feed(ledger.application)
        app.state.watcher = watcher = change_feed.Watcher(app.state.feed, stopping)
        deliveries = threading.Thread(target=web_hooks.run_worker, args=(url, stopping),
                                      name="webhooks", daemon=True) if webhooks else None
        if deliveries is not None:
            deliveries.start()
        try:
            yield
        finally:
            stopping.set()
            await watcher.close()
            if deliveries is not None:
                await run_in_threadpool(deliveries.join, GRACEFUL_WORKER_SECONDS)
            ledger.close()

    app = FastAPI(
        title="stockledger", version="1",
        summary="An event-sourced stock ledger for retail and pharmacy outlets.",
        description="Every write is idempotent under its `Idempotency-Key`; errors are RFC "
                    "9457 problem details. See docs/http.md.",
        lifespan=lifespan, responses=problems.PROBLEM_RESPONSES)
    app.add_middleware(BodyLimit, limit=MAX_BODY_BYTES)
    _handlers(app)
    _writes(app)
    _reads(app)
    _lot_reads(app)
    _back_office(app)
    _audit(app)
    change_feed.install(app, caller, authorise)
    return app


def create_app_without_webhooks() -> FastAPI:
    """The service without a webhook delivery worker (`ledger serve --no-webhooks`)."""
    return create_app(webhooks=False)


def _handlers(app: FastAPI) -> None:
    @app.exception_handler(Refusal)
    async def _refusal(request: Request, error: Refusal) -> Response:
        return problems.refusal(error)

    @app.exception_handler(InvalidInput)
    async def _invalid(request: Request, error: InvalidInput) -> Response:
        return problems.invalid_input(error)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, error: RequestValidationError) -> Response:
        # A write verifies its token in its endpoint, after its body was validated: a
        # request without a live token is told so (401), not what was wrong with its body.
        denied = await run_in_threadpool(unauthenticated, request)
        if denied is not None:
            return await _denied(request, denied)
        return problems.validation(error)

    @app.exception_handler(Denied)
    async def _denied(request: Request, error: Denied) -> Response:
        headers = {"WWW-Authenticate": "Bearer"} if error.rule == "unauthenticated" else None
        return problems.problem(error.rule, error.detail, headers=headers)

    @app.exception_handler(Behind)
    async def _behind(request: Request, error: Behind) -> Response:
        return problems.problem("projections_behind", str(error), headers={"Retry-After": "1"})

    @app.exception_handler(ConcurrencyConflict)
    async def _contended(request: Request, error: ConcurrencyConflict) -> Response:
        return problems.problem("concurrency_conflict", str(error), headers={"Retry-After": "1"})

    @app.exception_handler(StoreNotInitialised)
    async def _not_initialised(request: Request, error: StoreNotInitialised) -> Response:
        return problems.problem("store_unavailable", str(error))

    @app.exception_handler(PersistenceError)
    async def _store(request: Request, error: PersistenceError) -> Response:
        if permission_denied(error):
            # The service's database role may not do this: no retry helps, an operator must
            # run it as a role that may (`docs/append_only_role.sql`).
            return problems.problem("store_permission_denied", str(error).splitlines()[0])
        return problems.problem("store_unavailable", str(error).splitlines()[0],
                                headers={"Retry-After": "1"})

    @app.exception_handler(UnreadableEvent)
    async def _unreadable(request: Request, error: UnreadableEvent) -> Response:
        return problems.unreadable_event(error)

    @app.exception_handler(ProjectionStuck)
    async def _stuck(request: Request, error: ProjectionStuck) -> Response:
        return problems.projections_stuck(error)

    @app.exception_handler(InvariantBroken)
    async def _broken(request: Request, error: InvariantBroken) -> Response:
        return problems.problem("invariant_broken", str(error))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, error: StarletteHTTPException) -> Response:
        if isinstance(error.__cause__, _TooLarge):
            # FastAPI turns any error while reading the body into a 400; this one is ours.
            return problems.problem("payload_too_large",
                                    f"the request body exceeds {MAX_BODY_BYTES} bytes")
        rule = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large",
                415: "unsupported_media_type"}.get(error.status_code, "invalid_input")
        return problems.problem(rule, str(error.detail))


def _writes(app: FastAPI) -> None:
    """POST /v1/<kind>: one route per command, its body the command model."""
    tags: list[str | Any] = ["commands"]

    @app.post("/v1/receipts", response_model=r.ReceiptResult, tags=tags)
    def receive(body: c.ReceiveStock, caller: WriteCaller, ledger: LedgerDep,
                idempotency_key: IdempotencyKey = None) -> Response:
        """Record a batch (or more of one) arriving at an outlet."""
        token = caller.verify()
        authorise(token, "receive", body.outlet)
        return execute(ledger, body, token, idempotency_key)

    @app.post("/v1/sales", response_model=r.SaleResult, tags=tags)
    def sell(body: c.SellStock, caller: WriteCaller, ledger: LedgerDep,
             idempotency_key: IdempotencyKey = None) -> Response:
        """Record a sale of one or more lines, all or nothing."""
        token = caller.verify()
        authorise(token, "sell", body.outlet)
        return execute(ledger, body, token, idempotency_key)

    @app.post("/v1/refunds", response_model=r.RefundResult, tags=tags)
    def refund(body: c.RefundSale, caller: WriteCaller, ledger: LedgerDep,
               idempotency_key: IdempotencyKey = None) -> Response:
        """Return units of a sale to the batches they came from (or write them off)."""
        token = caller.verify()
        outlet = ledger.outlet_of_sale(body.sale_id)
        if outlet is None and token.scoped:
            # Told apart from a 403 only for outlets' tokens: an unscoped caller learns no
            # more than the ledger's own refusal would tell it.
            raise UnknownSale(body.sale_id)
        authorise(token, "refund", outlet)
        return execute(ledger, body, token, idempotency_key)

    @app.post("/v1/counts", response_model=r.CountResult, tags=tags)
    def count(body: c.CountStock, caller: WriteCaller, ledger: LedgerDep,
              idempotency_key: IdempotencyKey = None) -> Response:
        """Record a stock take of one SKU (the variance is recorded with it)."""
        token = caller.verify()
        authorise(token, "count", body.outlet)
        return execute(ledger, body, token, idempotency_key)

    @app.post("/v1/write-offs", response_model=r.WriteOffResult, tags=tags)
    def write_off(body: c.WriteOffStock, caller: WriteCaller, ledger: LedgerDep,
                  idempotency_key: IdempotencyKey = None) -> Response:
        """Take stock off the shelf for a reason (damage, theft, samples)."""
        token = caller.verify()
        authorise(token, "write-off", body.outlet)
        return execute(ledger, body, token, idempotency_key)

    @app.post("/v1/transfers", response_model=r.TransferResult, tags=tags)
    def transfer(body: c.TransferStock, caller: WriteCaller, ledger: LedgerDep,
                 idempotency_key: IdempotencyKey = None) -> Response:
        """Move stock from one of the token's outlets to another outlet."""
        token = caller.verify()
        authorise(token, "transfer", body.from_outlet)
        return execute(ledger, body, token, idempotency_key)

    @app.post("/v1/transfer-receipts", response_model=r.TransferResult, tags=tags)
    def transfer_receive(body: c.ReceiveTransfer, caller: WriteCaller, ledger: LedgerDep,
                         idempotency_key: IdempotencyKey = None) -> Response:
        """Record the arrival, at one of the token's outlets, of a transfer in transit."""
        token = caller.verify()
        outlets = ledger.outlets_of_transfer(body.transfer_id)
        if outlets is None and token.scoped:
            raise UnknownTransfer(body.transfer_id)
        authorise(token, "transfer-receive", outlets[1] if outlets else None)
        return execute(ledger, body, token, idempotency_key)

    @app.post("/v1/reorder-levels", response_model=r.ReorderLevelResult, tags=tags)
    def reorder_level(body: c.SetReorderLevel, caller: WriteCaller, ledger: LedgerDep,
                      idempotency_key: IdempotencyKey = None) -> Response:
        """Set (or clear, with null) the level at or below which a stock item shows as low."""
        token = caller.verify()
        authorise(token, "reorder-level", body.outlet)
        return execute(ledger, body, token, idempotency_key)

    @app.post("/v1/outlet-policies", response_model=r.OutletPolicyResult, tags=tags)
    def outlet_policy(body: c.SetOutletPolicy, caller: WriteCaller, ledger: LedgerDep,
                      idempotency_key: IdempotencyKey = None) -> Response:
        """Open an outlet, or set its allocation policy and negative-stock rule (admin)."""
        token = caller.verify()
        authorise(token, "outlet-policy", body.outlet)
        return execute(ledger, body, token, idempotency_key)

    @app.post("/v1/holds", response_model=r.HoldResult, tags=tags)
    def hold(body: c.HoldLot, caller: WriteCaller, ledger: LedgerDep,
             idempotency_key: IdempotencyKey = None) -> Response:
        """Make a lot unsellable at one outlet, or everywhere (`outlet` null: a store token
        scoped to outlets may hold only at its own)."""
        token = caller.verify()
        authorise(token, "hold", body.outlet)
        return execute(ledger, body, token, idempotency_key)

    @app.post("/v1/hold-releases", response_model=r.HoldResult, tags=tags)
    def release(body: c.ReleaseLot, caller: WriteCaller, ledger: LedgerDep,
                idempotency_key: IdempotencyKey = None) -> Response:
        """End a lot's hold in the scope it was held in."""
        token = caller.verify()
        authorise(token, "hold", body.outlet)
        return execute(ledger, body, token, idempotency_key)

    @app.post("/v1/receipt-corrections", response_model=r.CorrectionResult, tags=tags)
    def correct_receipt(body: c.CorrectReceipt, caller: WriteCaller, ledger: LedgerDep,
                        idempotency_key: IdempotencyKey = None) -> Response:
        """Correct a receipt typed wrong (quantity, expiry, cost, batch id)."""
        token = caller.verify()
        authorise(token, "correct-receipt", body.outlet)
        return execute(ledger, body, token, idempotency_key)

    @app.post("/v1/expiry-sweeps", response_model=r.ExpiryResult, tags=tags)
    def expire(body: c.ExpireBatches, caller: WriteCaller, ledger: LedgerDep) -> Response:
        """Write off every batch whose expiry date has come. Idempotent by nature (each
        batch expires once, ever), so it takes no key."""
        token = caller.verify()
        authorise(token, "expire", body.outlet)
        return execute(ledger, body, token, None)


def _reads(app: FastAPI) -> None:
    tags: list[str | Any] = ["reads"]

    @app.get("/v1/health", response_model=s.Health, tags=["service"])
    def health(ledger: LedgerDep) -> dict[str, Any]:
        """Liveness, and the newest recorded position (no token needed)."""
        return {"status": "ok", "head": ledger.head_position()}

    @app.get("/v1/outlets/{outlet}/stock", response_model=s.OutletStock, tags=tags)
    def stock(outlet: IdPath, token: Caller, ledger: LedgerDep, sku: IdQuery = None,
              after_position: AfterPosition = None,
              wait: Wait = DEFAULT_WAIT_SECONDS) -> dict[str, Any]:
        """On hand and available stock per SKU at an outlet."""
        authorise(token, "read-stock", outlet)
        reads, position, stuck = fresh_reads(ledger, after_position, wait)
        return {"outlet": outlet, "position": position, "stuck": stuck,
                "stock": _rows(reads.stock(outlet, sku))}

    @app.get("/v1/skus/{sku}/stock", response_model=s.SkuStock, tags=tags)
    def sku_stock(sku: IdPath, token: Caller, ledger: LedgerDep,
                  after_position: AfterPosition = None,
                  wait: Wait = DEFAULT_WAIT_SECONDS) -> dict[str, Any]:
        """A SKU's stock at every outlet (a scoped token sees its own outlets only)."""
        authorise(token, "read-stock", *sorted(token.outlets) if token.scoped else ())
        reads, position, stuck = fresh_reads(ledger, after_position, wait)
        return {"sku": sku, "position": position, "stuck": stuck,
                "stock": _rows(_scoped_stock(token, reads.stock_of_sku(sku)))}

    @app.get("/v1/outlets/{outlet}/skus/{sku}/batches", response_model=s.Batches, tags=tags)
    def batches(outlet: IdPath, sku: IdPath, token: Caller, ledger: LedgerDep,
                after_position: AfterPosition = None,
                wait: Wait = DEFAULT_WAIT_SECONDS) -> dict[str, Any]:
        """Batches of a SKU at an outlet, in expiry order."""
        authorise(token, "read-stock", outlet)
        reads, position, stuck = fresh_reads(ledger, after_position, wait)
        return {"outlet": outlet, "sku": sku, "position": position, "stuck": stuck,
                "batches": _rows(reads.batches(outlet, sku))}

    @app.get("/v1/outlets/{outlet}/low-stock", response_model=s.LowStock, tags=tags)
    def low_stock(outlet: IdPath, token: Caller, ledger: LedgerDep,
                  after_position: AfterPosition = None,
                  wait: Wait = DEFAULT_WAIT_SECONDS) -> dict[str, Any]:
        """Stock items at or below their reorder level."""
        authorise(token, "read-stock", outlet)
        reads, position, stuck = fresh_reads(ledger, after_position, wait)
        return {"outlet": outlet, "position": position, "stuck": stuck,
                "low_stock": _rows(reads.low_stock(outlet))}

    @app.get("/v1/outlets/{outlet}/history", response_model=s.History, tags=tags)
    def history(outlet: IdPath, token: Caller, ledger: LedgerDep, sku: IdQuery = None,
                reference: Annotated[str | None, Query(min_length=1, max_length=500,
                                                       pattern=r"^[^\x00]+$")] = None,
                since: Moment = None,
                limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
                after_position: AfterPosition = None,
                wait: Wait = DEFAULT_WAIT_SECONDS) -> dict[str, Any]:
        """Movements at an outlet, newest first (business time)."""
        authorise(token, "read-history", outlet)
        reads, position, stuck = fresh_reads(ledger, after_position, wait)
        return {"outlet": outlet, "position": position, "stuck": stuck,
                "movements": _rows(reads.history(outlet, sku, reference, _aware(since), limit))}


MAX_WITHIN_DAYS = 3_660
MAX_PERIOD_DAYS = 3_660


def _lot_reads(app: FastAPI) -> None:
    tags: list[str | Any] = ["reads"]

    @app.get("/v1/lots/{sku}/{batch_id}/trace", response_model=s.LotTrace, tags=tags)
    def lot_trace(sku: IdPath, batch_id: IdPath, token: Caller, ledger: LedgerDep,
                  after_position: AfterPosition = None,
                  wait: Wait = DEFAULT_WAIT_SECONDS) -> Any:
        """Where a lot (SKU and batch id) went across every outlet, for a recall: receipts,
        transfers (in transit or received), sales with the refunds against each, write-offs,
        counts and expiry; then what is on each outlet's shelves and in transit. It crosses
        outlets, so a token scoped to some outlets may not ask (`ledger trace`)."""
        authorise(token, "trace")
        reads, _, stuck = fresh_reads(ledger, after_position, wait)
        report = LotReads(reads.models).trace(sku, batch_id)
        return jsonable_encoder({**report, "position": reads.models.positions()["lots"],
                                 "stuck": stuck})

    @app.get("/v1/expiring", response_model=s.Expiring, tags=tags)
    def expiring(token: Caller, ledger: LedgerDep,
                 within_days: Annotated[int, Query(
                     ge=0, le=MAX_WITHIN_DAYS,
                     description="How many days ahead (0: expired and expiring today).")] = 30,
                 outlet: IdQuery = None, sku: IdQuery = None,
                 limit: Annotated[int, Query(ge=1, le=MAX_EXPIRING)] = 1000,
                 after_position: AfterPosition = None,
                 wait: Wait = DEFAULT_WAIT_SECONDS) -> Any:
        """Lots holding stock whose expiry date comes within `within_days` (already expired
        ones too, flagged), across outlets, soonest first (`ledger expiring`). A scoped
        token sees its own outlets only."""
        authorise(token, "read-stock", *([outlet] if outlet else
                                          sorted(token.outlets) if token.scoped else []))
        reads, _, stuck = fresh_reads(ledger, after_position, wait)
        today = datetime.now(UTC).date()
        window = timedelta(days=within_days)
        if token.scoped and outlet is None:
            rows = [row for scope in sorted(token.outlets)
                    for row in LotReads(reads.models).expiring(window, scope, sku, today, limit)]
            rows = sorted(rows, key=lambda r: (r["expires_on"], r["sku"], r["batch_id"],
                                               r["outlet"]))[:limit]
        else:
            rows = LotReads(reads.models).expiring(window, outlet, sku, today, limit)
        return {"on_date": today.isoformat(), "until": (today + window).isoformat(),
                "position": reads.models.positions()["lots"], "stuck": stuck,
                "expiring": _rows(rows)}

    @app.get("/v1/reports/movements", response_model=s.MovementsReport, tags=tags)
    def movements_report(token: Caller, ledger: LedgerDep,
                         first_day: Annotated[date, Query(
                             alias="from", description="First day (UTC), included.")],
                         last_day: Annotated[date, Query(
                             alias="to", description="Last day (UTC), included.")],
                         outlet: IdQuery = None, sku: IdQuery = None,
                         basis: Literal["business", "recorded"] = "business",
                         after_position: AfterPosition = None,
                         wait: Wait = DEFAULT_WAIT_SECONDS) -> Any:
        """Per stock item: the balance on hand at the start of `from`, each kind of
        movement to the end of `to`, and the closing balance; both balances are those of
        `/v1/audit/replay` at those moments on the same `basis` (`ledger report
        movements`). A scoped token must name one of its outlets."""
        authorise(token, "read-history", outlet)
        if last_day < first_day:
            raise InvalidInput("to", f"{last_day} is before from {first_day}")
        if (last_day - first_day).days >= MAX_PERIOD_DAYS:
            raise InvalidInput("to", f"a period is at most {MAX_PERIOD_DAYS} days")
        reads, _, stuck = fresh_reads(ledger, after_position, wait)
        rows = LotReads(reads.models).movements(first_day, last_day, outlet, sku, basis)
        return {"from": first_day.isoformat(), "to": last_day.isoformat(), "basis": basis,
                "outlet": outlet, "sku": sku, "position": reads.models.positions()["periods"],
                "stuck": stuck, "rows": rows}


def _back_office(app: FastAPI) -> None:
    tags: list[str | Any] = ["reads"]

    @app.get("/v1/discrepancies", response_model=s.Discrepancies, tags=tags)
    def discrepancies(token: Caller, ledger: LedgerDep, outlet: IdQuery = None,
                      after_position: AfterPosition = None,
                      wait: Wait = DEFAULT_WAIT_SECONDS) -> dict[str, Any]:
        """Shortfalls not yet settled by a receipt or count (a scoped token: its outlets)."""
        if outlet is not None:
            authorise(token, "read-history", outlet)
        else:
            authorise(token, "read-history", *sorted(token.outlets) if token.scoped else ())
        reads, position, stuck = fresh_reads(ledger, after_position, wait)
        rows = [row for row in reads.discrepancies(outlet) if token.covers(row["outlet"])]
        return {"outlet": outlet, "position": position, "stuck": stuck,
                "discrepancies": _rows(rows)}


def _audit(app: FastAPI) -> None:
    tags: list[str | Any] = ["audit"]

    @app.get("/v1/sales/{sale_id}/trace", response_model=s.Report, tags=tags)
    def trace(sale_id: IdPath, token: Caller, ledger: LedgerDep) -> Any:
        """A sale's batches, its refunds, and what became of each batch since."""
        if token.scoped:
            authorise(token, "trace", ledger.outlet_of_sale(sale_id))
        else:
            authorise(token, "trace")
        return ledger_audit.trace_sale(ledger.application, sale_id)

    @app.get("/v1/projections/status", response_model=s.Report, tags=tags)
    def projections_status(token: Caller, ledger: LedgerDep) -> Any:
        """Position, head and lag of each read model, its last outage, and the event it is
        stuck before if it met one it cannot read."""
        authorise(token, "audit")
        models = ReadModels(ledger.application)
        return jsonable_encoder({"projections": models.status(), "horizon": models.horizon()})

    @app.get("/v1/audit/verify", response_model=s.Report, tags=tags)
    def verify(token: Caller, ledger: LedgerDep,
               expect_head: Annotated[str | None, Query(
                   max_length=200, description="POSITION:HASH recorded earlier")] = None,
               ) -> Any:
        """Check each event's digest, the hash chain, each stream's versions, that every
        event can be read, every snapshot against its stream's events, and recompute every
        read model: `ledger audit verify --json`'s checks and report. A signed checkpoint is
        checked by the CLI, which holds its key; here, pass its position and hash as
        `expect_head` and compare its `digests_from`."""
        authorise(token, "audit")
        if expect_head is not None and not ANCHOR.match(expect_head):
            raise InvalidInput("expect_head", "expected POSITION:HASH")
        # As the CLI's: verification creates nothing (the service's role may have no DDL
        # rights), and a role that may not seal checks the chain as sealed so far.
        return verify_report(verify_store(ledger.application, expect_head=expect_head))

    @app.get("/v1/audit/replay", response_model=s.Report, tags=tags)
    def replay(token: Caller, ledger: LedgerDep,
               outlet: Annotated[str, Query(min_length=1, max_length=100,
                                            pattern=ID_PATTERN)],
               sku: IdQuery = None,
               position: Annotated[int | None, Query(ge=0, le=MAX_POSITION)] = None,
               as_of: Moment = None,
               basis: Literal["recorded", "business"] = "recorded") -> Any:
        """An outlet's stock as it stood at a position or a moment, replayed from events."""
        authorise(token, "audit")
        if (as_of is None) == (position is None):
            raise InvalidInput("as_of", "give exactly one of as_of and position")
        return jsonable_encoder(ledger_audit.replay(
            ledger.application, outlet, sku, position=position, as_of=_aware(as_of), basis=basis))

    @app.get("/v1/reports/valuation", response_model=s.Report, tags=tags)
    def report_valuation(token: Caller, ledger: LedgerDep, outlet: IdQuery = None,
                         as_of: Moment = None) -> Any:
        """Quantity and value on hand per stock item and outlet, with totals, at a moment
        (what was recorded by then; now if none), by replay: `ledger report valuation
        --json`. A store token names one of its outlets."""
        authorise(token, "read-valuation", outlet)
        return jsonable_encoder(valuation.valuation_report(
            ledger.application, outlet=outlet, as_of=_aware(as_of)))

    @app.get("/v1/reports/cogs", response_model=s.Report, tags=tags)
    def report_cogs(token: Caller, ledger: LedgerDep,
                    from_date: Annotated[date, Query(alias="from")],
                    to_date: Annotated[date, Query(alias="to")],
                    outlet: IdQuery = None) -> Any:
        """The cost of goods sold per sale line and per business day, `from` to `to` (both
        included): `ledger report cogs`'s rows as `lines` and `days`."""
        authorise(token, "read-valuation", outlet)
        if to_date < from_date:
            raise InvalidInput("to", f"{to_date} is before from {from_date}")
        rows = list(valuation.cogs_rows(ledger.application, from_date=from_date,
                                        to_date=to_date, outlet=outlet))
        return jsonable_encoder({
            "currency": valuation.store_currency(ledger.application),
            "lines": [row for row in rows if row["type"] == "line"],
            "days": [row for row in rows if row["type"] == "day"]})

    @app.get("/v1/audit/export", tags=tags, response_class=StreamingResponse,
             responses={200: {"content": {"text/csv": {}, "application/x-ndjson": {}},
                              "description": "Every movement, streamed"}})
    def export(token: Caller, ledger: LedgerDep,
               format: Literal["csv", "jsonl"] = "jsonl",
               since: Moment = None, until: Moment = None,
               outlet: IdQuery = None, sku: IdQuery = None,
               reference: Annotated[str | None, Query(min_length=1, max_length=500,
                                                      pattern=r"^[^\x00]+$")] = None,
               ) -> StreamingResponse:
        """Every movement with who, why, when, the batch and its cost, streamed page by
        page."""
        authorise(token, "audit")
        rows = valuation.export_with_costs(ledger.application, ledger_audit.export_rows(
            ledger.application, since=_aware(since), until=_aware(until), outlet=outlet,
            sku=sku, reference=reference))
        media = "text/csv" if format == "csv" else "application/x-ndjson"
        return StreamingResponse(_export_lines(rows, format), media_type=media)


EXPORT_COLUMNS = (*JOURNAL_COLUMNS, *valuation.COST_COLUMNS)


def _cell(value: object) -> object:
    return value.isoformat() if hasattr(value, "isoformat") else value


def _export_lines(rows: Iterator[tuple[object, ...]], output_format: str) -> Iterator[str]:
    if output_format == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(EXPORT_COLUMNS)
        for row in rows:
            writer.writerow([_cell(v) for v in row])
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
        yield buffer.getvalue()
        return
    for row in rows:
        yield json.dumps(dict(zip(EXPORT_COLUMNS, map(_cell, row), strict=True)),
                         default=str) + "\n"
