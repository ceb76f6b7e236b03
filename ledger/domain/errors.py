"""Errors the ledger raises.

Two families, kept apart on purpose (TigerBeetle's habit): a `Refusal` is an expected operating
outcome that the caller must handle (insufficient stock, refund beyond what was sold); an
`InvalidInput` is a malformed command that never reached a decision. Anything else is a bug.
"""

from __future__ import annotations

from datetime import datetime


class LedgerError(Exception):
    """Base class of every error the ledger raises on purpose."""


class InvalidInput(LedgerError):
    """A command was malformed; `field` names the offending input."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class Refusal(LedgerError):
    """The ledger understood the command and refused it by one of its rules."""

    rule = "refused"


class InsufficientStock(Refusal):
    """Too little stock for a movement. `at` names its business time when less was on the
    shelf then than is now (a movement dated before a receipt, say)."""

    rule = "insufficient_stock"

    def __init__(self, reference: str, outlet: str, sku: str, asked: int, available: int,
                 at: datetime | None = None) -> None:
        when = "" if at is None else f", on the shelf at {at.isoformat()}"
        super().__init__(
            f"{reference} line {sku}: asked {asked}, available {available} at outlet {outlet}"
            f"{when}"
        )
        self.reference = reference
        self.outlet = outlet
        self.sku = sku
        self.asked = asked
        self.available = available
        self.at = at


class LateSaleOutsideWindow(Refusal):
    """A sale dated further back than its outlet's late-sales window accepts."""

    rule = "late_sale_outside_window"

    def __init__(self, sale_id: str, outlet: str, occurred_at: datetime, now: datetime,
                 window: str) -> None:
        minutes = int((now - occurred_at).total_seconds() // 60)
        age = f"{minutes}m" if minutes < 120 else f"{minutes // 60}h"
        super().__init__(
            f"sale {sale_id} at outlet {outlet}: dated {occurred_at.isoformat()}, {age} "
            f"before the ledger's clock, beyond the outlet's late-sales window of {window} "
            f"(ledger outlet --outlet {outlet} --late-sales ...)")
        self.sale_id = sale_id
        self.outlet = outlet
        self.occurred_at = occurred_at
        self.window = window


class UnknownOutlet(Refusal):
    rule = "unknown_outlet"

    def __init__(self, outlet: str) -> None:
        super().__init__(f"unknown outlet {outlet}")
        self.outlet = outlet


class UnknownStockItem(Refusal):
    rule = "unknown_sku"

    def __init__(self, outlet: str, sku: str) -> None:
        super().__init__(f"unknown SKU {sku} at outlet {outlet}")
        self.outlet = outlet
        self.sku = sku


class UnknownBatch(Refusal):
    rule = "unknown_batch"

    def __init__(self, outlet: str, sku: str, batch_id: str) -> None:
        super().__init__(f"unknown batch {batch_id} of SKU {sku} at outlet {outlet}")
        self.batch_id = batch_id


class UnknownSale(Refusal):
    rule = "unknown_sale"

    def __init__(self, sale_id: str) -> None:
        super().__init__(f"unknown sale {sale_id}")
        self.sale_id = sale_id


class UnknownTransfer(Refusal):
    rule = "unknown_transfer"

    def __init__(self, transfer_id: str) -> None:
        super().__init__(f"unknown transfer {transfer_id}")
        self.transfer_id = transfer_id


class RefundExceedsSale(Refusal):
    rule = "refund_exceeds_sale"

    def __init__(self, sale_id: str, sku: str, asked: int, refundable: int) -> None:
        super().__init__(
            f"refund of sale {sale_id} line {sku}: asked {asked}, refundable {refundable}"
        )
        self.sale_id = sale_id
        self.sku = sku
        self.asked = asked
        self.refundable = refundable


class BatchConflict(Refusal):
    """A batch id was reused with different fixed attributes (expiry, cost)."""

    rule = "batch_conflict"


class DuplicateReference(Refusal):
    """A sale, refund or transfer id is already recorded for a different command."""

    rule = "duplicate_reference"


class TransferAlreadyReceived(Refusal):
    rule = "transfer_already_received"


class IdempotencyKeyReused(Refusal):
    rule = "idempotency_key_reused"

    def __init__(self, key: str, recorded_kind: str, because: str | None = None) -> None:
        super().__init__(
            f"idempotency key {key!r} was already used for a different {recorded_kind} command"
            + (f"; {because}" if because else "")
        )
        self.key = key
        self.recorded_kind = recorded_kind
        self.because = because
        """Why the key was taken, when the command's own id is (a sale's key is its id)."""


class ConcurrencyConflict(LedgerError):
    """Retries against fresh state were exhausted; nothing was recorded."""


class StoreNotInitialised(LedgerError):
    """The store has no ledger tables yet (a fresh database): nothing was read or written."""

    def __init__(self, missing: list[str]) -> None:
        super().__init__(
            f"the store is not initialised (no table {', '.join(missing)}): run `ledger init` "
            "with the same --db, or open it with Ledger.open(url, create_tables=True)")
        self.missing = missing


class InvariantBroken(LedgerError):
    """The recorded history contradicts a rule the write side enforces: a bug or tampering."""


def _scope(outlet: str | None) -> str:
    return "everywhere" if outlet is None else f"at outlet {outlet}"


class LotAlreadyHeld(Refusal):
    """A lot is already held in that scope; release it first to hold it for another reason."""

    rule = "lot_already_held"

    def __init__(self, sku: str, batch_id: str, outlet: str | None, reason: str) -> None:
        super().__init__(f"batch {batch_id} of SKU {sku} is already held {_scope(outlet)} "
                         f"({reason})")
        self.sku = sku
        self.batch_id = batch_id
        self.outlet = outlet


class LotNotHeld(Refusal):
    """A release names a hold that is not on (in that scope)."""

    rule = "lot_not_held"

    def __init__(self, sku: str, batch_id: str, outlet: str | None,
                 held_in: tuple[str | None, ...] = ()) -> None:
        elsewhere = ("" if not held_in else "; it is held "
                     + ", ".join(_scope(o) for o in held_in)
                     + ": release it in the scope it was held in")
        super().__init__(f"batch {batch_id} of SKU {sku} is not held {_scope(outlet)}"
                         + elsewhere)
        self.sku = sku
        self.batch_id = batch_id
        self.outlet = outlet


class UnknownReceipt(Refusal):
    """A correction names a receipt the stock item does not have (or more than one)."""

    rule = "unknown_receipt"


class CorrectionRefused(Refusal):
    """A correction of a receipt would contradict what already happened to its units: take
    away units already sold or moved, or change a batch the expiry sweep wrote off."""

    rule = "correction_refused"
