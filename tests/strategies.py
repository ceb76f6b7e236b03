"""Hypothesis strategies: for the pure core (batches, quantities, dates and memorable SKUs),
and the one strategy of whole histories of commands (`histories`, run by `apply_history`) that
the audit and projection properties share."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, TypeAlias

from hypothesis import strategies as st

from ledger.domain.allocation import BatchStock
from ledger.domain.errors import LedgerError
from ledger.domain.quantities import BatchTake
from ledger.domain.rules import BatchExpiry

if TYPE_CHECKING:
    from ledger.app.service import Ledger

TODAY = date(2025, 6, 15)
"""A fixed business day for the pure core: properties must not depend on the wall clock."""

SKUS: tuple[str, ...] = (
    "AMOX-500",
    "RETRO-CLOCK",
    "PARA-1G",
    "IBU-200",
    "COUGH-SYRUP-100ML",
    "TEA-CHAI-250",
)
BATCH_IDS: tuple[str, ...] = tuple(f"LOT-{n:03d}" for n in range(1, 41))

skus = st.sampled_from(SKUS)
batch_ids = st.sampled_from(BATCH_IDS)

quantities = st.integers(min_value=1, max_value=60)
"""A positive quantity to sell, refund or write off."""

batch_quantities = st.integers(min_value=-5, max_value=40)
"""What a batch holds: mostly positive, sometimes empty or negative (sold into negative)."""

days = st.integers(min_value=-20, max_value=20)
business_dates = days.map(lambda offset: TODAY + timedelta(days=offset))
"""Dates near TODAY, so that expiry dates and sale dates often meet."""

expiry_dates = st.one_of(st.none(), business_dates)
"""An optional expiry date; None is a batch that never expires."""


@st.composite
def batch_stocks(
    draw: st.DrawFn, *, min_size: int = 0, max_size: int = 12
) -> list[BatchStock]:
    """Batches of one stock item: distinct ids and distinct received order, shuffled."""
    ids = draw(st.lists(batch_ids, min_size=min_size, max_size=max_size, unique=True))
    seqs = draw(
        st.lists(
            st.integers(min_value=0, max_value=1000),
            min_size=len(ids),
            max_size=len(ids),
            unique=True,
        )
    )
    # Expiry dates drawn from a narrow range so that ties are common.
    narrow_expiry = st.one_of(
        st.none(), st.integers(-4, 4).map(lambda offset: TODAY + timedelta(days=offset))
    )
    return [
        BatchStock(
            batch_id=batch_id,
            quantity=draw(batch_quantities),
            expires_on=draw(st.one_of(narrow_expiry, expiry_dates)),
            received_seq=seq,
        )
        for batch_id, seq in zip(ids, seqs, strict=True)
    ]


@st.composite
def sold_takes(draw: st.DrawFn) -> list[BatchTake]:
    """What one sale line took, batch by batch; a batch may appear on several takes."""
    return draw(
        st.lists(
            st.builds(BatchTake, batch_id=st.sampled_from(BATCH_IDS[:6]), quantity=quantities),
            min_size=1,
            max_size=8,
        )
    )


@st.composite
def sold_and_refunded(draw: st.DrawFn) -> tuple[list[BatchTake], dict[str, int]]:
    """A sale line's takes and a consistent record of what was already refunded per batch."""
    takes = draw(sold_takes())
    sold: dict[str, int] = {}
    for take in takes:
        sold[take.batch_id] = sold.get(take.batch_id, 0) + take.quantity
    refunded = {
        batch_id: draw(st.integers(min_value=0, max_value=total))
        for batch_id, total in sold.items()
        if draw(st.booleans())
    }
    return takes, refunded


@st.composite
def batch_expiries(draw: st.DrawFn) -> list[BatchExpiry]:
    ids = draw(st.lists(batch_ids, max_size=10, unique=True))
    return [
        BatchExpiry(
            batch_id=batch_id,
            expires_on=draw(expiry_dates),
            quantity=draw(batch_quantities),
            already_expired=draw(st.booleans()),
        )
        for batch_id in ids
    ]


stock_levels = st.dictionaries(batch_ids, st.integers(min_value=-5, max_value=40), max_size=8)
"""What the ledger expects per batch at the moment of a count."""

counted_levels = st.dictionaries(batch_ids, st.integers(min_value=0, max_value=40), max_size=8)
"""What a stock take counted per batch."""


# --------------------------------------------------------------------------- histories

HISTORY_OUTLETS: tuple[str, str] = ("OUT-A", "OUT-B")
HISTORY_SKUS: tuple[str, ...] = ("AMOX-500", "PARA-1G", "IBU-200")
HISTORY_BATCHES: tuple[str, ...] = ("L1", "L2", "L3", "L4")

Line: TypeAlias = tuple[str, int]


@dataclass(frozen=True)
class Receive:
    outlet: str
    sku: str
    batch_id: str
    quantity: int
    expires_in_days: int | None
    """Expiry relative to the day the history runs; None: the batch never expires."""


@dataclass(frozen=True)
class Sell:
    outlet: str
    lines: tuple[Line, ...]


@dataclass(frozen=True)
class Refund:
    sale: int
    """Which earlier sale, modulo the number of sales made so far (none yet: skipped)."""
    quantity: int
    """Refunded of each line of the sale, up to what the line sold: a second refund of the
    same sale may then ask for more than is left, and be refused."""
    write_off: bool


@dataclass(frozen=True)
class Count:
    outlet: str
    sku: str
    batch: int
    """Which of the stock item's batches, modulo their number (a count of a batch it never
    held is refused before anything is decided: the unit tests cover that)."""
    counted: int
    whole_sku: bool


@dataclass(frozen=True)
class WriteOff:
    outlet: str
    sku: str
    quantity: int
    batch_id: str | None


@dataclass(frozen=True)
class Transfer:
    from_outlet: str
    sku: str
    quantity: int
    in_transit: bool

    @property
    def to_outlet(self) -> str:
        return HISTORY_OUTLETS[1 - HISTORY_OUTLETS.index(self.from_outlet)]


@dataclass(frozen=True)
class ReceiveTransfer:
    transfer: int
    """Which earlier transfer in transit, modulo their number (none yet: skipped)."""


@dataclass(frozen=True)
class SetReorderLevel:
    outlet: str
    sku: str
    level: int | None


@dataclass(frozen=True)
class Expire:
    as_of_days: int
    """The sweep's day relative to the day the history runs (never in the future)."""


@dataclass(frozen=True)
class SetPolicy:
    outlet: str
    fifo: bool
    allow_negative: bool


Step: TypeAlias = (Receive | Sell | Refund | Count | WriteOff | Transfer | ReceiveTransfer
                   | SetReorderLevel | Expire | SetPolicy)

history_outlets = st.sampled_from(HISTORY_OUTLETS)
history_skus = st.sampled_from(HISTORY_SKUS)
history_batches = st.sampled_from(HISTORY_BATCHES)

receipts = st.builds(Receive, history_outlets, history_skus, history_batches,
                     st.integers(1, 30), st.one_of(st.none(), st.integers(-3, 6)))
"""A receipt, sometimes of a batch whose expiry has come already or comes within days."""

steps: st.SearchStrategy[Step] = st.one_of(
    receipts,
    st.builds(Sell, history_outlets,
              st.lists(st.tuples(history_skus, st.integers(1, 12)), min_size=1, max_size=3,
                       unique_by=lambda line: line[0]).map(tuple)),
    st.builds(Refund, st.integers(0, 50), st.integers(1, 6), st.booleans()),
    st.builds(Count, history_outlets, history_skus, st.integers(0, 3), st.integers(0, 25),
              st.booleans()),
    st.builds(WriteOff, history_outlets, history_skus, st.integers(1, 8),
              st.one_of(st.none(), history_batches)),
    st.builds(Transfer, history_outlets, history_skus, st.integers(1, 10), st.booleans()),
    st.builds(ReceiveTransfer, st.integers(0, 50)),
    st.builds(SetReorderLevel, history_outlets, history_skus,
              st.one_of(st.none(), st.integers(0, 20))),
    st.builds(Expire, st.integers(-2, 0)),
    st.builds(SetPolicy, history_outlets, st.booleans(), st.booleans()),
)
"""One command of any kind; many are refused where they land (no stock, unknown sale...)."""


def histories(*, min_steps: int = 6, max_steps: int = 30) -> st.SearchStrategy[list[Step]]:
    """A few receipts first (so that most histories have stock to move), then anything."""
    return st.builds(lambda first, rest: first + rest,
                     st.lists(receipts, min_size=2, max_size=6),
                     st.lists(steps, min_size=min_steps, max_size=max_steps))


def apply_history(ledger: Ledger, history: Sequence[Step]) -> None:
    """Run a history's commands in order; refusals (insufficient stock...) are part of life.

    Sale, refund and transfer ids and delivery references are numbered by step."""
    today = datetime.now(UTC).date()
    sales: list[tuple[str, tuple[Line, ...]]] = []
    transfers: list[str] = []
    for n, step in enumerate(history):
        try:
            if isinstance(step, Receive):
                ledger.receive(outlet=step.outlet, sku=step.sku, batch_id=step.batch_id,
                               quantity=step.quantity, reference=f"D{n}",
                               expires_on=None if step.expires_in_days is None
                               else today + timedelta(days=step.expires_in_days))
            elif isinstance(step, Sell):
                ledger.sell(outlet=step.outlet, sale_id=f"S{n}", lines=list(step.lines))
                sales.append((f"S{n}", step.lines))
            elif isinstance(step, Refund):
                if sales:
                    sale_id, lines = sales[step.sale % len(sales)]
                    ledger.refund(sale_id=sale_id, refund_id=f"R{n}", write_off=step.write_off,
                                  lines=[(sku, min(step.quantity, sold)) for sku, sold in lines])
            elif isinstance(step, Count):
                held = sorted(ledger.stock_item(step.outlet, step.sku).batches)
                if held:
                    ledger.count(outlet=step.outlet, sku=step.sku,
                                 counts={held[step.batch % len(held)]: step.counted},
                                 whole_sku=step.whole_sku, count_id=f"C{n}")
            elif isinstance(step, WriteOff):
                ledger.write_off(outlet=step.outlet, sku=step.sku, quantity=step.quantity,
                                 batch_id=step.batch_id, reason="damaged", reference=f"W{n}")
            elif isinstance(step, Transfer):
                ledger.transfer(from_outlet=step.from_outlet, to_outlet=step.to_outlet,
                                sku=step.sku, quantity=step.quantity, transfer_id=f"T{n}",
                                in_transit=step.in_transit)
                if step.in_transit:
                    transfers.append(f"T{n}")
            elif isinstance(step, ReceiveTransfer):
                if transfers:
                    ledger.receive_transfer(
                        transfer_id=transfers[step.transfer % len(transfers)])
            elif isinstance(step, SetReorderLevel):
                ledger.set_reorder_level(outlet=step.outlet, sku=step.sku, level=step.level)
            elif isinstance(step, Expire):
                ledger.expire(as_of=today + timedelta(days=step.as_of_days))
            else:
                ledger.set_outlet_policy(outlet=step.outlet,
                                         allocation_policy="fifo" if step.fifo else "fefo",
                                         allow_negative=step.allow_negative)
        except LedgerError:
            pass
