"""The few places where PostgreSQL and SQLite SQL differ, so read-model SQL is written once.

Statements are written with `%s` placeholders and PostgreSQL types; `Dialect.sql` adapts them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any


@dataclass(frozen=True)
class Dialect:
    name: str  # "postgres" | "sqlite"

    def sql(self, statement: str) -> str:
        if self.name == "sqlite":
            return (statement.replace("%s", "?").replace("TIMESTAMPTZ", "TEXT")
                    .replace("BIGINT", "INTEGER").replace("BOOLEAN", "INTEGER")
                    .replace(" DATE", " TEXT"))
        return statement

    def value(self, value: Any) -> Any:
        """SQLite stores dates and times as ISO text, which sorts like the dates themselves."""
        if self.name == "sqlite" and isinstance(value, (date, datetime)):
            return value.isoformat()
        return value

    def row(self, values: tuple[Any, ...]) -> tuple[Any, ...]:
        if self.name == "sqlite":
            return tuple(self.value(v) for v in values)
        return values

    def insert_rows(self, cursor: Any, table: str, columns: Sequence[str],
                    rows: Iterable[tuple[Any, ...]]) -> None:
        """Insert many rows: COPY on PostgreSQL (an executemany pays a protocol message and
        a parameter check per row), executemany on SQLite (no round trips to save)."""
        if self.name == "sqlite":
            placeholders = ", ".join("?" * len(columns))
            cursor.executemany(
                f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({placeholders})",
                [self.row(row) for row in rows])
            return
        with cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)

    def upsert_rows(self, cursor: Any, table: str, columns: Sequence[str],
                    rows: Sequence[tuple[Any, ...]], on_conflict: str) -> None:
        """`INSERT INTO table (columns) ... ON CONFLICT ...` over many rows.

        On PostgreSQL the rows are copied into a temporary table shaped like `table` (emptied
        at commit) and upserted by one statement; on SQLite the statement runs per row.
        """
        names = ", ".join(columns)
        if self.name == "sqlite":
            placeholders = ", ".join("?" * len(columns))
            cursor.executemany(
                self.sql(f"INSERT INTO {table} ({names}) VALUES ({placeholders}) {on_conflict}"),
                [self.row(row) for row in rows])
            return
        staging = f"{table.rsplit('.', 1)[-1]}_staged"  # temporary tables have their own schema
        cursor.execute(f"CREATE TEMPORARY TABLE IF NOT EXISTS {staging} (LIKE {table}) "
                       "ON COMMIT DELETE ROWS")
        self.insert_rows(cursor, staging, columns, rows)
        cursor.execute(f"INSERT INTO {table} ({names}) SELECT {names} FROM {staging} "
                       f"{on_conflict}")
