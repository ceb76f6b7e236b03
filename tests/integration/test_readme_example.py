"""The README's Python example runs as written on a fresh store, on both backends."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ledger import Ledger, StoreNotInitialised

README = Path(__file__).resolve().parents[2] / "README.md"
EXAMPLE_URL = "sqlite:///shop.sqlite3"


def readme_example() -> str:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) == 1, "the README has one Python example"
    assert EXAMPLE_URL in blocks[0]
    return str(blocks[0])


def test_the_readme_example_sells_from_a_fresh_store(
        store_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    exec(readme_example().replace(EXAMPLE_URL, store_url), {})
    printed = capsys.readouterr().out
    assert "batch_id='B1'" in printed and "quantity=2" in printed
    with Ledger.open(store_url) as ledger:
        assert ledger.stock_level("NAIROBI-1", "AMOX-500").on_hand == 98


def test_opening_a_fresh_store_without_creating_it_says_what_to_do(store_url: str) -> None:
    with pytest.raises(StoreNotInitialised) as refused:
        Ledger.open(store_url)
    assert "ledger init" in str(refused.value)
    assert "create_tables=True" in str(refused.value)
