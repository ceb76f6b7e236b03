"""Projection catch-up rate and rebuild time, if `projections.runner` provides them yet."""

from __future__ import annotations

import time
from typing import Any

from ledger import Ledger


def measure(ledger: Ledger) -> dict[str, Any]:
    """{'catch_up_events_per_s', 'catch_up_events', 'rebuild_seconds', 'rebuild_events'} or n/a."""
    try:
        from projections import runner
    except ImportError:
        return {"available": False, "reason": "projections.runner not importable"}
    catch_up = getattr(runner, "catch_up", None)
    rebuild = getattr(runner, "rebuild", None)
    if not callable(catch_up) or not callable(rebuild):
        return {"available": False,
                "reason": "projections.runner has no catch_up(app) / rebuild(app)"}
    app = ledger.application
    try:
        create = getattr(runner, "create_read_models", None)
        if callable(create):
            create(app)
        began = time.perf_counter()
        caught_up = int(catch_up(app))
        catch_up_seconds = time.perf_counter() - began
        began = time.perf_counter()
        rebuilt = int(rebuild(app))
        rebuild_seconds = time.perf_counter() - began
    except Exception as error:  # work in progress elsewhere: report it, do not stop the suite
        return {"available": False, "reason": f"failed: {type(error).__name__}: {error}"[:300]}
    return {
        "available": True,
        "catch_up_events": caught_up,
        "catch_up_seconds": catch_up_seconds,
        "catch_up_events_per_s": caught_up / catch_up_seconds if catch_up_seconds else 0.0,
        "rebuild_events": rebuilt,
        "rebuild_seconds": rebuild_seconds,
    }
