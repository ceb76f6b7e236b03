"""Recorded strings, made safe to print on a terminal.

The ledger refuses control characters and bidirectional overrides in what it records
(`ledger.app.commands`), but a store written by an earlier version may hold them: an actor
with a newline in it printed a line of its own in `ledger history`, indistinguishable from a
real movement. Human-readable output therefore shows every character that is not printable
as its Python escape (`\\n`, `\\x1b`, `\\u202e`). JSON output needs none of this: `json.dumps`
escapes every character outside printable ASCII.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def printable(text: str) -> str:
    """`text` with every character that is not printable (controls, separators, format
    characters such as bidirectional overrides, surrogates) written as its escape."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii")
                   for ch in text)


def printable_lines(text: str) -> str:
    """`text`'s lines, each made printable: its own line breaks stay, nothing else."""
    return "\n".join(printable(line) for line in text.split("\n"))


def shown(row: Mapping[str, Any]) -> dict[str, Any]:
    """A row to print: its strings made printable, every other value as it was."""
    return {k: printable(v) if isinstance(v, str) else v for k, v in row.items()}
