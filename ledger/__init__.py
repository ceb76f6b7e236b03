"""stockledger: an event-sourced inventory ledger for multi-outlet retail and pharmacy POS."""

from ledger.api import Ledger
from ledger.errors import InvalidInput, LedgerError, Refusal

__all__ = ["InvalidInput", "Ledger", "LedgerError", "Refusal"]
