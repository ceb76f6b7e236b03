"""What the boundary lets in: every string, time, date and position a command or read takes is
checked against what every store and read model can hold (`ledger.app.commands`)."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger.app import commands as c
from ledger.app.commands import (
    EARLIEST_DATE,
    EARLIEST_TIME,
    LATEST_DATE,
    MAX_POSITION,
    CountStock,
    ExpireBatches,
    ReceiveStock,
    ReceiveTransfer,
    RefundSale,
    SellStock,
    SetOutletPolicy,
    SetReorderLevel,
    TransferStock,
    WriteOffStock,
    parse,
    unsafe_character,
)
from ledger.domain.errors import InvalidInput

LINE = [{"sku": "AMOX-500", "quantity": 1}]
VALID: dict[type[c.Command], dict[str, Any]] = {
    ReceiveStock: {"outlet": "NAIROBI-1", "sku": "AMOX-500", "batch_id": "B1", "quantity": 5,
                   "reference": "DN-1"},
    SellStock: {"outlet": "NAIROBI-1", "sale_id": "S-1", "lines": LINE},
    RefundSale: {"sale_id": "S-1", "refund_id": "R-1", "lines": LINE},
    ExpireBatches: {"outlet": "NAIROBI-1", "sku": "AMOX-500"},
    CountStock: {"outlet": "NAIROBI-1", "sku": "AMOX-500", "counts": {"B1": 3},
                 "count_id": "C-1"},
    WriteOffStock: {"outlet": "NAIROBI-1", "sku": "AMOX-500", "quantity": 1, "batch_id": "B1",
                    "reason": "damaged", "reference": "W-1"},
    TransferStock: {"from_outlet": "NAIROBI-1", "to_outlet": "MOMBASA-2", "sku": "AMOX-500",
                    "quantity": 1, "transfer_id": "T-1"},
    ReceiveTransfer: {"transfer_id": "T-1"},
    SetReorderLevel: {"outlet": "NAIROBI-1", "sku": "AMOX-500", "level": 3},
    SetOutletPolicy: {"outlet": "NAIROBI-1"},
}
"""One valid command of each kind, with every optional string filled in."""

STRING_FIELDS: list[tuple[type[c.Command], str]] = sorted(
    {(kind, name) for kind, fields in VALID.items()
     for name, value in {**fields, "actor": "till-1", "key": "K-1"}.items()
     if isinstance(value, str)}, key=lambda pair: (pair[0].__name__, pair[1]))

UNSAFE = {
    "nul": "\x00",
    "newline": "\n",
    "carriage-return": "\r",
    "tab": "\t",
    "escape": "\x1b",
    "delete": "\x7f",
    "c1-next-line": "\x85",
    "c1-csi": "\x9b",
    "line-separator": "\u2028",
    "paragraph-separator": "\u2029",
    "right-to-left-override": "\u202e",
    "left-to-right-embedding": "\u202a",
    "pop-directional": "\u202c",
    "first-strong-isolate": "\u2068",
    "pop-isolate": "\u2069",
    "lone-high-surrogate": "\ud800",
    "lone-low-surrogate": "\udfff",
}


def _refused_field(kind: type[c.Command], **data: Any) -> str:
    with pytest.raises(InvalidInput) as raised:
        parse(kind, **data)
    return raised.value.field


def _with(kind: type[c.Command], name: str, value: Any) -> dict[str, Any]:
    return {**VALID[kind], name: value}


def test_the_valid_commands_are_valid() -> None:
    for kind, fields in VALID.items():
        parse(kind, **fields, actor="till-1", key="K-1")


# --------------------------------------------------------------------------- strings


@pytest.mark.parametrize("character", UNSAFE.values(), ids=UNSAFE.keys())
@pytest.mark.parametrize(("kind", "name"), STRING_FIELDS,
                         ids=[f"{k.__name__}.{n}" for k, n in STRING_FIELDS])
def test_refuses_an_unsafe_character_in_every_string_field(
        kind: type[c.Command], name: str, character: str) -> None:
    value = f"AB{character}CD"
    assert _refused_field(kind, **_with(kind, name, value)) == name


@pytest.mark.parametrize("character", UNSAFE.values(), ids=UNSAFE.keys())
def test_refuses_an_unsafe_character_in_a_sale_line_and_a_counted_batch(character: str) -> None:
    lines = [{"sku": f"AMOX{character}", "quantity": 1}]
    assert _refused_field(SellStock, **_with(SellStock, "lines", lines)) == "lines.0.sku"
    assert _refused_field(RefundSale, **_with(RefundSale, "lines", lines)) == "lines.0.sku"
    field = _refused_field(CountStock, **_with(CountStock, "counts", {f"B{character}": 1}))
    assert field.startswith("counts")


@pytest.mark.parametrize("name", ["actor", "reason", "reference", "key"])
def test_a_nul_byte_is_refused_naming_the_character(name: str) -> None:
    with pytest.raises(InvalidInput) as raised:
        parse(WriteOffStock, **_with(WriteOffStock, name, "damaged\x00"))
    assert raised.value.field == name
    assert "U+0000" in raised.value.message


def test_a_lone_surrogate_is_refused_as_not_unicode() -> None:
    with pytest.raises(InvalidInput) as raised:
        parse(ReceiveStock, **VALID[ReceiveStock], actor="till\udcff")
    assert raised.value.field == "actor"
    assert "U+DCFF" in raised.value.message and "surrogate" in raised.value.message


def test_the_message_never_holds_the_refused_character() -> None:
    with pytest.raises(InvalidInput) as raised:
        parse(ReceiveStock, **VALID[ReceiveStock], actor="evil\n2026-01-01 received FAKE")
    assert raised.value.message.isprintable()


@pytest.mark.parametrize("text", [
    "Zoë Wanjiků", "مدير المتجر", "שלום", "店长 王", "ऑपरेटर", "nurse 👩‍⚕️ (ZWJ)",
    "\u0641\u0631\u0648\u0634\u06af\u0627\u0647\u200c\u0647\u0627",  # Persian, with a ZWNJ
    "DOMAIN\\user", "quote ' \" ` $ { } ;", "\u200eleft-to-right mark",
])
def test_accepts_printable_text_in_any_script(text: str) -> None:
    command = parse(WriteOffStock, **VALID[WriteOffStock], actor=text, key=text)
    assert (command.actor, command.key) == (text, text)
    assert parse(WriteOffStock, **_with(WriteOffStock, "reason", text)).reason == text
    assert parse(ReceiveStock, **_with(ReceiveStock, "reference", text)).reference == text


@pytest.mark.parametrize("identifier", ["NAIRÓBI-1", "АПТЕКА-7", "药店-3", "LOT/2026#4"])
def test_accepts_printable_identifiers_in_any_script(identifier: str) -> None:
    assert parse(ReceiveStock, **_with(ReceiveStock, "outlet", identifier)).outlet == identifier


@pytest.mark.parametrize("space", [" ", "\u00a0", "\u3000", "\u2003"])
def test_still_refuses_whitespace_in_an_identifier(space: str) -> None:
    assert _refused_field(ReceiveStock, **_with(ReceiveStock, "sku", f"AMOX{space}500")) == "sku"


def test_text_is_stripped_of_surrounding_whitespace_as_before() -> None:
    command = parse(WriteOffStock, **_with(WriteOffStock, "reason", "  damaged in transit \n"))
    assert command.reason == "damaged in transit"


@given(st.text())
def test_unsafe_character_finds_exactly_the_documented_characters(text: str) -> None:
    documented = [ch for ch in text if ord(ch) < 0x20 or 0x7F <= ord(ch) <= 0x9F
                  or ch in "\u2028\u2029\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
                  or 0xD800 <= ord(ch) <= 0xDFFF]
    found = unsafe_character(text)
    if documented:
        assert found is not None and f"U+{ord(documented[0]):04X}" in found
    else:
        assert found is None
        text.encode("utf-8")  # every accepted string has a UTF-8 form


# --------------------------------------------------------------------------- times


@pytest.mark.parametrize("moment", [
    "0001-01-01T00:00+14:00",  # before year 1 in UTC: PostgreSQL cannot hand it back
    "0001-01-01T00:00:00",
    "1969-12-31T23:59:59.999999+00:00",
    "1970-01-01T00:00:00+01:00",
    "1900-06-01T12:00:00Z",
])
def test_refuses_an_occurred_at_before_the_earliest_time(moment: str) -> None:
    with pytest.raises(InvalidInput) as raised:
        parse(SellStock, **VALID[SellStock], occurred_at=moment)
    assert raised.value.field == "occurred_at"
    assert "1970-01-01" in raised.value.message


def test_accepts_the_earliest_time() -> None:
    command = parse(SellStock, **VALID[SellStock], occurred_at="1970-01-01T00:00:00Z")
    assert command.occurred_at == EARLIEST_TIME


@pytest.mark.parametrize("offset", [
    timedelta(hours=14, minutes=1), timedelta(hours=-14, minutes=-1), timedelta(hours=23),
    timedelta(seconds=30), timedelta(microseconds=1), timedelta(hours=5, seconds=1),
])
def test_refuses_a_time_zone_offset_no_store_can_read_back(offset: timedelta) -> None:
    # PostgreSQL reads offsets up to 15:59 and no fractions of a second from COPY; real zones
    # lie within -12:00..+14:00 in whole minutes (since 1972).
    moment = datetime(2026, 1, 26, 9, 0, tzinfo=timezone(offset))
    assert _refused_field(SellStock, **VALID[SellStock], occurred_at=moment) == "occurred_at"


@pytest.mark.parametrize("offset", [timedelta(hours=14), timedelta(hours=-12),
                                    timedelta(hours=5, minutes=45), timedelta(0)])
def test_accepts_every_real_time_zone_offset(offset: timedelta) -> None:
    moment = datetime(2026, 1, 26, 9, 0, tzinfo=timezone(offset))
    assert parse(SellStock, **VALID[SellStock], occurred_at=moment).occurred_at == moment


def test_a_time_without_a_zone_is_utc_as_before() -> None:
    command = parse(SellStock, **VALID[SellStock], occurred_at="2026-01-26T09:00:00")
    assert command.occurred_at == datetime(2026, 1, 26, 9, 0, tzinfo=UTC)


def test_refuses_the_far_future_in_any_offset() -> None:
    moment = "9999-12-31T23:59:59-14:00"  # after year 9999 in UTC
    assert _refused_field(SellStock, **VALID[SellStock], occurred_at=moment) == "occurred_at"


# --------------------------------------------------------------------------- dates


@pytest.mark.parametrize("expires_on", ["0001-01-01", "1969-12-31", "9999-12-31", "3000-01-01"])
def test_refuses_an_expiry_date_outside_the_range(expires_on: str) -> None:
    with pytest.raises(InvalidInput) as raised:
        parse(ReceiveStock, **VALID[ReceiveStock], expires_on=expires_on)
    assert raised.value.field == "expires_on"
    assert str(EARLIEST_DATE) in raised.value.message and str(LATEST_DATE) in raised.value.message


@pytest.mark.parametrize("expires_on", [EARLIEST_DATE, LATEST_DATE, date(2027, 3, 1)])
def test_accepts_an_expiry_date_in_the_range(expires_on: date) -> None:
    assert parse(ReceiveStock, **VALID[ReceiveStock], expires_on=expires_on).expires_on == (
        expires_on)


@pytest.mark.parametrize("as_of", ["0001-01-01", "1969-12-31"])
def test_refuses_an_expiry_sweep_as_of_before_the_earliest_date(as_of: str) -> None:
    assert _refused_field(ExpireBatches, **VALID[ExpireBatches], as_of=as_of) == "as_of"


# --------------------------------------------------------------------------- positions


@pytest.mark.parametrize("position", [-1, MAX_POSITION + 1, 2**64, 10**30])
def test_refuses_a_position_out_of_range(position: int) -> None:
    with pytest.raises(InvalidInput) as raised:
        c.check_position("position", position)
    assert raised.value.field == "position"
    assert str(MAX_POSITION) in raised.value.message


@pytest.mark.parametrize("position", [True, 1.5, "12", None])
def test_refuses_a_position_that_is_not_a_whole_number(position: Any) -> None:
    with pytest.raises(InvalidInput):
        c.check_position("position", position)


@pytest.mark.parametrize("position", [0, 1, MAX_POSITION])
def test_accepts_a_position_in_range(position: int) -> None:
    assert c.check_position("position", position) == position


@pytest.mark.parametrize("seconds", [math.nan, math.inf, -math.inf, -0.5,
                                     c.MAX_WAIT_SECONDS + 1, True, "3"])
def test_refuses_a_wait_that_is_not_a_finite_bounded_number_of_seconds(seconds: Any) -> None:
    with pytest.raises(InvalidInput) as raised:
        c.check_seconds("timeout", seconds)
    assert raised.value.field == "timeout"


@pytest.mark.parametrize("seconds", [0, 0.0, 2.5, c.MAX_WAIT_SECONDS])
def test_accepts_a_wait_in_range(seconds: float) -> None:
    assert c.check_seconds("timeout", seconds) == seconds
