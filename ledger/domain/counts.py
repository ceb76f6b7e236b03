"""Whole-SKU counts and found stock: which counted batches are known, found, or a mistake.

Pure functions over plain data. A count that names a batch the ledger does not know at the
outlet is refused (a typed batch id is more often wrong than new), unless the count declares
it found: then it is recorded as found stock (`StockFound`), with the expiry and cost the
count gives, and the variance of the rest is `ledger.domain.rules.count_batches`'.
"""

from __future__ import annotations

from collections.abc import Mapping, Set

from ledger.domain.errors import BatchConflict, UnknownBatch


def split_found(outlet: str, sku: str, known: Set[str], counted: Mapping[str, int],
                declared_found: Set[str]) -> tuple[dict[str, int], dict[str, int]]:
    """(counts of known batches, quantities of found ones). A counted batch neither known
    nor declared found is `UnknownBatch`; one declared found that the ledger knows here is a
    `BatchConflict` (a refusal, so that a repeat of a count that found it answers as the
    first did). That a found batch is counted above zero is the command's own check."""
    for batch_id in sorted(declared_found):
        if batch_id in known:
            raise BatchConflict(f"batch {batch_id} is known at outlet {outlet}: count it, "
                                "it is not found stock")
    known_counts: dict[str, int] = {}
    found: dict[str, int] = {}
    for batch_id, quantity in counted.items():
        if batch_id in known:
            known_counts[batch_id] = quantity
        elif batch_id in declared_found:
            found[batch_id] = quantity
        else:
            raise UnknownBatch(outlet, sku, batch_id)
    return known_counts, found
