"""The read models' schema: the tracking and state tables, each projection's tables in a
generation, and the views that point readers at the live generation."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from projections import generations, journal, stuck, tracking
from projections.registry import BY_NAME, PROJECTIONS
from projections.store import STATE_TABLE, ReadStore

DROP_TABLE = "DROP TABLE IF EXISTS {table}"
DROP_VIEW = "DROP VIEW IF EXISTS {view}"
CREATE_VIEW = "CREATE VIEW {view} AS SELECT * FROM {table}"
REPLACE_VIEW = "CREATE OR REPLACE VIEW {view} AS SELECT * FROM {table}"
COLUMNS_SQLITE = "SELECT name FROM pragma_table_info(?)"
COLUMNS_POSTGRES = ("SELECT column_name AS name FROM information_schema.columns "
                    "WHERE table_schema = %s AND table_name = %s")

LATEST_COLUMNS: Mapping[str, tuple[str, Sequence[str]]] = {
    journal.NAME: ("journal", journal.COLUMNS),
}
"""Per projection, a table and the columns its latest shape has: a live generation created
by an earlier version lacks some, and `outdated` names it for a rebuild."""


def create(store: ReadStore) -> None:
    """Create whatever of the read models' schema is missing (every statement is idempotent)."""
    tracking.create_table(store)
    with store.transaction() as cursor:
        generations.create_state(store, cursor, (p.name for p in PROJECTIONS))
        stuck.create_table(store, cursor)
    for name, generation in generations.generations(store).items():
        with store.transaction() as cursor:
            create_tables(store, cursor, name, generation)
            point_views(store, cursor, name, generation, replace=False)


def outdated(store: ReadStore) -> list[str]:
    """The projections whose live generation was created before their tables' latest shape
    (the journal before it kept costs): `ReadModels.create` rebuilds them."""
    live = generations.generations(store)
    found = []
    for name, (base, columns) in LATEST_COLUMNS.items():
        if name not in live:
            continue
        table = store.tables(name, live[name])[base].rsplit(".", 1)[-1]
        with store.transaction() as cursor:
            if store.dialect.name == "sqlite":
                cursor.execute(COLUMNS_SQLITE, (table,))
            else:
                cursor.execute(COLUMNS_POSTGRES, (store.datastore.schema, table))
            present = {row["name"] for row in cursor.fetchall()}
        if not set(columns) <= present:
            found.append(name)
    return found


def exists(store: ReadStore) -> bool:
    """Whether the read models' schema was created (by `ledger init` or the projector), in
    one catalog query: reads and verification need it, and create nothing themselves, so
    that a role without DDL rights (the app's, the auditor's) can run them."""
    return store.tables_exist([STATE_TABLE, store.tracking_table_name])


def create_tables(store: ReadStore, cursor: Any, name: str, generation: int) -> None:
    BY_NAME[name].prepare(cursor, store.dialect, store.tables(name, generation))


def drop_tables(store: ReadStore, cursor: Any, name: str, generation: int) -> None:
    for table in store.tables(name, generation).values():
        cursor.execute(DROP_TABLE.format(table=table))


def point_views(store: ReadStore, cursor: Any, name: str, generation: int, *,
                replace: bool) -> None:
    """Point projection `name`'s views at `generation`, in the caller's transaction (with
    `replace`, over views that exist and read another generation)."""
    tables = store.tables(name, generation)
    for base, view in store.views(name).items():
        # CREATE OR REPLACE cannot change a view's columns (another generation's may
        # differ), and SQLite has no OR REPLACE.
        if replace or store.dialect.name == "sqlite":
            cursor.execute(DROP_VIEW.format(view=view))
            cursor.execute(CREATE_VIEW.format(view=view, table=tables[base]))
        else:
            cursor.execute(REPLACE_VIEW.format(view=view, table=tables[base]))
