"""Corrections of receipts typed wrong: which receipt, what it now says, and whether it may.

Pure functions over plain data. A correction never edits the receipt: it is a new movement
(`ReceiptCorrected`) naming the receipt, with each field before and after. What it may not do
is contradict what already happened to the units: the units of one batch at one outlet are
alike, so a correction may take away at most what the batch still holds there (the rest are
sold, moved or written off), may move a receipt to another batch id only while all its units
are still on the shelf, and may not change the expiry of a batch the sweep has written off.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import date

from ledger.domain.errors import CorrectionRefused, UnknownReceipt


@dataclass(frozen=True, slots=True)
class Receipt:
    """A receipt as the ledger believes it now: as recorded, with its corrections applied."""

    version: int
    """Its `BatchReceived`'s version in the stock item's stream: names it for good."""
    reference: str
    batch_id: str
    quantity: int
    expires_on: date | None
    unit_cost: str | None
    shortfall_settled: int = 0


@dataclass(frozen=True, slots=True)
class CorrectionRequest:
    """What a correction says the receipt should have said; None: that field was right."""

    quantity: int | None = None
    expires_on: date | None = None
    unit_cost: str | None = None
    batch_id: str | None = None


@dataclass(frozen=True, slots=True)
class BatchFacts:
    """What the decision needs of a batch at the outlet, as it stands now."""

    quantity: int
    expires_on: date | None
    written_off_as_expired: bool
    sent_to: tuple[str, ...] = ()
    """The outlets the batch's units were dispatched to from here: each keeps the expiry its
    units arrived with, which a correction here would not reach."""


def corrected(receipt: Receipt, quantity: int, expires_on: date | None,
              unit_cost: str | None, batch_id: str | None) -> Receipt:
    """`receipt` after one recorded correction (its "after" values)."""
    return replace(receipt, quantity=quantity, expires_on=expires_on, unit_cost=unit_cost,
                   batch_id=batch_id or receipt.batch_id)


def find_receipt(receipts: Sequence[Receipt], outlet: str, sku: str, named: str) -> Receipt:
    """The receipt `named` by its reference, or `REFERENCE@VERSION` when several receipts
    share a reference; `UnknownReceipt` saying which exist when none or several match."""
    reference, _, version = named.rpartition("@")
    if reference and version.isdigit():
        found = [r for r in receipts if r.reference == reference and r.version == int(version)]
    else:
        found = [r for r in receipts if r.reference == named]
    if len(found) == 1:
        return found[0]
    if not found:
        known = ", ".join(sorted({r.reference for r in receipts})[:10]) or "none"
        raise UnknownReceipt(f"no receipt {named} of SKU {sku} at outlet {outlet} "
                             f"(its receipts: {known})")
    versions = ", ".join(f"{r.reference}@{r.version}" for r in found)
    raise UnknownReceipt(f"receipt {named} of SKU {sku} at outlet {outlet} is ambiguous: "
                         f"name one of {versions}")


def plan_correction(outlet: str, sku: str, receipt: Receipt, request: CorrectionRequest,
                    batch: BatchFacts, target: BatchFacts | None) -> Receipt:
    """The receipt as corrected, or `CorrectionRefused` saying why it may not be.

    `batch` is the receipt's batch at the outlet; `target` the batch a corrected batch id
    names, if the outlet holds one by that id."""
    after = Receipt(
        version=receipt.version, reference=receipt.reference,
        batch_id=request.batch_id or receipt.batch_id,
        quantity=receipt.quantity if request.quantity is None else request.quantity,
        expires_on=receipt.expires_on if request.expires_on is None else request.expires_on,
        unit_cost=receipt.unit_cost if request.unit_cost is None else request.unit_cost,
        shortfall_settled=receipt.shortfall_settled)
    what = f"correction of receipt {receipt.reference} ({sku} batch {receipt.batch_id} at " \
           f"outlet {outlet})"
    if after == receipt:
        raise CorrectionRefused(f"{what}: it changes nothing")
    if after.quantity < receipt.shortfall_settled:
        raise CorrectionRefused(
            f"{what}: quantity {after.quantity} is below the {receipt.shortfall_settled} "
            "units of it that settled stock already sold into negative")
    taken_away = receipt.quantity - after.quantity
    if taken_away > batch.quantity:
        raise CorrectionRefused(
            f"{what}: quantity {after.quantity} would take away {taken_away} units, but the "
            f"batch holds only {batch.quantity} here: the rest are already sold, moved or "
            "written off, and a correction never takes away units already sold")
    moved = after.batch_id != receipt.batch_id
    if (moved or after.expires_on != receipt.expires_on) and batch.sent_to:
        raise CorrectionRefused(
            f"{what}: units of batch {receipt.batch_id} were transferred to outlet(s) "
            f"{', '.join(batch.sent_to)}, which hold them under the batch id and expiry they "
            "left with; a correction here would leave those units wrong there. Correct the "
            "quantity or cost only, or write the transferred units off and receive them again")
    left_here = batch.quantity - max(taken_away, 0)
    if moved and left_here < after.quantity - receipt.shortfall_settled:
        raise CorrectionRefused(
            f"{what}: batch id {after.batch_id} would move {after.quantity} units, but the "
            f"batch holds only {left_here} of them here: units already sold stay in the "
            "batch they were sold from")
    if after.expires_on != receipt.expires_on and batch.written_off_as_expired and not moved:
        raise CorrectionRefused(
            f"{what}: batch {receipt.batch_id} was written off as expired; its expiry date "
            "can no longer change what happened to it")
    if moved and target is not None and target.expires_on != after.expires_on:
        raise CorrectionRefused(
            f"{what}: batch {after.batch_id} is recorded here with expiry "
            f"{target.expires_on}, not {after.expires_on}")
    return after
