"""`ledger import`: opening balances from a CSV file, or from the old CRUD module's database.

Both validate every row before anything is recorded (each bad line named, exit 2; a batch the
store already holds, exit 1), record the rows a chunk per transaction, say what was recorded,
and bring the read models up to date unless told not to (`docs/import.md`).
"""

from __future__ import annotations

import csv
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any, TypeVar

import click
import psycopg

from cli.context import (
    EXIT_INVALID,
    EXIT_REFUSED,
    EXIT_STORE,
    LedgerContext,
    fail,
    pass_context,
    run,
)
from cli.display import printable, printable_lines
from ledger.app import crud_import
from ledger.app.commands import now
from ledger.app.imports import (
    CHUNK_ROWS,
    MAX_CHUNK_ROWS,
    MAX_WORKERS,
    BalanceImport,
    ImportSummary,
)
from ledger.domain.opening_balances import StockReconciliation
from projections.runner import ReadModels

F = TypeVar("F", bound=Callable[..., Any])

_PHASES = {"read": ("reading", "bytes"), "check": ("checking", "rows"),
           "record": ("recording", "rows"), "catch-up": ("read models", "events")}


class ProgressDisplay:
    """A progress bar with the rate on stderr: redrawn in place on a terminal, else a line
    at most every few seconds (with `--progress`), and a last one when a phase ends."""

    def __init__(self, *, terminal: bool) -> None:
        self.terminal = terminal
        self.phase: str | None = None
        self.started = 0.0
        self.shown = 0.0
        self.finished = False

    def __call__(self, phase: str, done: int, total: int) -> None:
        now = time.monotonic()
        if phase != self.phase:
            # Each phase reports its start (done 0): its rate is counted from there.
            self.phase, self.started, self.shown, self.finished = phase, now, now, False
            return
        finished = done >= total
        if self.finished or (not finished and now - self.shown < (
                0.25 if self.terminal else 5.0)):
            return
        self.shown, self.finished = now, finished
        label, unit = _PHASES.get(phase, (phase, "items"))
        rate = done / max(now - self.started, 1e-9)
        width = 30
        filled = int(width * min(done / total, 1.0)) if total else width
        text = (f"{label:<12} [{'#' * filled}{'.' * (width - filled)}] {done:,}/{total:,} "
                f"{unit}, {rate:,.0f} {unit}/s")
        if self.terminal:
            sys.stderr.write("\r" + text + ("\n" if finished else ""))
        else:
            sys.stderr.write(text + "\n")
        sys.stderr.flush()

    def catch_up(self, applied: int, head: int) -> None:
        self("catch-up", applied, head)


def import_options(function: F) -> F:
    """The options every import takes."""
    for option in reversed([
        click.option("--actor", help="Who imports (default: $LEDGER_ACTOR, else cli:$USER)."),
        click.option("--json", "as_json", is_flag=True, help="Print one JSON object."),
        click.option("--progress/--no-progress", "show_progress", default=None,
                     help="Show a progress bar with the rate on stderr (default: on a "
                          "terminal)."),
        click.option("--dry-run", is_flag=True,
                     help="Check everything and say what would be recorded; record nothing."),
        click.option("--catch-up/--no-catch-up", "catch_up", default=True, show_default=True,
                     help="Bring the read models up to date after recording (else a running "
                          "`ledger projections run`, or the next read, does)."),
        click.option("--workers", type=click.IntRange(0, MAX_WORKERS),
                     help="Worker processes that check rows and decide receipts (default, "
                          "for a file of 4 MB or more: one per core but one, 1 to 4; 0: "
                          "none)."),
        click.option("--chunk-rows", type=click.IntRange(1, MAX_CHUNK_ROWS),
                     default=CHUNK_ROWS, show_default=True,
                     help="Rows recorded per transaction (a rerun of a file keeps the size "
                          "its first run used)."),
    ]):
        function = option(function)
    return function


@click.group("import")
def import_group() -> None:
    """Bring opening balances over: from a CSV file, or from the old CRUD module."""


@import_group.command("balances")
@click.argument("file", type=click.Path(path_type=Path))
@import_options
@pass_context
def balances(obj: LedgerContext, file: Path, actor: str | None, as_json: bool,
             show_progress: bool | None, dry_run: bool, catch_up: bool,
             workers: int | None, chunk_rows: int) -> None:
    """Record each row of FILE (CSV: outlet, sku, batch, quantity, expires_on, unit_cost,
    received_at) as an opening-balance receipt, its file and line as its reference. The
    whole file is checked first; nothing is recorded if any row is bad. Running the same
    file again records nothing new, and goes on where a stopped run left off."""
    progress = _progress(show_progress)
    with _import(obj, file, file.name, actor, chunk_rows, workers, progress) as importing:
        _check(importing, as_json, always_read=False)
        summary = run(lambda: importing.record(dry_run=dry_run))
    payload = _finish(obj, summary, catch_up and not dry_run, progress)
    _emit(payload, as_json, _summary_text(summary, payload))


@import_group.command("crud")
@click.option("--from", "source_url", required=True, metavar="URL",
              help="The old CRUD module's PostgreSQL database (read, never written).")
@click.option("--as-of", "as_of", type=click.DateTime(["%Y-%m-%d"]),
              help="The day whose available batches are held against the stored totals "
                   "(default: today, UTC).")
@click.option("--save", type=click.Path(dir_okay=False, path_type=Path),
              help="Keep the batches read, as the import file recorded (its name is the "
                   "receipts' reference); default: a temporary file.")
@click.option("--report", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the reconciliation of every stock item to this CSV file.")
@import_options
@pass_context
def crud(obj: LedgerContext, source_url: str, as_of: Any, save: Path | None,
         report: Path | None, actor: str | None, as_json: bool, show_progress: bool | None,
         dry_run: bool, catch_up: bool, workers: int | None, chunk_rows: int) -> None:
    """Import the batches of the old CRUD module's database as opening balances, then hold
    its stored total of each stock item (location_stock) against the batches imported and
    list every stock item where they drifted."""
    on_date: date = as_of.date() if as_of is not None else now().date()
    progress = _progress(show_progress)
    with tempfile.TemporaryDirectory(prefix="ledger-crud-") as scratch:
        batches = save or Path(scratch) / "crud-batches.csv"
        totals = Path(scratch) / "location-stock.csv"
        try:
            exported = crud_import.export(source_url, batches, totals)
        except psycopg.Error as error:
            fail(EXIT_STORE, "the old database cannot be read: "
                             f"{str(error).strip().splitlines()[0]}")
        name = batches.name if save else f"crud-{exported.database}-batches.csv"
        with _import(obj, batches, name, actor, chunk_rows, workers,
                     progress) as importing:
            _check(importing, as_json, always_read=True)
            summary = run(lambda: importing.record(dry_run=dry_run))
            drifted, reconciled = _reconcile(importing, totals, on_date, report)
    payload = _finish(obj, summary, catch_up and not dry_run, progress)
    payload["reconciliation"] = {
        "as_of": on_date.isoformat(), **reconciled,
        "drifted": [_drift_dict(item) for item in drifted]}
    lines = [_summary_text(summary, payload),
             f"reconciliation as of {on_date}: {reconciled['stock_items']} stock items, "
             f"{len(drifted)} drifted (location_stock against the imported batches "
             "available that day)"]
    lines += [f"  {item.outlet} {item.sku}: location_stock {_shown(item.stored)}, batches "
              f"{item.imported_available} available of {item.imported} imported, drift "
              f"{item.drift:+d}" for item in drifted]
    _emit(payload, as_json, "\n".join(lines))


# --------------------------------------------------------------------------- helpers


def _progress(show: bool | None) -> ProgressDisplay | None:
    terminal = sys.stderr.isatty()
    if show is False or (show is None and not terminal):
        return None
    return ProgressDisplay(terminal=terminal)


def _import(obj: LedgerContext, path: Path, source: str, actor: str | None, chunk_rows: int,
            workers: int | None, progress: ProgressDisplay | None) -> BalanceImport:
    who = actor or os.environ.get("LEDGER_ACTOR") or f"cli:{os.environ.get('USER', 'unknown')}"
    if not path.is_file():
        fail(EXIT_INVALID, f"invalid file: {path} is not a file that can be read")
    app = obj.ledger.application
    return run(lambda: BalanceImport(app, path, actor=who, source=source,
                                     chunk_rows=chunk_rows, workers=workers,
                                     progress=progress))


def _check(importing: BalanceImport, as_json: bool, *, always_read: bool) -> None:
    """Check the whole file; if anything is wrong, name every bad line and exit (2 for bad
    input, 1 for rows the store's batches refuse), having recorded nothing."""
    run(lambda: importing.check(always_read=always_read))
    if not importing.problems_found:
        return
    code = EXIT_INVALID if importing.problem_count else EXIT_REFUSED
    total = importing.problem_count + importing.refusal_count
    what = "bad lines" if importing.problem_count else "rows refused by the ledger"
    verdict = f"{total} problems ({what}) in {importing.source}; nothing recorded"
    if as_json:
        _write_json_problems(importing, code, verdict)
    else:
        for problem in importing.problems():
            click.echo(printable(f"ledger: {importing.source} {problem}"), err=True)
        click.echo(printable(f"ledger: {verdict}"), err=True)
    importing.close()
    sys.exit(code)


def _write_json_problems(importing: BalanceImport, code: int, verdict: str) -> None:
    """One JSON object, its problems streamed from the spill (there may be millions)."""
    head = {"ok": False, "source": importing.source, "digest": importing.digest,
            "lines": importing.lines, "recorded_rows": 0, "message": verdict,
            "exit_status": code}
    out = sys.stdout
    out.write(json.dumps(head, sort_keys=True)[:-1] + ', "problems": [')
    for index, problem in enumerate(importing.problems()):
        out.write((", " if index else "") + json.dumps(
            {"line": problem.line, "field": problem.field, "message": problem.message},
            sort_keys=True))
    out.write("]}\n")
    out.flush()


def _finish(obj: LedgerContext, summary: ImportSummary, catch_up: bool,
            progress: ProgressDisplay | None) -> dict[str, Any]:
    payload: dict[str, Any] = {"ok": True, **summary.model_dump(mode="json")}
    if not catch_up:
        payload["read_models"] = {"caught_up": False}
        return payload
    models = ReadModels(obj.ledger.application)
    started = time.perf_counter()
    if progress is not None:
        progress.catch_up(0, models.head())
    applied = run(lambda: models.catch_up(
        progress=None if progress is None else progress.catch_up))
    payload["read_models"] = {"caught_up": True, "events_applied": applied,
                              "position": min(models.positions().values()),
                              "seconds": round(time.perf_counter() - started, 3)}
    return payload


def _summary_text(summary: ImportSummary, payload: dict[str, Any]) -> str:
    source = summary.source
    if summary.dry_run:
        text = (f"dry run: {summary.rows:,} rows of {source} checked, "
                f"{summary.rows - summary.rows_recorded_before:,} would be recorded; "
                "nothing recorded")
    elif summary.rows_recorded == 0:
        text = (f"nothing new: all {summary.rows:,} rows of {source} "
                f"(sha256 {summary.digest[:16]}) were recorded by an earlier run")
    else:
        rate = summary.rows_recorded / max(summary.record_seconds, 1e-9)
        text = (f"imported {summary.rows_recorded:,} rows of {source} (sha256 "
                f"{summary.digest[:16]}) in {summary.chunks} chunks of {summary.chunk_rows}: "
                f"{summary.stock_items_opened:,} stock items and {summary.outlets_opened:,} "
                f"outlets opened, positions {summary.first_position}-{summary.last_position}; "
                f"checked in {summary.check_seconds:.1f} s, recorded in "
                f"{summary.record_seconds:.1f} s ({rate:,.0f} rows/s)")
        if summary.rows_recorded_before:
            text += f"; {summary.rows_recorded_before:,} rows were recorded by an earlier run"
    models = payload["read_models"]
    if models["caught_up"]:
        text += f"\nread models caught up to position {models['position']}"
    elif not summary.dry_run:
        text += "\nread models not caught up (--no-catch-up)"
    return text


def _reconcile(importing: BalanceImport, totals: Path, on_date: date,
               report: Path | None) -> tuple[list[StockReconciliation], dict[str, int]]:
    items = stored = imported = 0
    drifted: list[StockReconciliation] = []
    rows = crud_import.reconciliation(importing, totals, on_date)
    with (report.open("w", newline="", encoding="utf-8") if report
          else open(os.devnull, "w")) as out:
        writer = csv.writer(out)
        writer.writerow(["outlet", "sku", "location_stock", "batches", "imported",
                         "imported_available", "drift"])
        for item in rows:
            items += 1
            stored += item.stored or 0
            imported += item.imported_available
            writer.writerow([item.outlet, item.sku, _shown(item.stored), item.batches,
                             item.imported, item.imported_available, item.drift])
            if item.drifted:
                drifted.append(item)
    return drifted, {"stock_items": items, "location_stock_total": stored,
                     "imported_available_total": imported}


def _drift_dict(item: StockReconciliation) -> dict[str, Any]:
    return {"outlet": item.outlet, "sku": item.sku, "location_stock": item.stored,
            "batches": item.batches, "imported": item.imported,
            "imported_available": item.imported_available, "drift": item.drift}


def _shown(value: int | None) -> str:
    return "none" if value is None else str(value)


def _emit(payload: dict[str, Any], as_json: bool, text: str) -> None:
    if as_json:
        click.echo(json.dumps(payload, sort_keys=True))
    else:
        click.echo(printable_lines(text))
