"""Errors as RFC 9457 problem details (`application/problem+json`).

Every refusal rule of the ledger (`Refusal.rule`) has its own stable `type`, so a till can
branch on it without parsing prose; the values involved (asked, available, ...) are members of
the problem. Malformed input lists each offending field by its API name.
"""

from __future__ import annotations

from typing import Any

from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict

from ledger.domain.errors import InvalidInput, Refusal
from ledger.store.decoding import UnreadableEvent
from projections.stuck import ProjectionStuck

MEDIA_TYPE = "application/problem+json"
CONTENT_TYPE = "application/problem+json; charset=utf-8"
"""Said outright: clients decode a media type without a charset as they please."""
TYPE_PREFIX = "urn:stockledger:problem:"
"""A URN, not a web address: the type is an identifier that must never change or dangle."""

RULES: dict[str, tuple[int, str]] = {
    # rule: (status, title). One status per rule, documented in docs/http.md.
    "insufficient_stock": (409, "Insufficient stock"),
    "refund_exceeds_sale": (409, "Refund exceeds what was sold"),
    "batch_conflict": (409, "Batch reused with different attributes"),
    "duplicate_reference": (409, "Reference already recorded for another command"),
    "transfer_already_received": (409, "Transfer already received"),
    "lot_already_held": (409, "Lot already held in that scope"),
    "lot_not_held": (409, "Lot not held in that scope"),
    "correction_refused": (409, "Correction would contradict what happened to the units"),
    "unknown_receipt": (404, "Unknown or ambiguous receipt"),
    "refused": (409, "Refused by a ledger rule"),
    "unknown_sale": (404, "Unknown sale"),
    "unknown_transfer": (404, "Unknown transfer"),
    "unknown_sku": (404, "Unknown SKU at this outlet"),
    "unknown_outlet": (404, "Unknown outlet"),
    "unknown_batch": (404, "Unknown batch"),
    "idempotency_key_reused": (422, "Idempotency key reused for a different request"),
    "invalid_input": (422, "Invalid input"),
    "unauthenticated": (401, "No valid token"),
    "forbidden": (403, "Not allowed for this token"),
    "not_found": (404, "No such resource"),
    "method_not_allowed": (405, "Method not allowed"),
    "payload_too_large": (413, "Request body too large"),
    "unsupported_media_type": (415, "Unsupported media type"),
    "projections_behind": (503, "Read models did not reach the position in time"),
    "concurrency_conflict": (503, "Too much contention; nothing was recorded"),
    "store_unavailable": (503, "Store unavailable"),
    "store_permission_denied": (503, "The service's database role may not do this"),
    "invariant_broken": (500, "The recorded history contradicts a ledger rule"),
    "unreadable_event": (500, "The store holds an event that cannot be read"),
    "internal_error": (500, "Internal error"),
}


class FieldError(BaseModel):
    field: str
    location: str
    message: str


class Problem(BaseModel):
    """An RFC 9457 problem; extension members (the values involved) may follow."""

    model_config = ConfigDict(extra="allow")

    type: str
    title: str
    status: int
    detail: str
    rule: str
    errors: list[FieldError] | None = None


def problem(rule: str, detail: str, *, headers: dict[str, str] | None = None,
            **members: Any) -> JSONResponse:
    status, title = RULES.get(rule, RULES["refused"])
    body = {"type": TYPE_PREFIX + rule, "title": title, "status": status, "detail": detail,
            "rule": rule, **members}
    return JSONResponse(body, status_code=status, media_type=CONTENT_TYPE, headers=headers)


def refusal(error: Refusal) -> JSONResponse:
    """The problem for a ledger refusal, with the values it carries (asked, available, ...)."""
    members: dict[str, Any] = {name: value for name, value in vars(error).items()
               if not name.startswith("_") and isinstance(value, (str, int, float, bool))}
    rule = error.rule if error.rule in RULES else "refused"
    return problem(rule, str(error), **members)


def unreadable_event(error: UnreadableEvent) -> JSONResponse:
    """The problem for an event that cannot be read where the request must read: where it
    is (`position`, `stream`, `version`, `topic`) and why (`reason`). Retrying cannot help:
    an operator must repair or remove the row (docs/audit.md)."""
    return problem("unreadable_event", f"{error}: an operator must repair or remove that row",
                   position=error.position, stream=str(error.originator_id),
                   version=error.originator_version, topic=error.topic, reason=error.reason)


def projections_stuck(error: ProjectionStuck) -> JSONResponse:
    """The problem for a read that cannot get where it was asked to (`after_position`)
    because the read models stop before an event that cannot be read."""
    return problem("unreadable_event", error.describe(), **error.stuck.as_dict())


def invalid_input(error: InvalidInput) -> JSONResponse:
    return problem("invalid_input", f"{error.field}: {error.message}",
                   errors=[{"field": error.field, "location": "body",
                            "message": error.message}])


def _api_name(loc: tuple[Any, ...]) -> tuple[str, str]:
    """FastAPI's location (`("body", "lines", 0, "quantity")`) as where and the API's
    dotted field name (`lines.0.quantity`), the name a till sent."""
    where = str(loc[0]) if loc else "body"
    parts = [str(part) for part in loc[1:]]
    return where, ".".join(parts) or where


def validation(error: RequestValidationError) -> JSONResponse:
    errors = []
    for item in error.errors():
        where, field = _api_name(tuple(item.get("loc", ())))
        message = str(item.get("msg", "invalid"))
        if message.startswith("Value error, "):
            message = message[len("Value error, "):]
        errors.append({"field": field, "location": where, "message": message})
    detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors[:5])
    return problem("invalid_input", detail or "malformed request", errors=errors)


PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": Problem, "description": description,
             "content": {MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}}}
    for status, description in [
        (400, "Not a well-formed HTTP request (refused by the server before the API)"),
        (401, "No token, or an unknown or revoked one; nothing was recorded"),
        (403, "The token's role or outlets do not allow this; nothing was recorded"),
        (404, "Unknown sale, transfer, SKU, outlet or batch (or no such path)"),
        (409, "Refused by a ledger rule (insufficient stock, refund beyond sale, ...)"),
        (413, "Request body too large"),
        (422, "Malformed input (fields listed), or an idempotency key reused"),
        (503, "Store unavailable, contention exhausted, or read models behind"),
    ]
}
"""The problems any endpoint may answer with, for the OpenAPI document."""
