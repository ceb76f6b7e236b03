"""API tokens: who may call the HTTP service, in which role, at which outlets.

A token is shown once, when created; the store keeps only the sha256 of it, so a copy of the
database gives no one a till's credentials. The table lives in the store itself (both
backends) so every worker process and every restart sees the same tokens.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from ledger.domain.errors import LedgerError
from ledger.store.application import LedgerApplication
from projections.store import ReadStore

Role = Literal["till", "store", "auditor", "admin"]
ROLES: tuple[Role, ...] = ("till", "store", "auditor", "admin")
PREFIX = "slk_"
"""Marks a stockledger token, so secret scanners and people can tell one when they see it."""

CREATE = """
    CREATE TABLE IF NOT EXISTS {table} (
        name TEXT PRIMARY KEY,
        role TEXT NOT NULL,
        outlets TEXT NOT NULL,
        token_hash TEXT NOT NULL UNIQUE,
        created_at TEXT NOT NULL,
        revoked_at TEXT
    )"""


class TokenError(LedgerError):
    """A token could not be created or revoked (the name is taken, or unknown); the CLI
    refuses it as any other ledger error."""


@dataclass(frozen=True)
class Token:
    """A verified caller: its name (recorded as the actor of what it does), role and outlets."""

    name: str
    role: Role
    outlets: frozenset[str]

    @property
    def scoped(self) -> bool:
        """Tills and stores act only at their outlets; auditors and admins are not scoped."""
        return self.role in ("till", "store")

    def covers(self, outlet: str | None) -> bool:
        return not self.scoped or (outlet is not None and outlet in self.outlets)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class TokenStore:
    """The token table of one store."""

    def __init__(self, app: LedgerApplication) -> None:
        self._store = ReadStore(app)
        self._table = f"{self._store.prefix}ledger_api_tokens"

    def create_table(self) -> None:
        with self._store.transaction() as cursor:
            cursor.execute(self._store.sql(CREATE, table=self._table))

    def ensure_table(self) -> None:
        """Create the table unless it exists, asking the catalog first: the service may run
        as a role without DDL rights (`docs/append_only_role.sql`), for which even `CREATE
        TABLE IF NOT EXISTS` of a table that exists is refused."""
        if not self._store.tables_exist(["ledger_api_tokens"]):
            self.create_table()

    def create(self, name: str, role: Role, outlets: list[str]) -> str:
        """Store a new token's hash and return the token, which is never shown again."""
        if role in ("till", "store") and not outlets:
            raise TokenError(f"a {role} token needs at least one --outlet")
        token = PREFIX + secrets.token_urlsafe(32)  # 32 random bytes
        self.ensure_table()
        if self._rows("WHERE name = %s", [name]):
            raise TokenError(f"a token named {name} exists already (names are never reused)")
        with self._store.transaction() as cursor:
            cursor.execute(self._store.sql(
                f"INSERT INTO {self._table} (name, role, outlets, token_hash, created_at) "
                "VALUES (%s, %s, %s, %s, %s)"),
                [name, role, json.dumps(sorted(set(outlets))), hash_token(token),
                 datetime.now(UTC).isoformat()])
        return token

    def listing(self) -> list[dict[str, Any]]:
        self.ensure_table()
        return [{"name": row["name"], "role": row["role"], "outlets": json.loads(row["outlets"]),
                 "created_at": row["created_at"], "revoked_at": row["revoked_at"]}
                for row in self._rows("ORDER BY name", [])]

    def revoke(self, name: str) -> None:
        self.ensure_table()
        if not self._rows("WHERE name = %s AND revoked_at IS NULL", [name]):
            raise TokenError(f"no live token named {name}")
        with self._store.transaction() as cursor:
            cursor.execute(self._store.sql(
                f"UPDATE {self._table} SET revoked_at = %s WHERE name = %s"),
                [datetime.now(UTC).isoformat(), name])

    def verify(self, token: str) -> Token | None:
        """The live token whose hash this is, or None. Looked up by hash: the secret itself
        is never compared, so timing tells nothing about it."""
        rows = self._rows("WHERE token_hash = %s AND revoked_at IS NULL", [hash_token(token)])
        if not rows:
            return None
        row = rows[0]
        role: Role = row["role"]
        return Token(row["name"], role, frozenset(json.loads(row["outlets"])))

    def _rows(self, where: str, params: list[Any]) -> list[dict[str, Any]]:
        return self._store.query(self._store.sql(
            f"SELECT name, role, outlets, created_at, revoked_at FROM {self._table} {where}"),
            params)
