"""Bulk import of opening balances from a CSV file (`docs/import.md`).

An import runs in two steps, and records nothing until the first has passed in full:

1. `BalanceImport.check` reads the file once, a line at a time (`import_files`): a line
   longer than `MAX_LINE_BYTES` is refused without being held in memory, and each row is
   validated by the receipt command's own rules (`ReceiveStock`, every refused field
   reported, not only the first). Valid rows are spilled, normalised, into a private
   temporary SQLite database on disk, sorted there into the import's order (outlet, SKU,
   received time, line), cut into chunks (`plan_chunks`) and checked against the rules of a
   whole file and of the store (`ledger.domain.opening_balances`). Memory stays flat whatever
   the file's size: the rows live on disk, one chunk's rows at a time in memory.
2. `BalanceImport.record` appends the chunks in order, one transaction each: a chunk's
   receipts (each decided by its stock item, `receive_rows`), the outlets and stock items it
   opens, and the import stream's next event (`ledger.domain.balance_import`), through the
   recorder's ordinary append (`insert_events`, which `LedgerApplication.record` calls for
   every command): positions contiguous, the horizon respected, the hash chain intact.

The import stream's id is derived from the file's sha256 digest and each chunk takes its
next version, so a chunk lands once, whoever runs it; a run killed half-way leaves a whole
number of chunks recorded, and the next run of the same file goes on from the first chunk not
recorded. Each receipt's reference is `SOURCE:LINE` and its idempotency key
`import:DIGEST:LINE` (the digest's first 16 hex digits).

Worker processes: reading rows and deciding receipts is Python work, so a large file (from
`PARALLEL_MIN_BYTES`) is checked, and its chunks of new stock items decided and encoded, by
worker processes (`default_workers`: one per core but one, from 1 to 4), while this process
spills their rows and appends: the chunks are still appended one at a time, in order, by this
process, and a chunk that needs the store's state (a stock item the store holds, one split
over chunks, or one due a snapshot) is decided here.
"""

from __future__ import annotations

import collections
import concurrent.futures
import hashlib
import multiprocessing
import multiprocessing.util
import os
import sys
import threading
import time
import types
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO

from eventsourcing.domain import Aggregate
from eventsourcing.persistence import IntegrityError, StoredEvent
from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

from ledger.app import commands as c
from ledger.app.import_files import (
    COLUMNS,
    MAX_LINE_BYTES,
    Problem,
    Spill,
    Spilled,
    balance_row,
    check_block,
    header,
    physical_lines,
)
from ledger.domain import identity
from ledger.domain.balance_import import BalanceImport as ImportProgress
from ledger.domain.errors import (
    BatchConflict,
    ConcurrencyConflict,
    InvalidInput,
    InvariantBroken,
)
from ledger.domain.opening_balances import (
    BalanceRow,
    Chunk,
    RowProblem,
    already_recorded,
    by_stock_item,
    expiry_conflicts,
    plan_chunks,
    receive_rows,
)
from ledger.domain.outlet import Outlet
from ledger.domain.stock_item import MovementContext, StockItem
from ledger.domain.store_settings import StoreSettings, check_unit_cost
from ledger.store.application import SNAPSHOT_INTERVAL, LedgerApplication, open_application

__all__ = ["CHUNK_ROWS", "COLUMNS", "MAX_CHUNK_ROWS", "MAX_LINE_BYTES", "BalanceImport",
           "ImportSummary"]

CHUNK_ROWS = 2000
"""Rows recorded per transaction by default: a few megabytes of events per append."""
MAX_CHUNK_ROWS = 50_000
MAX_ATTEMPTS = 5
"""How many times a chunk is decided again on fresh state after losing a race."""
MAX_SOURCE_LENGTH = 400
"""The longest source name: with `:LINE` it must fit a reference (500 characters)."""
MAX_WORKERS = 8
PARALLEL_MIN_BYTES = 4_000_000
"""Below this size (about 40,000 rows) one process is quicker: starting workers costs a
second or two."""
WORKER_WATCH_SECONDS = 0.5
"""How often a worker looks whether the importing process still runs."""
BLOCK_LINES = 2000
"""Lines per block sent to a worker to check."""
SPILL_BATCH = 10_000
"""Rows (or problems) written to the spill per transaction."""
KEY_DIGEST_DIGITS = 16
"""How much of the file's digest a receipt's idempotency key carries (the import stream
carries all of it)."""
SNAPSHOT_ROWS = SNAPSHOT_INTERVAL - 1
"""A new stock item with this many receipts is due a snapshot: decided here, which takes it."""

_TEXT = TypeAdapter(c.Text)

Progress = Callable[[str, int, int], None]
"""Called as `progress(phase, done, total)`: phase "read" (bytes of the file), "check" (rows)
or "record" (rows); each phase first with `done` 0."""


class ImportSummary(BaseModel):
    """What an import found and recorded: JSON-ready, the same shape on a repeat."""

    model_config = ConfigDict(frozen=True)

    source: str
    digest: str
    lines: int | None
    """None where the file was known by its digest as imported already, and not read."""
    rows: int
    stock_items: int | None
    outlets: int | None
    chunk_rows: int
    chunks: int
    rows_recorded: int
    """By this run."""
    rows_recorded_before: int
    """By earlier runs of the same file (a repeat, or a run that was stopped half-way)."""
    outlets_opened: int
    stock_items_opened: int
    first_position: int | None
    last_position: int | None
    check_seconds: float
    record_seconds: float
    workers: int
    dry_run: bool


def default_workers() -> int:
    """Worker processes for a large file: one per core but one (the importing process and
    the database server need one between them), from 1 to 4."""
    return max(1, min((os.cpu_count() or 1) - 1, 4))


def receipt_context(row: BalanceRow, source: str, actor: str, digest: str,
                    started_at: datetime) -> MovementContext:
    """Who, when and why of a row's receipt: its reference is the file and line, its key the
    file's digest (its first 16 hex digits: 64 bits) and the line; a row without a time is
    received at the import's."""
    return MovementContext(row.received_at or started_at, actor, f"{source}:{row.line}",
                           f"import:{digest[:KEY_DIGEST_DIGITS]}:{row.line}")


class BalanceImport:
    """One run of an import of opening balances from a CSV file into a store.

        with BalanceImport(app, Path("balances.csv"), actor="migration") as run:
            run.check()
            if not run.problems_found:
                summary = run.record()

    `check` must pass before `record`; `problems` lists what it found, by line.
    """

    def __init__(self, app: LedgerApplication, path: Path, *, actor: str,
                 source: str | None = None, chunk_rows: int = CHUNK_ROWS,
                 workers: int | None = None, progress: Progress | None = None) -> None:
        self.app = app
        self.path = path
        self.source = _checked_text("source", path.name if source is None else source,
                                    MAX_SOURCE_LENGTH)
        self.actor = _checked_text("actor", actor, 500)
        if not 1 <= chunk_rows <= MAX_CHUNK_ROWS:
            raise InvalidInput("chunk_rows", f"must be from 1 to {MAX_CHUNK_ROWS}, "
                                             f"not {chunk_rows}")
        if workers is not None and not 0 <= workers <= MAX_WORKERS:
            raise InvalidInput("workers", f"must be from 0 to {MAX_WORKERS}, not {workers}")
        self.chunk_rows = chunk_rows
        self.requested_workers = workers
        self.workers = 0
        self.progress = progress or (lambda phase, done, total: None)
        self.spill = Spill()
        self.started_at = c.now()
        self.digest = ""
        self.lines: int | None = None
        self.rows = 0
        self.stock_items: int | None = None
        self.outlets: int | None = None
        self.chunks = 0
        self.problem_count = 0
        self.refusal_count = 0
        self.recorded: ImportProgress | None = None
        self.check_seconds = 0.0
        self._checked = False
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None

    def __enter__(self) -> BalanceImport:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close(stop_workers=exc_type is not None)

    def close(self, *, stop_workers: bool = False) -> None:
        """End the workers (let them finish, or with `stop_workers` stop them) and delete
        the spill."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=stop_workers)
            self._pool = None
        self.spill.close()

    # ------------------------------------------------------------------ check

    def check(self, *, always_read: bool = False) -> BalanceImport:
        """Read and validate the whole file, then check its rows against each other and
        against the store; record nothing. Problems are counted in `problem_count` (bad
        input) and `refusal_count` (rows the store's batches refuse), listed by `problems`.

        A file whose import is recorded in full already is known by its digest alone and
        not read again, unless `always_read` (to reconcile its rows, say)."""
        started = time.perf_counter()
        try:
            size = self.path.stat().st_size
            with self.path.open("rb") as stream:
                digest = hashlib.file_digest(stream, "sha256").hexdigest()
            recorded = self._import_stream(digest)
            if recorded is not None and recorded.complete and not always_read:
                self.digest, self.recorded, self.rows = digest, recorded, recorded.rows
                self.chunk_rows, self.chunks = recorded.chunk_rows, recorded.chunks
            else:
                self._start_workers(size)
                with self.path.open("rb") as stream:
                    self._read(stream, size)
                if self.digest != digest:
                    raise InvalidInput("file", f"{self.path} changed while it was being read")
                self._check_rows()
                if not self.problem_count:
                    self._check_store(recorded)
        except OSError as error:
            raise InvalidInput("file", f"cannot read {self.path}: {error.strerror}") from None
        self.check_seconds = time.perf_counter() - started
        self._checked = True
        return self

    @property
    def problems_found(self) -> bool:
        return bool(self.problem_count or self.refusal_count)

    def problems(self) -> Iterator[RowProblem]:
        """Every problem found, by line."""
        return self.spill.problems()

    def _problem(self, problems: list[Problem], *, refusal: bool = False) -> None:
        added = self.spill.add_problems(problems)
        if refusal:
            self.refusal_count += added
        else:
            self.problem_count += added

    def _import_stream(self, digest: str) -> ImportProgress | None:
        found = self.app.load(identity.balance_import_id(digest))
        if found is not None and not isinstance(found, ImportProgress):
            raise InvariantBroken(f"the import stream of {digest} holds a "
                                  f"{type(found).__name__}")
        return found

    def _start_workers(self, size: int) -> None:
        workers = self.requested_workers
        if workers is None:
            workers = default_workers() if size >= PARALLEL_MIN_BYTES else 0
        if workers:
            context = multiprocessing.get_context("spawn")
            # Workers need nothing of the caller's main script, which spawning would run
            # again in each of them (a script without a `__main__` guard would import again).
            main = sys.modules["__main__"]
            sys.modules["__main__"] = types.ModuleType("__main__")
            try:
                # An executor, not a `multiprocessing.Pool`: a pool starts new workers for
                # ever in place of ones that die starting; an executor is then broken, and
                # says so to whoever waits on it.
                self._pool = concurrent.futures.ProcessPoolExecutor(
                    workers, mp_context=context, initializer=_open_worker,
                    initargs=(self.app.config.url, os.getpid()))
                # Started now, with the main module left out (it starts them lazily).
                for started in [self._pool.submit(_ready) for _ in range(workers)]:
                    started.result()
            finally:
                sys.modules["__main__"] = main
        self.workers = workers

    def _read(self, stream: BinaryIO, size: int) -> None:
        digest = hashlib.sha256()
        lines = _Lines(stream, digest)
        if lines.first is None:
            self._problem([(1, "header", "the file is empty: its first line must name the "
                                         f"columns ({', '.join(COLUMNS)})")])
        else:
            order, problems = header(lines.first[1])
            if problems:
                self._problem([(p.line, p.field, p.message) for p in problems])
                lines.drain()  # counted and digested, not checked: no columns known
            else:
                self.progress("read", 0, size)
                self._read_rows(lines, order, size)
                self.progress("read", size, size)
        self.lines = lines.count
        self.digest = digest.hexdigest()

    def _read_rows(self, lines: _Lines, order: list[int], size: int) -> None:
        pending: collections.deque[Any] = collections.deque()
        window = 2 * self.workers
        block: list[tuple[int, bytes]] = []
        rows: list[Spilled] = []
        problems: list[Problem] = []

        def take(result: tuple[list[Spilled], list[Problem]]) -> None:
            rows.extend(result[0])
            problems.extend(result[1])
            if len(rows) >= SPILL_BATCH:
                self.spill.add_rows(rows)
                rows.clear()
            if len(problems) >= SPILL_BATCH:
                self._problem(problems)
                problems.clear()

        def send() -> None:
            if self._pool is None:
                take(check_block(block, order))
            else:
                pending.append(self._pool.submit(check_block, list(block), order))
                while len(pending) > window:
                    take(pending.popleft().result())
            block.clear()
            self.progress("read", min(lines.bytes, size), size)

        for number, line in lines:
            if line is None:
                problems.append((number, "line", f"is longer than {MAX_LINE_BYTES} bytes"))
            elif line:  # an empty line holds no row
                block.append((number, line))
                if len(block) >= BLOCK_LINES:
                    send()
        send()
        while pending:
            take(pending.popleft().result())
        self.spill.add_rows(rows)
        self._problem(problems)

    def _check_rows(self) -> None:
        """Sort the rows into the import's order, and apply the rules of a whole file over
        each stock item's rows."""
        self.rows = self.spill.order()
        if not self.rows:
            if not self.problem_count:
                self._problem([(self.lines or 1, "file", "holds no rows below its header")])
            return
        self.progress("check", 0, self.rows)
        outlet = None
        done = items = outlets = 0
        batch: list[tuple[int, int, str, str]] = []
        problems: list[Problem] = []
        settings = self.app.load(identity.store_settings_id())
        places = settings if isinstance(settings, StoreSettings) else None
        for first, rows, item_outlet, sku, run in self._stock_item_runs(places is not None):
            items += 1
            if item_outlet != outlet:
                outlet = item_outlet
                outlets += 1
            if run is not None:
                problems.extend((p.line, p.field, p.message) for p in expiry_conflicts(run))
                if places is not None:
                    problems.extend(cost_places_problems(run, places))
            batch.append((first, rows, item_outlet, sku))
            done += rows
            if len(batch) >= SPILL_BATCH:
                self.spill.add_items(batch)
                batch.clear()
                self.progress("check", done, self.rows)
        self.spill.add_items(batch)
        self.stock_items, self.outlets = items, outlets
        self._problem(problems)
        self.progress("check", self.rows, self.rows)

    def _stock_item_runs(self, every_row: bool) -> Iterator[
            tuple[int, int, str, str, list[BalanceRow] | None]]:
        """Each stock item's first rank, rows, outlet and SKU, with its rows where the
        rules of a whole file must read them: all of them with `every_row` (a store whose
        costs have a number of places, each row's checked), else only those of a stock item
        with a batch id on two of its rows, the only ones that can conflict
        (`expiry_conflicts`); the rest are counted from three columns of the spill.
        (Reading every row back as a row cost a tenth of an import of new stock items, in
        this process, after every worker had finished.)"""
        if every_row:
            first = 1
            for run in by_stock_item(self.spill.rows_in_order()):
                yield first, len(run), run[0].outlet, run[0].sku, run
                first += len(run)
            return
        for first, rows, outlet, sku, repeats in self.spill.stock_items_in_order():
            yield first, rows, outlet, sku, (
                list(self.spill.rows_in_order(first - 1, first - 1 + rows)) if repeats
                else None)

    def _check_store(self, recorded: ImportProgress | None) -> None:
        """Read how far earlier runs of this file got, plan the chunks as they did, and
        check the rows still to record against the batches the store holds
        (`already_recorded`). Another run of the file may be recording meanwhile: its
        batches are this import's, so the check is made again from where it got to, until
        it stands still."""
        self.spill.add_store_items((o.outlet, o.sku) for o in self.app.stock_items_opened())
        self._plan_like(recorded)
        while True:
            done = self._rows_done()
            problems = self._store_conflicts(done)
            # (The cache may hand back the same object, brought up to date: compare counts.)
            latest = self._import_stream(self.digest)
            if latest is None or (self.recorded is not None and latest.rows_recorded == done):
                break
            self._plan_like(latest)
        self._problem(problems, refusal=True)

    def _plan_like(self, recorded: ImportProgress | None) -> None:
        """Plan the chunks, as the recorded import of this file did if there is one."""
        if recorded is not None and recorded.rows != self.rows:
            raise InvariantBroken(f"the import stream of {self.digest} holds an import of "
                                  f"{recorded.rows} rows, not {self.rows}")
        if recorded is not None and (self.recorded is None
                                     or recorded.chunk_rows != self.chunk_rows):
            self.chunk_rows = recorded.chunk_rows
            self._plan()
        elif not self.chunks:
            self._plan()
        self.recorded = recorded
        if recorded is not None and recorded.chunks != self.chunks:
            raise InvariantBroken(f"the import of {self.digest} was recorded in "
                                  f"{recorded.chunks} chunks, not {self.chunks}")

    def _store_conflicts(self, done: int) -> list[Problem]:
        """The rows ranked after `done` that the batches the store holds refuse."""
        problems: list[Problem] = []
        for outlet, sku, first, last in self.spill.store_items_after(done):
            item = self.app.load(identity.stock_item_id(outlet, sku))
            if not isinstance(item, StockItem):
                continue
            problems.extend((p.line, p.field, p.message) for p in _store_conflicts(
                item, self.spill.batches_before(outlet, sku, first),
                list(self.spill.rows_in_order(first - 1, last))))
        return problems

    def _plan(self) -> None:
        """Cut the rows into chunks (`plan_chunks`); a chunk of whole stock items the store
        does not hold, none due a snapshot, may be decided by a worker."""
        items = self.spill.item_sizes()
        current = next(items, None)
        chunks: list[tuple[Chunk, bool]] = []
        for chunk in plan_chunks((rows for rows, _, _ in self.spill.item_sizes()),
                                 self.chunk_rows):
            end = chunk.first_row + chunk.rows - 1
            pure = not chunk.continues_item
            while current is not None and current[1] <= end:
                rows, first, in_store = current
                split = first + rows - 1 > end
                if in_store or rows >= SNAPSHOT_ROWS or split:
                    pure = False
                if split:
                    break  # it goes on in the next chunk
                current = next(items, None)
            chunks.append((chunk, pure))
        self.spill.add_chunks(chunks)
        self.chunks = len(chunks)

    def _rows_done(self) -> int:
        return 0 if self.recorded is None else self.recorded.rows_recorded

    # ------------------------------------------------------------------ record

    def record(self, *, dry_run: bool = False) -> ImportSummary:
        """Record the checked rows not yet recorded, a chunk per transaction; with
        `dry_run`, only say what would be recorded."""
        if not self._checked or self.problems_found:
            raise InvariantBroken("an import records only once its check has passed")
        started = time.perf_counter()
        before = self._rows_done()
        counts = _Counts()
        if not dry_run and before < self.rows:
            self._record_chunks(counts)
        return ImportSummary(
            source=self.source, digest=self.digest, lines=self.lines, rows=self.rows,
            stock_items=self.stock_items, outlets=self.outlets, chunk_rows=self.chunk_rows,
            chunks=self.chunks, rows_recorded=counts.rows, rows_recorded_before=before,
            outlets_opened=counts.outlets, stock_items_opened=counts.stock_items,
            first_position=counts.first_position, last_position=counts.last_position,
            check_seconds=round(self.check_seconds, 3),
            record_seconds=round(time.perf_counter() - started, 3), workers=self.workers,
            dry_run=dry_run)

    def _record_chunks(self, counts: _Counts) -> None:
        progress = self.recorded
        state = _Carried()
        self.progress("record", 0, self.rows)
        for chunk, rows, decided in self._prepared(0 if progress is None
                                                   else progress.chunks_recorded):
            if progress is not None and progress.chunks_recorded > chunk.index:
                continue  # another run recorded it meanwhile
            for attempt in range(MAX_ATTEMPTS):
                try:
                    progress = self._record_chunk(chunk, rows, decided if not attempt else None,
                                                  progress, state, counts, fresh=attempt > 0)
                    break
                except (IntegrityError, BatchConflict) as error:
                    # A till or another run of this file wrote first: forget what was
                    # decided and look again. (A batch found recorded on fresh state may
                    # be this very chunk's, recorded by another run of the file meanwhile.)
                    state.forget(self.app)
                    self.app.evict(identity.balance_import_id(self.digest))
                    progress = self._import_stream(self.digest)
                    if progress is not None and progress.chunks_recorded > chunk.index:
                        break  # another run recorded this chunk
                    if isinstance(error, BatchConflict):
                        raise
                except BaseException:
                    # Whatever stopped it, the cache must not keep unrecorded changes.
                    state.forget(self.app)
                    self.app.evict(identity.balance_import_id(self.digest))
                    raise
            else:
                raise ConcurrencyConflict(
                    f"import of {self.source}: chunk {chunk.index}: {MAX_ATTEMPTS} conflicts")
            self.progress("record", chunk.first_row + chunk.rows - 1, self.rows)

    def _prepared(self, start: int) -> Iterator[tuple[Chunk, list[tuple[Any, ...]], Any]]:
        """The chunks from `start` on, each with its rows and, if a worker decides it, the
        worker's pending answer; a few chunks ahead are with the workers at any time."""
        window = 2 * self.workers
        ahead: collections.deque[tuple[Chunk, list[tuple[Any, ...]], Any]] = \
            collections.deque()
        for chunk, pure in self.spill.chunks(start):
            raw = list(self.spill.raw_rows(chunk.first_row - 1,
                                           chunk.first_row - 1 + chunk.rows))
            if pure and self._pool is not None:
                decided = self._pool.submit(_decide_new_items, raw, self.source, self.actor,
                                            self.digest, self.started_at)
                ahead.append((chunk, raw, decided))
            else:
                ahead.append((chunk, raw, None))
            if len(ahead) > window:
                yield ahead.popleft()
        yield from ahead

    def _record_chunk(self, chunk: Chunk, raw: list[tuple[Any, ...]], decided: Any,
                      progress: ImportProgress | None, state: _Carried, counts: _Counts, *,
                      fresh: bool) -> ImportProgress:
        """Decide one chunk (or take a worker's decision of it) and append it with the
        import stream's next event, in one transaction."""
        stored: list[StoredEvent] = []
        aggregates: list[Aggregate] = []
        opened_outlets = opened_items = 0
        to_stored = self.app.mapper.to_stored_event
        if decided is not None:
            for outlet, events in decided.result():
                opened_outlets += self._open_outlet(outlet, state, stored)
                stored.extend(events)
                opened_items += 1
            state.item = None
        else:
            for run in by_stock_item(balance_row(values) for values in raw):
                outlet, sku = run[0].outlet, run[0].sku
                opened_outlets += self._open_outlet(outlet, state, stored)
                item = self._stock_item(outlet, sku, run, chunk, state, fresh=fresh)
                if item is None:
                    item = StockItem.open(outlet, sku)
                    opened_items += 1
                receive_rows(item, run, self._context)
                aggregates.append(item)
                state.touched.append(item)
                state.item = item
                versions = item.version - len(item.pending_events)
                stored.extend(to_stored(event) for event in item.collect_events())
                state.versions.append(versions)
        if progress is None:
            progress = ImportProgress.start(self.source, self.digest, self.rows, self.chunks,
                                            self.chunk_rows, self.actor)
        progress.record_chunk(chunk.index, chunk.first_row, chunk.rows)
        state.touched.append(progress)
        stored.extend(to_stored(event) for event in progress.collect_events())
        positions = self.app.recorder.insert_events(stored)
        if not positions:
            raise InvariantBroken("the append returned no positions")
        self.app.take_snapshots(aggregates, state.versions)
        state.recorded()
        counts.rows += chunk.rows
        counts.outlets += opened_outlets
        counts.stock_items += opened_items
        counts.last_position = max(positions)
        if counts.first_position is None:
            counts.first_position = min(positions)
        return progress

    def _open_outlet(self, outlet: str, state: _Carried, stored: list[StoredEvent]) -> int:
        """Open `outlet` in this chunk if the store does not hold it yet: 1 if opened."""
        if state.outlet != outlet:
            state.outlet = outlet
            state.outlet_recorded = self.app.load(identity.outlet_id(outlet)) is not None
        if state.outlet_recorded:
            return 0
        opened = Outlet.open(outlet, self.actor)
        state.outlet_recorded = True
        state.touched.append(opened)
        stored.extend(self.app.mapper.to_stored_event(e) for e in opened.collect_events())
        return 1

    def _stock_item(self, outlet: str, sku: str, run: list[BalanceRow], chunk: Chunk,
                    state: _Carried, *, fresh: bool) -> StockItem | None:
        """The stock item to decide `run` on: the one the last chunk ended with, or the
        store's (checked again, on fresh state, against its batches); None if it has none."""
        item_id = identity.stock_item_id(outlet, sku)
        if state.item is not None and state.item.id == item_id:
            return state.item
        if fresh or self.spill.in_store(outlet, sku) or chunk.continues_item:
            loaded = self.app.load(item_id)
            if isinstance(loaded, StockItem):
                if fresh:
                    conflicts = list(_store_conflicts(
                        loaded, self.spill.batches_before(outlet, sku, chunk.first_row), run))
                    if conflicts:
                        raise BatchConflict(str(conflicts[0]))
                return loaded
        return None

    def _context(self, row: BalanceRow) -> MovementContext:
        return receipt_context(row, self.source, self.actor, self.digest, self.started_at)


# --------------------------------------------------------------------------- worker processes


_worker_app: LedgerApplication | None = None
_worker_error: BaseException | None = None


def _open_worker(url: str, parent: int) -> None:
    """A worker's start: its own application, for the store's mapper (how events are
    encoded), whatever the store's settings; and a watch on the importing process, `parent`:
    a worker whose parent was killed would wait for its next task for ever. A failure to
    open is kept for the first chunk to raise."""
    global _worker_app, _worker_error
    threading.Thread(target=_exit_with, args=(parent,), daemon=True).start()
    try:
        _worker_app = open_application(url)
    except Exception as error:
        _worker_error = error
        return
    multiprocessing.util.Finalize(None, _worker_app.close, exitpriority=10)


def _exit_with(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(WORKER_WATCH_SECONDS)
    os._exit(1)


def _ready() -> None:
    """Nothing: a worker that ran it has started."""


def _decide_new_items(raw: list[tuple[Any, ...]], source: str, actor: str, digest: str,
                      started_at: datetime) -> list[tuple[str, list[StoredEvent]]]:
    """A worker decides a chunk of whole stock items the store does not hold: each opened,
    then its rows received, as the importing process would; returns each item's outlet and
    its events, encoded."""
    if _worker_error is not None:
        raise _worker_error
    assert _worker_app is not None, "the worker's application is opened at its start"
    to_stored = _worker_app.mapper.to_stored_event
    decided = []
    for run in by_stock_item(balance_row(values) for values in raw):
        item = StockItem.open(run[0].outlet, run[0].sku)
        receive_rows(item, run,
                     lambda row: receipt_context(row, source, actor, digest, started_at))
        decided.append((run[0].outlet, [to_stored(e) for e in item.collect_events()]))
    return decided


# --------------------------------------------------------------------------- helpers


class _Lines:
    """The physical lines of a file after its first (`first`: None if the file is empty),
    counted, with about how many bytes they held."""

    def __init__(self, stream: BinaryIO, digest: Any) -> None:
        self._lines = physical_lines(stream, digest)
        self.first = next(self._lines, None)
        self.count = 0 if self.first is None else 1
        self.bytes = 0 if self.first is None else 1 + len(self.first[1] or b"")

    def __iter__(self) -> Iterator[tuple[int, bytes | None]]:
        for number, line in self._lines:
            self.count = number
            self.bytes += 1 + (MAX_LINE_BYTES if line is None else len(line))
            yield number, line

    def drain(self) -> None:
        for _ in self:
            pass


def _store_conflicts(item: StockItem, imported_here: set[str],
                     rows: list[BalanceRow]) -> Iterator[RowProblem]:
    recorded = {b.batch_id: b.expires_on for b in item.batches.values()}
    return already_recorded(recorded, imported_here, rows)


def cost_places_problems(run: list[BalanceRow], settings: StoreSettings) -> list[Problem]:
    """The rows whose unit cost has more decimal places than the store's costs may have."""
    problems: list[Problem] = []
    for row in run:
        try:
            check_unit_cost(settings, row.unit_cost)
        except InvalidInput as error:
            problems.append((row.line, error.field, error.message))
    return problems


def _checked_text(field: str, value: str, longest: int) -> str:
    try:
        text = _TEXT.validate_python(value)
    except ValidationError as error:
        raise InvalidInput(field, error.errors()[0]["msg"].removeprefix("Value error, ")) \
            from None
    if len(text) > longest:
        raise InvalidInput(field, f"is longer than {longest} characters")
    return str(text)


class _Counts:
    __slots__ = ("first_position", "last_position", "outlets", "rows", "stock_items")

    def __init__(self) -> None:
        self.rows = 0
        self.outlets = 0
        self.stock_items = 0
        self.first_position: int | None = None
        self.last_position: int | None = None


class _Carried:
    """What one chunk leaves the next: the outlet it ended in, whether that is recorded, and
    the stock item it ended with (the next may go on with its rows); and what the chunk
    being recorded decided, to forget if its append fails."""

    __slots__ = ("item", "outlet", "outlet_recorded", "touched", "versions")

    def __init__(self) -> None:
        self.outlet: str | None = None
        self.outlet_recorded = False
        self.item: StockItem | None = None
        self.touched: list[Aggregate] = []
        self.versions: list[int] = []

    def recorded(self) -> None:
        self.touched = []
        self.versions = []

    def forget(self, app: LedgerApplication) -> None:
        """After a failed append: the decided aggregates hold changes that were not
        recorded; the cache must not keep them."""
        for aggregate in self.touched:
            app.evict(aggregate.id)
        self.recorded()
        self.item = None
        self.outlet = None
