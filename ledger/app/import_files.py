"""Reading an import file: its lines, a bounded length each, its header, and each row checked
by the receipt command's own rules; and the spill, where the valid rows wait on disk.

Nothing here holds more than one line, or one block of lines, in memory: a line longer than
`MAX_LINE_BYTES` is read and dropped a block at a time, and rows go to the spill, a private
temporary SQLite database on disk with a bounded page cache.
"""

from __future__ import annotations

import csv
import itertools
import sqlite3
from collections.abc import Iterable, Iterator
from datetime import date, datetime
from typing import Any, BinaryIO

from pydantic import ValidationError

from ledger.app import commands as c
from ledger.domain.opening_balances import BalanceRow, Chunk, RowProblem

COLUMNS = ("outlet", "sku", "batch", "quantity", "expires_on", "unit_cost", "received_at")
"""The columns of an import file, named in its header row, in any order."""
MAX_LINE_BYTES = 4096
"""The longest line accepted: seven fields at their longest (ids of 100 characters, up to
four bytes each in UTF-8) fit with room to spare; a longer line is refused unread."""

_FIELD_OF = {"batch_id": "batch", "occurred_at": "received_at"}
"""The column of each field of the receipt command that has another name."""
_COLUMN_ORDER = {name: index for index, name in enumerate(COLUMNS)}

Problem = tuple[int, str, str]
"""A `RowProblem` as a plain tuple (line, field, message), as worker processes send it."""
Spilled = tuple[Any, ...]
"""A valid row, normalised, as the spill stores it (`spilled`)."""


def physical_lines(stream: BinaryIO, digest: Any) -> Iterator[tuple[int, bytes | None]]:
    """Each line of `stream` with its number, without its line ending; None for a line
    longer than `MAX_LINE_BYTES`, whose rest is read and dropped a block at a time. Every
    byte read goes into `digest`."""
    limit = MAX_LINE_BYTES + 2  # room for "\r\n"
    number = 0
    while True:
        line = stream.readline(limit)
        if not line:
            return
        number += 1
        digest.update(line)
        ended = line.endswith(b"\n")
        content = line[:-1] if ended else line
        if content.endswith(b"\r"):
            content = content[:-1]
        if not ended and len(line) == limit:
            while not ended:
                rest = stream.readline(1 << 16)
                digest.update(rest)
                ended = not rest or rest.endswith(b"\n")
            yield number, None
        elif len(content) > MAX_LINE_BYTES:
            yield number, None
        else:
            yield number, content


def fields_of(text: str) -> list[str]:
    """The fields of one CSV line (RFC 4180 quoting; a field may not span lines)."""
    if '"' not in text:
        return text.split(",")
    return next(csv.reader([text], strict=True))


def header(line: bytes | None) -> tuple[list[int], list[RowProblem]]:
    """Where each of `COLUMNS` is in a row, and what is wrong with the header row."""
    if line is None:
        return [], [RowProblem(1, "header", f"is longer than {MAX_LINE_BYTES} bytes")]
    try:
        names = [name.strip() for name in fields_of(line.decode("utf-8-sig"))]
    except (UnicodeDecodeError, csv.Error) as error:
        return [], [RowProblem(1, "header", f"cannot be read: {error}")]
    problems = []
    positions: dict[str, int] = {}
    for index, name in enumerate(names):
        if name not in COLUMNS:
            problems.append(RowProblem(1, name or f"column {index + 1}",
                                       f"is not a column of an import ({', '.join(COLUMNS)})"))
        elif name in positions:
            problems.append(RowProblem(1, name, "is named twice"))
        positions.setdefault(name, index)
    problems += [RowProblem(1, name, "is missing from the header row")
                 for name in COLUMNS if name not in positions]
    if problems:
        return [], problems
    return [positions[name] for name in COLUMNS], []


def validate_row(line: int, values: dict[str, str]) -> c.ReceiveStock | list[Problem]:
    """A row as the receipt command it records, validated by that command's rules, or
    every field of it those rules refuse. (Its actor and reference, the same for every row
    but for the line number, are checked by the same rules once for the file.)"""
    data: dict[str, Any] = {
        "outlet": values["outlet"], "sku": values["sku"], "batch_id": values["batch"],
        "quantity": values["quantity"], "expires_on": values["expires_on"] or None,
        "unit_cost": values["unit_cost"] or None}
    if values["received_at"]:
        data["occurred_at"] = values["received_at"]
    try:
        return c.ReceiveStock.model_validate(data)
    except ValidationError as error:
        found = [(line, _FIELD_OF.get(one.field, one.field), one.message)
                 for one in c.invalid_inputs(c.ReceiveStock, error)]
        return sorted(found, key=lambda problem: _COLUMN_ORDER.get(problem[1], len(COLUMNS)))


UNDATED = 2**62
"""The sort key of a row without a received time: it is received at the import's, after
every dated row."""


def spilled(line: int, command: c.ReceiveStock) -> Spilled:
    """A valid row as the spill stores it: ISO dates and times, the cost as the receipt
    records it, and a key that sorts by received time (microseconds since 1970)."""
    received = command.occurred_at
    return (line, command.outlet, command.sku, command.batch_id, command.quantity,
            None if command.expires_on is None else command.expires_on.isoformat(),
            None if command.unit_cost is None else str(command.unit_cost),
            None if received is None else received.isoformat(),
            UNDATED if received is None else round(received.timestamp() * 1_000_000))


def check_line(number: int, line: bytes, order: list[int]) -> Spilled | list[Problem]:
    """One line of rows: the row it holds, spilled, or every problem with it."""
    try:
        fields = fields_of(line.decode("utf-8"))
    except UnicodeDecodeError as error:
        return [(number, "line", f"is not UTF-8 text (byte {error.start + 1})")]
    except csv.Error as error:
        return [(number, "line", f"is not a CSV row: {error}")]
    width = len(order)
    if len(fields) != width:
        if len(fields) < width:
            missing = next(name for name, index in zip(COLUMNS, order, strict=True)
                           if index >= len(fields))
            return [(number, missing, f"is missing: the line has {len(fields)} fields, the "
                                      f"header {width}")]
        return [(number, "line", f"has {len(fields)} fields, the header {width}")]
    values = dict(zip(COLUMNS, (fields[index] for index in order), strict=True))
    command = validate_row(number, values)
    if isinstance(command, list):
        return command
    return spilled(number, command)


def check_block(block: list[tuple[int, bytes]],
                order: list[int]) -> tuple[list[Spilled], list[Problem]]:
    """`check_line` over a block of lines (what a worker process is sent)."""
    rows: list[Spilled] = []
    problems: list[Problem] = []
    for number, line in block:
        checked = check_line(number, line, order)
        if isinstance(checked, list):
            problems.extend(checked)
        else:
            rows.append(checked)
    return rows, problems


# --------------------------------------------------------------------------- the spill


_SCHEMA = """
CREATE TABLE rows (line INTEGER PRIMARY KEY, outlet TEXT, sku TEXT, batch TEXT,
                   quantity INTEGER, expires_on TEXT, unit_cost TEXT, received_at TEXT,
                   received_key INTEGER);
CREATE TABLE ordered (rank INTEGER PRIMARY KEY, line INTEGER, outlet TEXT, sku TEXT,
                      batch TEXT, quantity INTEGER, expires_on TEXT, unit_cost TEXT,
                      received_at TEXT);
CREATE TABLE items (first_rank INTEGER PRIMARY KEY, rows INTEGER, outlet TEXT, sku TEXT,
                    in_store INTEGER NOT NULL DEFAULT 0);
CREATE UNIQUE INDEX items_by_name ON items (outlet, sku);
CREATE TABLE chunks (chunk INTEGER PRIMARY KEY, first_rank INTEGER, rows INTEGER,
                     continues_item INTEGER, pure INTEGER);
CREATE TABLE problems (line INTEGER, field TEXT, message TEXT);
CREATE TABLE store_items (outlet TEXT, sku TEXT, PRIMARY KEY (outlet, sku)) WITHOUT ROWID;
CREATE TABLE stored_totals (outlet TEXT, sku TEXT, quantity INTEGER,
                            PRIMARY KEY (outlet, sku)) WITHOUT ROWID;
"""
_ROW_COLUMNS = "line, outlet, sku, batch, quantity, expires_on, unit_cost, received_at"


def _stock_item_of(values: tuple[Any, ...]) -> tuple[Any, Any]:
    return values[0], values[1]


def balance_row(values: tuple[Any, ...]) -> BalanceRow:
    """A row of the spill's `ordered` table (`_ROW_COLUMNS`) as the domain's row."""
    line, outlet, sku, batch, quantity, expires_on, unit_cost, received_at = values
    return BalanceRow(line, outlet, sku, batch, quantity,
                      None if expires_on is None else date.fromisoformat(expires_on),
                      unit_cost,
                      None if received_at is None else datetime.fromisoformat(received_at))


class Spill:
    """A private temporary SQLite database on disk holding an import's rows and problems.

    SQLite deletes it when it is closed (its file is never visible in the file system, so a
    killed run leaves nothing behind), and its page cache is bounded (16 MiB), so memory does
    not grow with the file.
    """

    def __init__(self) -> None:
        self.db = sqlite3.connect("")
        for pragma in ("journal_mode = OFF", "synchronous = OFF", "cache_size = -16384",
                       "temp_store = FILE"):
            self.db.execute(f"PRAGMA {pragma}")
        self.db.executescript(_SCHEMA)

    def close(self) -> None:
        self.db.close()

    def add_rows(self, rows: list[Spilled]) -> None:
        self.db.executemany("INSERT INTO rows VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
        self.db.commit()

    def add_problems(self, problems: Iterable[Problem]) -> int:
        values = list(problems)
        self.db.executemany("INSERT INTO problems VALUES (?, ?, ?)", values)
        self.db.commit()
        return len(values)

    def order(self) -> int:
        """Sort the rows into the import's order (outlet, SKU, received time, line), ranked
        from 1; return how many."""
        self.db.execute(
            f"INSERT INTO ordered ({_ROW_COLUMNS}) SELECT {_ROW_COLUMNS} FROM rows "
            "ORDER BY outlet, sku, received_key, line")
        self.db.execute("DELETE FROM rows")
        self.db.commit()
        return self.count("ordered")

    def count(self, table: str) -> int:
        row = self.db.execute(f"SELECT count(*) FROM {table}").fetchone()
        return int(row[0])

    def rows_in_order(self, after: int = 0, until: int | None = None) -> Iterator[BalanceRow]:
        """The rows ranked after `after` (up to `until`), in the import's order."""
        for values in self.raw_rows(after, until):
            yield balance_row(values)

    def raw_rows(self, after: int = 0, until: int | None = None) -> Iterator[tuple[Any, ...]]:
        """`rows_in_order` as the spill's plain tuples (what a worker process is sent)."""
        yield from self.db.execute(
            f"SELECT {_ROW_COLUMNS} FROM ordered WHERE rank > ? AND rank <= ? ORDER BY rank",
            (after, c.MAX_POSITION if until is None else until))

    def batches_before(self, outlet: str, sku: str, rank: int) -> set[str]:
        """The batch ids of a stock item's rows ranked before `rank`."""
        found = self.db.execute("SELECT first_rank FROM items WHERE outlet = ? AND sku = ?",
                                (outlet, sku)).fetchone()
        if found is None:
            return set()
        return {str(b) for (b,) in self.db.execute(
            "SELECT batch FROM ordered WHERE rank >= ? AND rank < ?", (found[0], rank))}

    def problems(self) -> Iterator[RowProblem]:
        for line, field, message in self.db.execute(
                "SELECT line, field, message FROM problems ORDER BY line, rowid"):
            yield RowProblem(line, field, message)

    def add_items(self, items: list[tuple[int, int, str, str]]) -> None:
        """Stock items as (first rank, rows, outlet, SKU)."""
        self.db.executemany("INSERT INTO items (first_rank, rows, outlet, sku) "
                            "VALUES (?, ?, ?, ?)", items)
        self.db.commit()

    def stock_items_in_order(self) -> Iterator[tuple[int, int, str, str, bool]]:
        """Each stock item's first rank, rows, outlet and SKU, and whether a batch id is on
        more than one of its rows, in the import's order: the runs `by_stock_item` makes
        (the rows are sorted by outlet and SKU), read as three plain columns a row."""
        rank = 1
        for (outlet, sku), run in itertools.groupby(
                self.db.execute("SELECT outlet, sku, batch FROM ordered ORDER BY rank"),
                key=_stock_item_of):
            batches = [values[2] for values in run]
            yield rank, len(batches), outlet, sku, len(set(batches)) < len(batches)
            rank += len(batches)

    def item_sizes(self) -> Iterator[tuple[int, int, bool]]:
        """Each stock item's rows, first rank and whether the store holds it, in order."""
        for rows, first_rank, in_store in self.db.execute(
                "SELECT rows, first_rank, in_store FROM items ORDER BY first_rank"):
            yield int(rows), int(first_rank), bool(in_store)

    def add_store_items(self, items: Iterable[tuple[str, str]]) -> None:
        """Stock items the store holds; those the file has are marked `in_store`."""
        self.db.executemany("INSERT OR IGNORE INTO store_items VALUES (?, ?)", items)
        self.db.execute("UPDATE items SET in_store = 1 WHERE EXISTS (SELECT 1 FROM "
                        "store_items s WHERE s.outlet = items.outlet AND s.sku = items.sku)")
        self.db.commit()

    def in_store(self, outlet: str, sku: str) -> bool:
        return self.db.execute("SELECT 1 FROM items WHERE outlet = ? AND sku = ? AND "
                               "in_store", (outlet, sku)).fetchone() is not None

    def store_items_after(self, rank: int) -> list[tuple[str, str, int, int]]:
        """The stock items the store holds that have rows ranked after `rank`: each with
        the ranks of the first such row and of its last row."""
        return [(str(o), str(s), max(int(f), rank + 1), int(f) + int(n) - 1)
                for o, s, f, n in self.db.execute(
                    "SELECT outlet, sku, first_rank, rows FROM items WHERE in_store AND "
                    "first_rank + rows - 1 > ? ORDER BY first_rank", (rank,))]

    def add_chunks(self, chunks: Iterable[tuple[Chunk, bool]]) -> None:
        """The import's chunks, each with whether a worker process may decide it."""
        self.db.execute("DELETE FROM chunks")
        self.db.executemany("INSERT INTO chunks VALUES (?, ?, ?, ?, ?)", (
            (chunk.index, chunk.first_row, chunk.rows, int(chunk.continues_item), int(pure))
            for chunk, pure in chunks))
        self.db.commit()

    def chunks(self, start: int) -> Iterator[tuple[Chunk, bool]]:
        """The chunks from `start` on, each with whether a worker may decide it."""
        for index, first, rows, continues, pure in self.db.execute(
                "SELECT chunk, first_rank, rows, continues_item, pure FROM chunks "
                "WHERE chunk >= ? ORDER BY chunk", (start,)).fetchall():
            yield Chunk(int(index), int(first), int(rows), bool(continues)), bool(pure)

    def add_stored_totals(self, totals: Iterable[tuple[str, str, int]]) -> None:
        self.db.executemany("INSERT OR REPLACE INTO stored_totals VALUES (?, ?, ?)", totals)
        self.db.commit()

    def stored_totals(self) -> Iterator[tuple[str, str, int]]:
        """The old system's stored totals, in (outlet, SKU) order (the rows' order)."""
        for outlet, sku, quantity in self.db.execute(
                "SELECT outlet, sku, quantity FROM stored_totals ORDER BY outlet, sku"):
            yield str(outlet), str(sku), int(quantity)
