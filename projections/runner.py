"""Placeholder until the read models land."""

from ledger.store import LedgerApplication


def create_read_models(app: LedgerApplication) -> None:
    pass
