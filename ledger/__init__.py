"""stockledger: an event-sourced inventory ledger for multi-outlet retail and pharmacy POS."""

from ledger.app.service import Ledger
from ledger.domain.errors import InvalidInput, LedgerError, Refusal

__all__ = ["InvalidInput", "Ledger", "LedgerError", "Refusal"]
