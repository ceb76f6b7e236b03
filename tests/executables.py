"""Where the `ledger` console script of the running interpreter's install lives."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest


def ledger_executable() -> str:
    """The `ledger` script beside this interpreter (the one `pip install -e .` made), else the
    one on PATH; fail if the project's install step did not provide it."""
    beside = Path(sys.executable).parent / "ledger"
    if beside.exists():
        return str(beside)
    found = shutil.which("ledger")
    if found is None:
        pytest.fail("the `ledger` console script is not installed: run pip install -e .")
    return found
