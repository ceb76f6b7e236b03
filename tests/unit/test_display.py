"""Recorded strings printed on a terminal: nothing non-printable reaches it as itself."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from cli.display import printable, printable_lines, shown


def test_escapes_controls_separators_and_bidirectional_overrides() -> None:
    assert printable("evil\nline") == "evil\\nline"
    assert printable("\x1b[31mred\x00") == "\\x1b[31mred\\x00"
    assert printable("a\x85b\u2028c\u202ed\u2066e") == "a\\x85b\\u2028c\\u202ed\\u2066e"
    assert printable("lone \udcff") == "lone \\udcff"


def test_leaves_printable_text_in_any_script_as_it_is() -> None:
    for text in ("Zoë Wanjiků", "店长 王", "مدير", "DOMAIN\\user", "50% off", ""):
        assert printable(text) == text


def test_keeps_the_summary_s_own_line_breaks_only() -> None:
    assert printable_lines("one\ttab\ntwo\rthree") == "one\\ttab\ntwo\\rthree"


def test_shown_escapes_strings_and_keeps_other_values() -> None:
    assert shown({"actor": "a\nb", "quantity": -3, "batch_id": None}) == {
        "actor": "a\\nb", "quantity": -3, "batch_id": None}


@given(st.text(st.characters(exclude_categories=())))
def test_whatever_is_recorded_prints_as_one_printable_line(text: str) -> None:
    escaped = printable(text)
    assert escaped.isprintable()
    assert len(escaped.splitlines()) <= 1
    escaped.encode("utf-8")
