"""Bounds on the options that take a position, a count or a wait.

A position above 2^63-1 cannot be held by either store (SQLite raised OverflowError); a wait of
`nan` or `inf` seconds never ends; a worker count in the millions forks until the machine
stops. Each such option is refused by click before anything runs: exit 2, the option named.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

import click

from ledger.app.commands import MAX_POSITION, MAX_WAIT_SECONDS

MAX_WORKERS = 32
"""Worker processes for catch-up and rebuild: one per core pays off (the default is up to 4);
each holds a database connection, so a few dozen is already far past any use."""

POSITION = click.IntRange(0, MAX_POSITION)
WORKERS = click.IntRange(1, MAX_WORKERS)
_POSITION_TEXT = re.compile(r"[0-9]{1,19}")


class Seconds(click.FloatRange):
    """A finite number of seconds from 0 to `MAX_WAIT_SECONDS` (click's ranges let NaN by)."""

    name = "seconds"

    def __init__(self) -> None:
        super().__init__(0, MAX_WAIT_SECONDS)

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> Any:
        seconds: float = click.FLOAT.convert(value, param, ctx)
        if not math.isfinite(seconds):
            self.fail(f"{value!r} is not a finite number of seconds.", param, ctx)
        return super().convert(seconds, param, ctx)


SECONDS = Seconds()


def position_text(text: str) -> int | None:
    """The position written in `text` (ASCII digits, within `MAX_POSITION`), else None.

    `str.isdigit` also takes superscripts and other scripts' digits, some of which `int`
    then refuses."""
    if _POSITION_TEXT.fullmatch(text) is None or int(text) > MAX_POSITION:
        return None
    return int(text)


def undecodable_argument(arguments: Sequence[str]) -> str | None:
    """The option (or argument) whose value was not UTF-8 on the command line, if any.

    Python keeps such bytes as lone surrogates, which no store can encode: a read given one
    failed with a traceback. Named here, it is refused as malformed input."""
    for index, argument in enumerate(arguments):
        if any(0xD800 <= ord(ch) <= 0xDFFF for ch in argument):
            option, _, value = argument.partition("=")
            if option.startswith("--") and value:
                return option
            previous = arguments[index - 1] if index else ""
            return previous if previous.startswith("-") else "argument"
    return None
