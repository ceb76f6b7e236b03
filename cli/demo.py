"""`ledger demo`: a short guided run on a throwaway store, for a first look."""

from __future__ import annotations

import click


def register(group: click.Group) -> None:
    pass
