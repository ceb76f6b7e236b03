"""stockledger: an event-sourced inventory ledger for multi-outlet retail and pharmacy POS.

`Ledger` is the Python API; its commands and results are typed (`ledger.app.commands`,
`ledger.app.results`). Refusals by a ledger rule are `Refusal`s, malformed input is
`InvalidInput` naming the field, and a store without tables is `StoreNotInitialised`.
"""

from ledger.app.service import Ledger
from ledger.domain.errors import (
    ConcurrencyConflict,
    InvalidInput,
    LedgerError,
    Refusal,
    StoreNotInitialised,
)

__all__ = [
    "ConcurrencyConflict",
    "InvalidInput",
    "Ledger",
    "LedgerError",
    "Refusal",
    "StoreNotInitialised",
]
