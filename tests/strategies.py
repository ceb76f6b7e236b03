"""Hypothesis strategies for the pure core: batches, quantities, dates and memorable SKUs."""

from __future__ import annotations

from datetime import date, timedelta

from hypothesis import strategies as st

from ledger.domain.allocation import BatchStock
from ledger.domain.quantities import BatchTake
from ledger.domain.rules import BatchExpiry

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
