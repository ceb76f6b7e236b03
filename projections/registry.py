"""The read models this store keeps, in the order they are created."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from projections.holds import HOLDS
from projections.journal import JOURNAL
from projections.lots import LOTS
from projections.periods import PERIODS
from projections.projection import Projection
from projections.stock_levels import STOCK_LEVELS

PROJECTIONS: tuple[Projection[Any], ...] = (STOCK_LEVELS, JOURNAL, HOLDS, LOTS, PERIODS)

BY_NAME: Mapping[str, Projection[Any]] = MappingProxyType({p.name: p for p in PROJECTIONS})
"""The projections by name: how state rows, tracking records and the CLI name them."""
