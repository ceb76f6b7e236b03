"""Commands: what a till, back office or operator asks the ledger to do, validated at the edge.

Every command is a frozen pydantic model. `parse` turns raw input into a command or raises
`InvalidInput` naming the first offending field, before anything is decided or written.

What the boundary lets in
-------------------------
A command's values are recorded in an event for good, and every read writes or reads them
again: the event store (SQLite or PostgreSQL), the stock and journal read models (PostgreSQL
`text`, `timestamptz` and `date` columns, SQLite ISO text), replay, the CSV and JSON-lines
export and the CLI's printed lines. A value one of them cannot hold fails every read after
it, rebuild included, so the rules below are what all of them can hold, checked here once:

* **Strings** (ids, keys, actor, reason, reference) are Unicode text with a UTF-8 form: a lone
  surrogate (U+D800-U+DFFF) has none and is refused. Refused too, anywhere in them:
  control characters, C0 (U+0000-U+001F, NUL included, which PostgreSQL `text` cannot hold),
  DEL (U+007F) and C1 (U+0080-U+009F); the line and paragraph separators U+2028 and U+2029;
  and the bidirectional embeddings, overrides and isolates U+202A-U+202E and U+2066-U+2069,
  which reorder whatever is printed after them ("Trojan Source", CVE-2021-42574). Printed, a
  recorded string can then never start a line of its own or restyle or reorder the line it
  is on. Everything else is accepted, in any script: letters, marks, emoji with their
  joiners, the left-to-right and right-to-left marks (U+200E, U+200F), which reorder nothing.
  `unsafe_character` is the rule.
* **Identifiers** (outlet, SKU, batch, sale, refund, transfer and count ids): 1-100
  characters, no whitespace of any kind. **Keys**: 1-200 characters. **Text** (actor, reason,
  reference): 1-500 characters once surrounding whitespace is stripped (a trailing newline is
  stripped, not refused; one inside is refused).
* **Times** (occurred_at) carry a UTC offset, or none, which means UTC. The offset is a whole
  number of minutes within +-14:00: every real zone since 1972 lies within -12:00..+14:00 in
  whole minutes, PostgreSQL reads at most +-15:59 and no fraction of a second back from text
  (its COPY), and ISO 8601 and RFC 3339 write no seconds. A time lies at or after
  `EARLIEST_TIME`, 1970-01-01T00:00Z, and at most `CLOCK_SKEW` ahead of the server's clock.
  Why 1970 and not year 1: a time near year 1 can lie before it in UTC
  (0001-01-01T00:00+14:00 is 1 BC there, which PostgreSQL stores and then cannot hand back to
  Python, so `history`, `audit verify` and rebuild failed for good). And a business time
  before the Unix epoch is a till whose clock was reset, not a sale: nothing the system this
  ledger replaces hands over is that old (its audit notes, from January 2026, describe a
  Django application in production), and 1970 is the least moment every consumer of an
  export can represent (POSIX time, JavaScript, the Windows C runtime's `localtime`).
* **Dates** (expires_on, an expiry sweep's as_of) lie from `EARLIEST_DATE` (1970-01-01, as
  times) to `LATEST_DATE` (2999-12-31). No product keeps for centuries; 9999-12-31 is the
  "never expires" placeholder of other systems, which here is no expiry date at all (the
  allocation's own key for "no expiry" is `date.max`, and consumers that add a day to a date
  overflow there).
* **Positions** (an event's place in the store) are whole numbers from 0 to `MAX_POSITION`,
  2^63-1, the largest that both stores' integer columns hold (`check_position`); a wait is a
  finite number of seconds from 0 to `MAX_WAIT_SECONDS` (`check_seconds`).
"""

from __future__ import annotations

import math
import re
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any, TypeVar
from uuid import uuid4

from pydantic import (
    AfterValidator,
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
from ledger.domain.outlet import parse_window
from ledger.domain.quantities import MAX_QUANTITY, AllocationPolicy

_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069"
                     "\ud800-\udfff]")
_KINDS = (((0xD800, 0xDFFF), "a lone surrogate, which is not Unicode text"),
          ((0x2028, 0x2029), "a line or paragraph separator"),
          ((0x202A, 0x2069), "a bidirectional embedding, override or isolate"))


def unsafe_character(text: str) -> str | None:
    """The first character of `text` that no recorded string may hold, described (its code
    point and why); None if there is none. The rule is the module's: see its docstring."""
    found = _UNSAFE.search(text)
    if found is None:
        return None
    code = ord(found.group())
    kind = next((why for (low, high), why in _KINDS if low <= code <= high),
                "a control character")
    return f"U+{code:04X}, {kind}"


def _safe(value: Any) -> Any:
    """Refuse an unsafe character before anything else looks at the string (pydantic would
    call a surrogate merely "not a valid string")."""
    if isinstance(value, str):
        unsafe = unsafe_character(value)
        if unsafe is not None:
            raise ValueError(f"contains {unsafe}")
    return value


def _safe_stripped(value: Any) -> Any:
    return _safe(value.strip() if isinstance(value, str) else value)


def _no_whitespace(value: str) -> str:
    space = next((ch for ch in value if ch.isspace()), None)
    if space is not None:
        raise ValueError(f"contains whitespace (U+{ord(space):04X})")
    return value


Identifier = Annotated[str, BeforeValidator(_safe), AfterValidator(_no_whitespace),
                       StringConstraints(min_length=1, max_length=100)]
"""Outlet, SKU, batch, sale, refund and transfer ids: 1-100 printable characters, no spaces."""

Text = Annotated[str, BeforeValidator(_safe_stripped),
                 StringConstraints(min_length=1, max_length=500)]
Key = Annotated[str, BeforeValidator(_safe), StringConstraints(min_length=1, max_length=200)]

EARLIEST_TIME = datetime(1970, 1, 1, tzinfo=UTC)
"""The earliest business time recorded (see the module docstring for why)."""
EARLIEST_DATE = EARLIEST_TIME.date()
LATEST_DATE = date(2999, 12, 31)
"""The latest expiry date (or sweep date) recorded."""
LATEST_OFFSET = timedelta(hours=14)
"""The largest UTC offset of a business time, either way: the real world's."""
MAX_POSITION = 2**63 - 1
"""The largest position: both stores keep positions in signed 64-bit integers."""
MAX_WAIT_SECONDS = 3600.0
"""The longest a read waits for the projections to reach a position."""


def _in_date_range(value: date) -> date:
    if not EARLIEST_DATE <= value <= LATEST_DATE:
        raise ValueError(f"{value} lies outside {EARLIEST_DATE}..{LATEST_DATE}")
    return value


BusinessDate = Annotated[date, AfterValidator(_in_date_range)]


def check_position(field: str, value: Any) -> int:
    """`value` if it is a position both stores can hold, else `InvalidInput` naming `field`."""
    if isinstance(value, bool) or not isinstance(value, int) or not (
            0 <= value <= MAX_POSITION):
        raise InvalidInput(field, f"must be a whole number from 0 to {MAX_POSITION}, "
                                  f"not {value!r}")
    return value


def check_seconds(field: str, value: Any) -> float:
    """`value` if it is a finite wait from 0 to `MAX_WAIT_SECONDS`, else `InvalidInput`."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
            math.isfinite(value) and 0 <= value <= MAX_WAIT_SECONDS):
        raise InvalidInput(field, f"must be a number of seconds from 0 to "
                                  f"{MAX_WAIT_SECONDS:g}, not {value!r}")
    return value


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


def _offset(offset: timedelta) -> str:
    sign, size = ("-", -offset) if offset < timedelta(0) else ("+", offset)
    return sign + str(size)


class Command(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    actor: Text = "unknown"
    occurred_at: datetime | None = None
    """Business time; the server's time when not given. May not lie in the future."""
    key: Key | None = None
    """Idempotency key; each command kind has a natural default."""

    @field_validator("occurred_at")
    @classmethod
    def _business_time(cls, value: datetime | None) -> datetime | None:
        if value is None:
            return None
        offset = value.utcoffset()
        if offset is None:
            value, offset = value.replace(tzinfo=UTC), timedelta(0)
        if offset % timedelta(minutes=1) or abs(offset) > LATEST_OFFSET:
            raise ValueError(f"UTC offset {_offset(offset)} is not whole minutes within "
                             "-14:00..+14:00")
        if value < EARLIEST_TIME:
            raise ValueError(f"lies before {EARLIEST_TIME.isoformat()}")
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
    expires_on: BusinessDate | None = None
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
    as_of: BusinessDate | None = None


class FoundBatch(BaseModel):
    """What a count knows of a batch it found that the ledger did not know at the outlet."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    expires_on: BusinessDate | None = None
    unit_cost: Money | None = None


class CountStock(Command):
    outlet: Identifier
    sku: Identifier
    counts: Annotated[dict[Identifier, Counted], Field(min_length=1, max_length=10_000)]
    whole_sku: bool = False
    count_id: Identifier | None = None
    found: Annotated[dict[Identifier, FoundBatch], Field(max_length=10_000)] = {}
    """Counted batches the ledger did not know here, declared found stock (their quantity is
    in `counts`); any other unknown batch is refused."""

    def default_key(self) -> str | None:
        return f"count:{self.outlet}:{self.sku}:{self.count_id}" if self.count_id else None

    @model_validator(mode="after")
    def _found_are_counted(self) -> CountStock:
        for batch_id in self.found:
            if self.counts.get(batch_id, 0) <= 0:
                raise ValueError(f"found: found batch {batch_id} needs a counted quantity "
                                 "above zero in counts")
        return self

    def fingerprint_fields(self) -> dict[str, Any]:
        # Counts recorded before found stock existed had no `found`: leave it out when empty,
        # so that their repeats still match.
        fields = super().fingerprint_fields()
        if not self.found:
            fields.pop("found", None)
        return fields


class HoldLot(Command):
    """Make a lot (a SKU's batch) unsellable at one outlet, or everywhere (`outlet` None)."""

    sku: Identifier
    batch_id: Identifier
    outlet: Identifier | None = None
    reason: Text


class ReleaseLot(Command):
    """End the hold of a lot in the scope it was held in."""

    sku: Identifier
    batch_id: Identifier
    outlet: Identifier | None = None
    reason: Text


class CorrectReceipt(Command):
    """Correct a receipt typed wrong: each field given is what the receipt should have said.

    `receipt` names it by its reference (the delivery note, else the batch id), or as
    `REFERENCE@VERSION` when several receipts share one."""

    outlet: Identifier
    sku: Identifier
    receipt: Text
    quantity: Quantity | None = None
    expires_on: BusinessDate | None = None
    unit_cost: Money | None = None
    batch_id: Identifier | None = None
    reason: Text

    @model_validator(mode="after")
    def _corrects_something(self) -> CorrectReceipt:
        if (self.quantity, self.expires_on, self.unit_cost, self.batch_id) == (None,) * 4:
            raise ValueError("quantity: give at least one of quantity, expires_on, "
                             "unit_cost or batch_id")
        return self


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


def _window(value: Any) -> Any:
    """A late-sales window as the text `parse_window` reads (`72h`, `none`); a `timedelta`
    is written in seconds."""
    if isinstance(value, timedelta):
        return f"{int(value.total_seconds())}s" if value.total_seconds() % 1 == 0 else (
            "a fraction of a second")
    return value


def _check_window(value: str) -> str:
    parse_window(value)  # raises ValueError saying what is wrong
    return value


LateSalesWindow = Annotated[str, BeforeValidator(_window), BeforeValidator(_safe),
                            AfterValidator(_check_window), StringConstraints(max_length=20)]
"""How far back a sale may be dated: `72h`, `3d`, `90m`, or `none` (any age)."""


class SetOutletPolicy(Command):
    """Open an outlet or change its settings; a setting not given keeps its value (a new
    outlet's: FEFO, no negative stock, sales of any age)."""

    outlet: Identifier
    allocation_policy: AllocationPolicy | None = None
    allow_negative: bool | None = None
    late_sales_window: LateSalesWindow | None = None


class SetStoreCurrency(Command):
    """Name the store's one currency and how many decimal places its unit costs may have;
    recorded once (`ledger.domain.store_settings`)."""

    currency: Annotated[str, StringConstraints(min_length=3, max_length=3)]
    cost_places: Annotated[int, BeforeValidator(_not_a_boolean), Field(ge=0, le=6)]

    def default_key(self) -> str | None:
        return f"store-currency:{self.currency.upper()}:{self.cost_places}"


CommandT = TypeVar("CommandT", bound=Command)

COMMAND_KINDS: dict[type[Command], str] = {
    ReceiveStock: "receive",
    SellStock: "sell",
    RefundSale: "refund",
    CountStock: "count",
    WriteOffStock: "write-off",
    TransferStock: "transfer",
    ReceiveTransfer: "transfer-receive",
    HoldLot: "hold",
    ReleaseLot: "release",
    CorrectReceipt: "correct-receipt",
}


def revalidated(command: CommandT) -> CommandT:
    """`command` validated again from the fields it was given. A command object may have been
    built with `model_construct`, which checks nothing; the fields given stay the fields set,
    so the command's fingerprint is the same."""
    given = command.model_dump(include=set(command.model_fields_set), warnings=False)
    return parse(type(command), **given)


def parse(command_class: type[CommandT], **data: Any) -> CommandT:
    """Validate raw input into a command, or raise `InvalidInput` naming the field."""
    try:
        return command_class.model_validate(data)
    except ValidationError as error:
        raise invalid_inputs(command_class, error)[0] from None


def invalid_inputs(command_class: type[Command], error: ValidationError) -> list[InvalidInput]:
    """Every field a validation of `command_class` refused, each named as `parse` names the
    first (a bulk import reports all of a row's, not only the first)."""
    found = []
    for detail in error.errors():
        location = ".".join(str(part) for part in detail["loc"]) or command_class.__name__
        message = detail["msg"]
        if message.startswith("Value error, "):
            message = message[len("Value error, "):]
        if ": " in message and location in ("", command_class.__name__):
            location, message = message.split(": ", 1)
        found.append(InvalidInput(location, message))
    return found
