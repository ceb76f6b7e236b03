"""The latest full run's table, kept in `docs/performance.md` between two markers."""

from __future__ import annotations

from pathlib import Path

PERFORMANCE_DOC = Path(__file__).resolve().parent.parent / "docs" / "performance.md"
BEGIN = "<!-- `python -m benchmarks` writes its latest full run from here -->"
END = "<!-- to here -->"


def with_latest_run(document: str, table: str) -> str:
    """`document` with the text between the markers replaced by `table` (the markers and
    a heading appended at the end if the document has none yet)."""
    block = f"{BEGIN}\n\n{table.strip()}\n\n{END}"
    begin, end = document.find(BEGIN), document.find(END)
    if begin == -1 or end < begin:
        return f"{document.rstrip()}\n\n## Full run (latest)\n\n{block}\n"
    return document[:begin] + block + document[end + len(END):]


def write_latest_run(table: str, path: Path = PERFORMANCE_DOC) -> Path:
    """Write `table` into the performance document (of a checkout: an installed package has
    none)."""
    path.write_text(with_latest_run(path.read_text(encoding="utf-8"), table), encoding="utf-8")
    return path
