"""Validation at the boundary: `parse` turns raw input into a command or names the bad field."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger.app.commands import (
    MAX_LINES,
    CountStock,
    ReceiveStock,
    RefundSale,
    SellStock,
    TransferStock,
    WriteOffStock,
    parse,
)
from ledger.app.idempotency import fingerprint_of
from ledger.domain.errors import InvalidInput
from ledger.domain.quantities import MAX_QUANTITY
from tests.strategies import SKUS, skus

RECEIPT: dict[str, Any] = {
    "outlet": "NAIROBI-1",
    "sku": "AMOX-500",
    "batch_id": "AMX-2025-01",
    "quantity": 100,
}
SALE: dict[str, Any] = {
    "outlet": "NAIROBI-1",
    "sale_id": "POS-7-000123",
    "lines": [{"sku": "AMOX-500", "quantity": 2}],
}
TRANSFER: dict[str, Any] = {
    "from_outlet": "NAIROBI-1",
    "to_outlet": "MOMBASA-2",
    "sku": "RETRO-CLOCK",
    "quantity": 3,
    "transfer_id": "TR-1",
}


def _field_of(command_class: type[Any], **data: Any) -> str:
    with pytest.raises(InvalidInput) as raised:
        parse(command_class, **data)
    assert str(raised.value).startswith(f"{raised.value.field}: ")
    return raised.value.field


def test_a_valid_receipt_parses() -> None:
    command = parse(ReceiveStock, **RECEIPT, expires_on="2026-03-31", unit_cost="1.25")
    assert command.quantity == 100
    assert command.expires_on == date(2026, 3, 31)
    assert command.default_key() == "receipt:NAIROBI-1:AMOX-500:AMX-2025-01"


# --------------------------------------------------------------------------- quantities


@pytest.mark.parametrize("quantity", [0, -1, -100, MAX_QUANTITY + 1])
def test_rejects_a_quantity_out_of_range(quantity: int) -> None:
    assert _field_of(ReceiveStock, **{**RECEIPT, "quantity": quantity}) == "quantity"


@pytest.mark.parametrize("quantity", ["abc", "", "1e3x", 2.5, None, [3], {"n": 3}])
def test_rejects_a_quantity_that_is_not_a_whole_number(quantity: Any) -> None:
    assert _field_of(ReceiveStock, **{**RECEIPT, "quantity": quantity}) == "quantity"


@pytest.mark.parametrize("quantity", [True, False])
def test_rejects_a_boolean_as_a_quantity(quantity: bool) -> None:
    # A JSON `true` from a till is not "1 unit": a boolean is not a numeric quantity.
    assert _field_of(ReceiveStock, **{**RECEIPT, "quantity": quantity}) == "quantity"


@given(quantity=st.integers(max_value=0))
def test_rejects_every_non_positive_quantity(quantity: int) -> None:
    assert _field_of(WriteOffStock, outlet="NAIROBI-1", sku="AMOX-500", quantity=quantity,
                     reason="damaged") == "quantity"


@given(quantity=st.integers(min_value=1, max_value=MAX_QUANTITY))
def test_accepts_every_quantity_in_range(quantity: int) -> None:
    assert parse(ReceiveStock, **{**RECEIPT, "quantity": quantity}).quantity == quantity


def test_rejects_a_non_positive_quantity_on_a_sale_line_naming_the_line() -> None:
    lines = [{"sku": "AMOX-500", "quantity": 2}, {"sku": "RETRO-CLOCK", "quantity": 0}]
    assert _field_of(SellStock, **{**SALE, "lines": lines}) == "lines.1.quantity"


def test_rejects_a_negative_count() -> None:
    field = _field_of(CountStock, outlet="NAIROBI-1", sku="AMOX-500", counts={"AMX-1": -1})
    assert field.startswith("counts")


def test_accepts_a_count_of_zero() -> None:
    command = parse(CountStock, outlet="NAIROBI-1", sku="AMOX-500", counts={"AMX-1": 0})
    assert command.counts == {"AMX-1": 0}


def test_rejects_an_empty_count() -> None:
    assert _field_of(CountStock, outlet="NAIROBI-1", sku="AMOX-500", counts={}) == "counts"


# --------------------------------------------------------------------------- dates and times


@pytest.mark.parametrize("expires_on", ["2025-13-01", "2025-02-30", "tomorrow", "31/12/2025"])
def test_rejects_a_bad_expiry_date(expires_on: str) -> None:
    assert _field_of(ReceiveStock, **RECEIPT, expires_on=expires_on) == "expires_on"


@pytest.mark.parametrize("ahead", [timedelta(minutes=10), timedelta(days=1), timedelta(days=400)])
def test_rejects_an_occurred_at_in_the_future(ahead: timedelta) -> None:
    occurred_at = datetime.now(UTC) + ahead
    assert _field_of(ReceiveStock, **RECEIPT, occurred_at=occurred_at) == "occurred_at"


def test_rejects_a_naive_occurred_at_in_the_future() -> None:
    occurred_at = datetime.now(UTC).replace(tzinfo=None) + timedelta(hours=2)
    assert _field_of(SellStock, **SALE, occurred_at=occurred_at) == "occurred_at"


def test_rejects_an_occurred_at_that_is_not_a_time() -> None:
    assert _field_of(SellStock, **SALE, occurred_at="yesterday-ish") == "occurred_at"


def test_accepts_a_late_sale_that_keeps_its_own_occurred_at() -> None:
    occurred_at = datetime.now(UTC) - timedelta(days=3)
    assert parse(SellStock, **SALE, occurred_at=occurred_at).business_time() == occurred_at


def test_tolerates_a_till_clock_a_minute_ahead() -> None:
    occurred_at = datetime.now(UTC) + timedelta(minutes=1)
    assert parse(SellStock, **SALE, occurred_at=occurred_at).occurred_at == occurred_at


# --------------------------------------------------------------------------- identifiers


@pytest.mark.parametrize("field", ["outlet", "sku", "batch_id"])
def test_rejects_an_identifier_longer_than_100_characters(field: str) -> None:
    assert _field_of(ReceiveStock, **{**RECEIPT, field: "X" * 101}) == field


@pytest.mark.parametrize("field", ["outlet", "sku", "batch_id"])
def test_accepts_an_identifier_of_exactly_100_characters(field: str) -> None:
    command = parse(ReceiveStock, **{**RECEIPT, field: "X" * 100})
    assert getattr(command, field) == "X" * 100


@pytest.mark.parametrize("bad", ["AMOX 500", " AMOX-500", "AMOX-500\n", "AMOX\t500", "", "A\x00"])
@pytest.mark.parametrize("field", ["outlet", "sku", "batch_id"])
def test_rejects_whitespace_control_characters_and_empty_identifiers(
    field: str, bad: str
) -> None:
    assert _field_of(ReceiveStock, **{**RECEIPT, field: bad}) == field


def test_rejects_an_oversize_sale_id() -> None:
    assert _field_of(SellStock, **{**SALE, "sale_id": "S" * 101}) == "sale_id"


def test_rejects_an_oversize_sku_on_a_sale_line() -> None:
    lines = [{"sku": "AMOX-500" + "0" * 100, "quantity": 1}]
    assert _field_of(SellStock, **{**SALE, "lines": lines}) == "lines.0.sku"


def test_rejects_a_refund_id_with_a_space() -> None:
    field = _field_of(RefundSale, sale_id="S-1", refund_id="R 1",
                      lines=[{"sku": "AMOX-500", "quantity": 1}])
    assert field == "refund_id"


def test_rejects_an_identifier_that_is_not_a_string() -> None:
    assert _field_of(ReceiveStock, **{**RECEIPT, "outlet": 12345}) == "outlet"


def test_rejects_an_oversize_idempotency_key() -> None:
    assert _field_of(ReceiveStock, **RECEIPT, key="k" * 201) == "key"


def test_rejects_a_blank_write_off_reason() -> None:
    field = _field_of(WriteOffStock, outlet="NAIROBI-1", sku="AMOX-500", quantity=1,
                      reason="   ")
    assert field == "reason"


def test_rejects_an_unknown_field() -> None:
    assert _field_of(ReceiveStock, **RECEIPT, colour="blue") == "colour"


def test_rejects_a_negative_unit_cost() -> None:
    assert _field_of(ReceiveStock, **RECEIPT, unit_cost="-0.01") == "unit_cost"


# --------------------------------------------------------------------------- lines


def test_rejects_a_sale_with_no_lines() -> None:
    assert _field_of(SellStock, **{**SALE, "lines": []}) == "lines"


def test_rejects_a_sale_with_too_many_lines() -> None:
    lines = [{"sku": f"SKU-{n}", "quantity": 1} for n in range(MAX_LINES + 1)]
    assert _field_of(SellStock, **{**SALE, "lines": lines}) == "lines"


def test_accepts_a_sale_with_the_most_lines_allowed() -> None:
    lines = [{"sku": f"SKU-{n}", "quantity": 1} for n in range(MAX_LINES)]
    assert len(parse(SellStock, **{**SALE, "lines": lines}).lines) == MAX_LINES


def test_merges_lines_of_the_same_sku() -> None:
    lines = [
        {"sku": "AMOX-500", "quantity": 2},
        {"sku": "RETRO-CLOCK", "quantity": 1},
        {"sku": "AMOX-500", "quantity": 3},
    ]
    command = parse(SellStock, **{**SALE, "lines": lines})
    assert [(line.sku, line.quantity) for line in command.lines] == [
        ("AMOX-500", 5),
        ("RETRO-CLOCK", 1),
    ]


def test_merges_refund_lines_of_the_same_sku() -> None:
    lines = [{"sku": "AMOX-500", "quantity": 1}, {"sku": "AMOX-500", "quantity": 1}]
    command = parse(RefundSale, sale_id="S-1", refund_id="R-1", lines=lines)
    assert [(line.sku, line.quantity) for line in command.lines] == [("AMOX-500", 2)]


@given(lines=st.lists(st.tuples(skus, st.integers(1, 1000)), min_size=1, max_size=30))
def test_merged_lines_keep_each_sku_once_with_its_total(lines: list[tuple[str, int]]) -> None:
    command = parse(
        SellStock, **{**SALE, "lines": [{"sku": s, "quantity": q} for s, q in lines]}
    )
    totals: dict[str, int] = {}
    for sku, quantity in lines:
        totals[sku] = totals.get(sku, 0) + quantity
    assert {line.sku: line.quantity for line in command.lines} == totals
    assert len(command.lines) == len(totals)
    assert set(totals) <= set(SKUS)


def test_rejects_merged_lines_that_total_more_than_the_largest_quantity() -> None:
    lines = [{"sku": "AMOX-500", "quantity": MAX_QUANTITY}, {"sku": "AMOX-500", "quantity": 1}]
    assert _field_of(SellStock, **{**SALE, "lines": lines}) == "lines"


# --------------------------------------------------------------------------- transfers


def test_rejects_a_transfer_to_the_same_outlet() -> None:
    assert _field_of(TransferStock, **{**TRANSFER, "to_outlet": "NAIROBI-1"}) == "to_outlet"


def test_accepts_a_transfer_between_two_outlets() -> None:
    command = parse(TransferStock, **TRANSFER)
    assert (command.from_outlet, command.to_outlet) == ("NAIROBI-1", "MOMBASA-2")
    assert command.default_key() == "transfer:TR-1"


def test_rejects_a_transfer_of_nothing() -> None:
    assert _field_of(TransferStock, **{**TRANSFER, "quantity": 0}) == "quantity"


_JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**64)
    | st.text() | st.decimals(allow_nan=False, allow_infinity=False).map(str),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12)


@given(st.dictionaries(st.text(), _JSON_VALUES, max_size=6))
def test_a_fingerprint_is_the_sha256_of_the_standard_canonical_json(fields: dict[str, Any]) -> None:
    # Fingerprints are recorded with every command: the fast path must write the same bytes.
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"))
    assert fingerprint_of(fields) == hashlib.sha256(canonical.encode()).hexdigest()
