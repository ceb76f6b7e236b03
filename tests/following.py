"""Run `projections run`'s loop in a thread for the length of a test block."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

from ledger.app.service import Ledger
from projections.follow import follow
from projections.runner import ReadModels


@contextlib.contextmanager
def following(url: str) -> Iterator[None]:
    """Follow the store at `url` with its own `Ledger` while the block runs; the follower
    must stop when asked."""
    stop = threading.Event()
    with Ledger.open(url) as follower_ledger:
        follower = threading.Thread(target=follow, args=(follower_ledger.application, stop),
                                    daemon=True)
        follower.start()
        try:
            yield
        finally:
            stop.set()
            follower.join(timeout=15)
        assert not follower.is_alive()


def reaches(models: ReadModels, position: int, seconds: float) -> bool:
    """Whether every read model reaches `position` within `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if min(models.positions().values()) >= position:
            return True
        time.sleep(0.02)
    return False
