"""What a read model is: its tables, their DDL, and how a batch of events becomes rows.

A projection knows nothing of generations, views, positions or transactions: the runner names
its tables (`ledger_batches_g3`), opens the transaction, hands it the events and records the
position the rows were written up to.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol, TypeVar

from ledger.domain.movements import Movement
from projections.dialect import Dialect

Folded = tuple[int, object, Sequence[Movement]]
"""One event of a batch as a projection receives it: its position, the event, and its
movements (worked out once for every projection)."""

ChangesT = TypeVar("ChangesT")


class Projection(Protocol[ChangesT]):
    """A read model: its tables, how to create them and how to write a batch of events."""

    @property
    def name(self) -> str:
        """What its state row, tracking record and CLI argument are called (`stock`)."""
        ...

    @property
    def tables(self) -> tuple[str, ...]:
        """The base names of its tables (`batches`): `{batches}` in its statements."""
        ...

    def prepare(self, cursor: Any, dialect: Dialect, tables: Mapping[str, str]) -> None:
        """Create its tables and indexes, named by `tables`, in the caller's transaction."""
        ...

    def changes(self, folded: Sequence[Folded]) -> ChangesT:
        """The rows a batch of events makes: pure, so it can run before the transaction
        (or in another process)."""
        ...

    def write(self, cursor: Any, dialect: Dialect, tables: Mapping[str, str],
              changes: ChangesT) -> None:
        """Apply a batch's `changes` to its tables, in the caller's transaction."""
        ...


def create_tables(cursor: Any, dialect: Dialect, statements: Sequence[str],
                  tables: Mapping[str, str]) -> None:
    """Run `CREATE` statements that name tables as `{base}`.

    An index's own name takes no schema (it lives in its table's), so in a `CREATE INDEX` the
    names before `ON` are the tables' without their schema.
    """
    bare = {base: table.rsplit(".", 1)[-1] for base, table in tables.items()}
    for statement in statements:
        if statement.startswith("CREATE INDEX"):
            head, _, tail = statement.partition(" ON ")
            statement = head.format(**bare) + " ON " + tail.format(**tables)
        else:
            statement = statement.format(**tables)
        cursor.execute(dialect.sql(statement))
