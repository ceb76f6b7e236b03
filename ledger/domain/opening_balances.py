"""The rules of an import of opening balances, as pure functions over plain rows.

A row is one batch brought over from the old system at one outlet: it becomes a receipt of
its stock item (`receive_rows`, through `StockItem.receive`, as a receipt command does). What
a file may not hold, beyond what each row's own fields may not (the command boundary's rules,
`ledger.app.commands`):

* two rows naming the same batch of the same stock item with different expiry dates
  (`expiry_conflicts`): a batch has one expiry wherever it goes;
* a batch the ledger already holds at that stock item, unless this very import recorded it
  (`already_recorded`): an opening balance is a batch's first record, so a file imported
  twice under two names, or a changed export of the old system imported again, cannot
  double the stock.

Rows of one batch with the same expiry are receipts of it one after the other (two cost
layers of one lot, say). The reconciliation (`reconcile`) sets the old system's stored total
per stock item beside the sum of the batches imported for it.
"""

from __future__ import annotations

from collections.abc import Callable, Container, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime

from ledger.domain.allocation import is_sellable
from ledger.domain.quantities import BatchIdentity
from ledger.domain.stock_item import MovementContext, StockItem


@dataclass(frozen=True, slots=True)
class BalanceRow:
    """One valid row of an import: a batch of a SKU at an outlet, and the line it came from."""

    line: int
    outlet: str
    sku: str
    batch_id: str
    quantity: int
    expires_on: date | None
    unit_cost: str | None
    received_at: datetime | None
    """None: the row gave no time; it is received at the import's own time."""

    def identity(self) -> BatchIdentity:
        return BatchIdentity(batch_id=self.batch_id, quantity=self.quantity,
                             expires_on=self.expires_on, unit_cost=self.unit_cost)


@dataclass(frozen=True, slots=True)
class RowProblem:
    """Why one line of an import cannot be recorded: its number, the field, the reason."""

    line: int
    field: str
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.field}: {self.message}"


def _expiry(value: date | None) -> str:
    return "no expiry" if value is None else f"expiry {value.isoformat()}"


def by_stock_item(rows: Iterable[BalanceRow]) -> Iterator[list[BalanceRow]]:
    """Runs of consecutive rows of one stock item (rows sorted by outlet and SKU)."""
    run: list[BalanceRow] = []
    for row in rows:
        if run and (row.outlet, row.sku) != (run[0].outlet, run[0].sku):
            yield run
            run = []
        run.append(row)
    if run:
        yield run


def expiry_conflicts(rows: Iterable[BalanceRow]) -> Iterator[RowProblem]:
    """Each row naming a batch that an earlier row of the same stock item gave another
    expiry. `rows`: the rows of one stock item, in the order they are received."""
    first: dict[str, BalanceRow] = {}
    for row in rows:
        earlier = first.setdefault(row.batch_id, row)
        if earlier.expires_on != row.expires_on:
            yield RowProblem(
                row.line, "expires_on",
                f"batch {row.batch_id} of {row.sku} at {row.outlet} has "
                f"{_expiry(earlier.expires_on)} on line {earlier.line}, not "
                f"{_expiry(row.expires_on)}")


def already_recorded(recorded: Mapping[str, date | None], imported_here: Container[str],
                     rows: Iterable[BalanceRow]) -> Iterator[RowProblem]:
    """Each row naming a batch its stock item already holds (`recorded`: batch id to expiry)
    that this import did not record itself (`imported_here`: batch ids an earlier run of the
    same file recorded at this stock item)."""
    for row in rows:
        if row.batch_id not in recorded:
            continue
        if row.batch_id not in imported_here:
            yield RowProblem(
                row.line, "batch",
                f"batch {row.batch_id} of {row.sku} at {row.outlet} is already recorded in "
                "the ledger: an opening balance is a batch's first record")
        elif recorded[row.batch_id] != row.expires_on:
            yield RowProblem(
                row.line, "expires_on",
                f"batch {row.batch_id} of {row.sku} at {row.outlet} is recorded with "
                f"{_expiry(recorded[row.batch_id])}, not {_expiry(row.expires_on)}")


def receive_rows(item: StockItem, rows: Sequence[BalanceRow],
                 context_of: Callable[[BalanceRow], MovementContext]) -> None:
    """Record each row as a receipt of `item`, in order: the stock item decides each one
    (`StockItem.receive`), settling any stock sold into negative first, as a receipt does."""
    for row in rows:
        item.receive(row.identity(), context_of(row))


# --------------------------------------------------------------------------- reconciliation


@dataclass(frozen=True, slots=True)
class ItemTotals:
    """The imported batches of one stock item, summed: all of them, and those available on
    the reconciliation's date (their expiry date not yet come, `is_sellable`)."""

    outlet: str
    sku: str
    batches: int
    quantity: int
    available: int


def item_totals(rows: Iterable[BalanceRow], on_date: date) -> Iterator[ItemTotals]:
    """Per stock item totals of rows sorted by outlet and SKU."""
    for run in by_stock_item(rows):
        yield ItemTotals(
            run[0].outlet, run[0].sku, len(run), sum(r.quantity for r in run),
            sum(r.quantity for r in run if is_sellable(r.expires_on, on_date)))


@dataclass(frozen=True, slots=True)
class StockReconciliation:
    """One stock item: the old system's stored total against the batches imported for it.

    `stored` is None where the old system had no total for the item. The old total counted
    the batches available that day, so that is what it is held against: `drift` is the
    stored total less the imported batches available on the reconciliation's date.
    """

    outlet: str
    sku: str
    stored: int | None
    batches: int
    imported: int
    imported_available: int

    @property
    def drift(self) -> int:
        return (self.stored or 0) - self.imported_available

    @property
    def drifted(self) -> bool:
        return self.drift != 0


def reconcile(stored: Iterable[tuple[str, str, int]],
              imported: Iterable[ItemTotals]) -> Iterator[StockReconciliation]:
    """Every stock item of either side, in (outlet, SKU) order: both inputs sorted by
    (outlet, SKU), each item once; merged a row at a time, so memory stays flat."""
    left, right = iter(stored), iter(imported)
    old, new = next(left, None), next(right, None)
    while old is not None or new is not None:
        if new is None or (old is not None and (old[0], old[1]) < (new.outlet, new.sku)):
            assert old is not None
            yield StockReconciliation(old[0], old[1], old[2], 0, 0, 0)
            old = next(left, None)
        elif old is None or (new.outlet, new.sku) < (old[0], old[1]):
            yield StockReconciliation(new.outlet, new.sku, None, new.batches, new.quantity,
                                      new.available)
            new = next(right, None)
        else:
            yield StockReconciliation(new.outlet, new.sku, old[2], new.batches, new.quantity,
                                      new.available)
            old, new = next(left, None), next(right, None)


# --------------------------------------------------------------------------- chunks


@dataclass(frozen=True, slots=True)
class Chunk:
    """Rows `first_row` to `first_row + rows - 1` (in the import's order), recorded in one
    transaction. `continues_item`: its first row's stock item began in the chunk before."""

    index: int
    first_row: int
    rows: int
    continues_item: bool


def plan_chunks(item_rows: Iterable[int], chunk_rows: int) -> Iterator[Chunk]:
    """The chunks of an import whose stock items have `item_rows` rows each, in order: whole
    stock items, as many as fit in `chunk_rows` rows; a stock item with more rows is split
    into chunks of `chunk_rows` rows, its last part the start of the next chunk. The same
    rows make the same chunks, run after run."""
    index, first, size, continues = 0, 1, 0, False
    for count in item_rows:
        if size and size + count > chunk_rows:
            yield Chunk(index, first, size, continues)
            index, first, size, continues = index + 1, first + size, 0, False
        while count > chunk_rows:  # here the chunk is empty: split the stock item
            yield Chunk(index, first, chunk_rows, continues)
            index, first, continues = index + 1, first + chunk_rows, True
            count -= chunk_rows
        size += count
    if size:
        yield Chunk(index, first, size, continues)
