"""The ranges parallel workers take must cover every position once, in order, none too long."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from projections.parallel import position_ranges


@given(st.integers(0, 10_000), st.integers(0, 10_000), st.integers(1, 500))
def test_ranges_cover_each_position_after_until_target_once(after: int, length: int,
                                                            span: int) -> None:
    target = after + length
    ranges = position_ranges(after, target, span)
    covered = [p for first, last in ranges for p in range(first, last + 1)]
    assert covered == list(range(after + 1, target + 1))
    assert all(1 <= last - first + 1 <= span for first, last in ranges)
