"""Commands: what a till, back office or operator asks the ledger to do, validated at the edge.

Every command is a frozen pydantic model. `parse` turns raw input into a command or raises
`InvalidInput` naming the first offending field, before anything is decided or written.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any, TypeVar
from uuid import uuid4

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from ledger.domain.errors import InvalidInput
from ledger.domain.quantities import MAX_QUANTITY, AllocationPolicy

Identifier = Annotated[
    str, StringConstraints(min_length=1, max_length=100, pattern=r"^[^\s\x00-\x1f\x7f]+$")
]
"""Outlet, SKU, batch, sale, refund and transfer ids: 1-100 printable characters, no spaces."""

Text = Annotated[str, StringConstraints(min_length=1, max_length=500, strip_whitespace=True,
                                        pattern=r"^[^\x00]+$")]
"""Free text (reasons, references, actors): no NUL, which PostgreSQL's text columns of the
read models cannot hold, so one such event would stop the journal projection for good."""
Key = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=r"^[^\x00]+$")]


def _not_a_boolean(value: Any) -> Any:
    # Pydantic's lax mode reads JSON `true` as 1; a till's boolean is never a quantity.
    if isinstance(value, bool):
        raise ValueError("must be a whole number, not a boolean")
    return value


Quantity = Annotated[int, BeforeValidator(_not_a_boolean), Field(gt=0, le=MAX_QUANTITY)]
Counted = Annotated[int, BeforeValidator(_not_a_boolean), Field(ge=0, le=MAX_QUANTITY)]
Money = Annotated[Decimal, Field(ge=0, max_digits=18, decimal_places=6)]

MAX_LINES = 500
CLOCK_SKEW = timedelta(minutes=5)
"""How far ahead of the server's clock a till's occurred_at may be before it counts as future."""


def now() -> datetime:
    return datetime.now(UTC)


class Command(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    actor: Text = "unknown"
    occurred_at: datetime | None = None
    """Business time; the server's time when not given. May not lie in the future."""
    key: Key | None = None
    """Idempotency key; each command kind has a natural default."""

    @field_validator("occurred_at")
    @classmethod
    def _not_in_future(cls, value: datetime | None) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        if value > now() + CLOCK_SKEW:
            raise ValueError("lies in the future")
        return value

    def business_time(self) -> datetime:
        return self.occurred_at or now()

    def idempotency_key(self) -> str:
        """The client's key, else the command's natural one, else a fresh one (not retry-safe)."""
        return self.key or self.default_key() or f"auto:{uuid4()}"

    def default_key(self) -> str | None:
        return None

    def fingerprint_fields(self) -> dict[str, Any]:
        """What makes two submissions "the same command": everything the client chose."""
        fields = self.model_dump(mode="json", exclude={"key"}, exclude_unset=False)
        if "occurred_at" not in self.model_fields_set:
            fields.pop("occurred_at")
        return fields


class ReceiveStock(Command):
    outlet: Identifier
    sku: Identifier
    batch_id: Identifier
    quantity: Quantity
    expires_on: date | None = None
    unit_cost: Money | None = None
    reference: Text | None = None

    def default_key(self) -> str | None:
        # The delivery note tells a second delivery of a batch from a retry of the first.
        delivery = f":{self.reference}" if self.reference else ""
        return f"receipt:{self.outlet}:{self.sku}:{self.batch_id}{delivery}"


class LineRequest(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    sku: Identifier
    quantity: Quantity


def _merge_lines(lines: list[LineRequest]) -> list[LineRequest]:
    """A SKU on several lines is one line of their sum: allocation is per stock item."""
    merged: dict[str, int] = {}
    for line in lines:
        merged[line.sku] = merged.get(line.sku, 0) + line.quantity
    for sku, quantity in merged.items():
        if quantity > MAX_QUANTITY:
            raise ValueError(f"SKU {sku} totals {quantity}, above {MAX_QUANTITY}")
    return [LineRequest(sku=sku, quantity=quantity) for sku, quantity in merged.items()]


class LinesCommand(Command):
    lines: Annotated[list[LineRequest], Field(min_length=1, max_length=MAX_LINES)]

    @field_validator("lines")
    @classmethod
    def _merge(cls, lines: list[LineRequest]) -> list[LineRequest]:
        return _merge_lines(lines)


class SellStock(LinesCommand):
    outlet: Identifier
    sale_id: Identifier

    def default_key(self) -> str | None:
        return f"sale:{self.sale_id}"


class RefundSale(LinesCommand):
    sale_id: Identifier
    refund_id: Identifier
    write_off: bool = False

    def default_key(self) -> str | None:
        return f"refund:{self.sale_id}:{self.refund_id}"


class ExpireBatches(Command):
    outlet: Identifier | None = None
    sku: Identifier | None = None
    as_of: date | None = None


class CountStock(Command):
    outlet: Identifier
    sku: Identifier
    counts: Annotated[dict[Identifier, Counted], Field(min_length=1, max_length=10_000)]
    whole_sku: bool = False
    count_id: Identifier | None = None

    def default_key(self) -> str | None:
        return f"count:{self.outlet}:{self.sku}:{self.count_id}" if self.count_id else None


class WriteOffStock(Command):
    outlet: Identifier
    sku: Identifier
    quantity: Quantity
    batch_id: Identifier | None = None
    reason: Text
    reference: Text | None = None


class TransferStock(Command):
    from_outlet: Identifier
    to_outlet: Identifier
    sku: Identifier
    quantity: Quantity
    transfer_id: Identifier
    in_transit: bool = False

    @model_validator(mode="after")
    def _distinct_outlets(self) -> TransferStock:
        if self.from_outlet == self.to_outlet:
            raise ValueError("to_outlet: must differ from from_outlet")
        return self

    def default_key(self) -> str | None:
        return f"transfer:{self.transfer_id}"


class ReceiveTransfer(Command):
    transfer_id: Identifier

    def default_key(self) -> str | None:
        return f"transfer-received:{self.transfer_id}"


class SetReorderLevel(Command):
    outlet: Identifier
    sku: Identifier
    level: Annotated[int, Field(ge=0, le=MAX_QUANTITY)] | None


class SetOutletPolicy(Command):
    outlet: Identifier
    allocation_policy: AllocationPolicy = "fefo"
    allow_negative: bool = False


CommandT = TypeVar("CommandT", bound=Command)

COMMAND_KINDS: dict[type[Command], str] = {
    ReceiveStock: "receive",
    SellStock: "sell",
    RefundSale: "refund",
    CountStock: "count",
    WriteOffStock: "write-off",
    TransferStock: "transfer",
    ReceiveTransfer: "transfer-receive",
}


def parse(command_class: type[CommandT], **data: Any) -> CommandT:
    """Validate raw input into a command, or raise `InvalidInput` naming the field."""
    try:
        return command_class.model_validate(data)
    except ValidationError as error:
        first = error.errors()[0]
        location = ".".join(str(part) for part in first["loc"]) or command_class.__name__
        message = first["msg"]
        if message.startswith("Value error, "):
            message = message[len("Value error, "):]
        if ": " in message and location in ("", command_class.__name__):
            location, message = message.split(": ", 1)
        raise InvalidInput(location, message) from None
