"""The few places where PostgreSQL and SQLite SQL differ, so read-model SQL is written once.

Statements are written with `%s` placeholders and PostgreSQL types; `Dialect.sql` adapts them.
"""

from __future__ import annotations

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
