"""A full benchmark run replaces the table in docs/performance.md, and nothing else."""

from __future__ import annotations

from pathlib import Path

from benchmarks.docs_table import BEGIN, END, PERFORMANCE_DOC, with_latest_run


def test_the_latest_run_replaces_the_previous_between_the_markers() -> None:
    document = f"# Performance\n\nprose before\n\n{BEGIN}\n\nold table\n\n{END}\n\nprose after\n"
    updated = with_latest_run(document, "new table\n")
    assert updated == (f"# Performance\n\nprose before\n\n{BEGIN}\n\nnew table\n\n{END}"
                       "\n\nprose after\n")
    assert with_latest_run(updated, "newer") == updated.replace("new table", "newer")


def test_a_document_without_markers_gets_a_section_at_its_end() -> None:
    updated = with_latest_run("# Performance\n", "a table")
    assert updated == f"# Performance\n\n## Full run (latest)\n\n{BEGIN}\n\na table\n\n{END}\n"


def test_the_performance_document_holds_the_markers() -> None:
    text = Path(PERFORMANCE_DOC).read_text(encoding="utf-8")
    assert text.count(BEGIN) == 1 and text.count(END) == 1
    assert text.index(BEGIN) < text.index(END)
