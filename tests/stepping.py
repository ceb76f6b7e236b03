"""Drive the projections a few events at a time, so that a test can look between batches."""

from __future__ import annotations

import random
from collections.abc import Callable

import projections.runner as runner
from projections.runner import ReadModels


def step_in_random_batches(models: ReadModels, rng: random.Random, largest: int,
                           after_each: Callable[[], object]) -> int:
    """Apply every event in batches of 1 to `largest` events, calling `after_each` after
    each batch; return how many batches there were."""
    saved = runner.BATCH_SIZE
    batches = 0
    try:
        while True:
            runner.BATCH_SIZE = rng.randint(1, largest)
            if models.step() == 0:
                return batches
            after_each()
            batches += 1
    finally:
        runner.BATCH_SIZE = saved
