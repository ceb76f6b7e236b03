"""Projection catch-up rate and rebuild time over everything the suite recorded."""

from __future__ import annotations

import time
from typing import Any

from ledger import Ledger
from projections import runner


def measure(ledger: Ledger) -> dict[str, Any]:
    """Catch the read models up from nothing, then rebuild them, timing both."""
    app = ledger.application
    runner.create_read_models(app)
    began = time.perf_counter()
    caught_up = runner.catch_up(app)
    catch_up_seconds = time.perf_counter() - began
    began = time.perf_counter()
    rebuilt = runner.rebuild(app)
    rebuild_seconds = time.perf_counter() - began
    return {
        "catch_up_events": caught_up,
        "catch_up_seconds": catch_up_seconds,
        "catch_up_events_per_s": caught_up / catch_up_seconds if catch_up_seconds else 0.0,
        "rebuild_events": rebuilt,
        "rebuild_seconds": rebuild_seconds,
    }
