"""The database roles of `docs/append_only_role.sql`, under names unique to one test (roles
are cluster-wide), and a stranger that may log in and was granted nothing; every one of them
dropped afterwards, its sessions ended first."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

from tests.databases import database_url

SCRIPT = Path(__file__).resolve().parents[1] / "docs" / "append_only_role.sql"


@dataclass(frozen=True)
class Roles:
    owner_url: str
    app: str
    projector: str
    auditor: str
    stranger: str

    def url(self, role: str) -> str:
        """The owner's URL with its user replaced by `role` (trust authentication)."""
        scheme, _, rest = self.owner_url.partition("://")
        _, _, host_and_path = rest.rpartition("@")
        return f"{scheme}://{role}@{host_and_path}"

    @property
    def all(self) -> tuple[str, ...]:
        return (self.app, self.projector, self.auditor, self.stranger)


@contextmanager
def made_roles(owner_url: str) -> Iterator[Roles]:
    """Apply `docs/append_only_role.sql` to the store at `owner_url` (its tables made by the
    owner already) under unique role names, and make a stranger: LOGIN, no grants."""
    suffix = secrets.token_hex(4)
    made = Roles(owner_url, f"stockledger_app_{suffix}", f"stockledger_projector_{suffix}",
                 f"stockledger_auditor_{suffix}", f"stockledger_stranger_{suffix}")
    try:
        with psycopg.connect(owner_url, autocommit=True) as connection:
            connection.execute(role_script(made).encode())
            connection.execute(sql.SQL("CREATE ROLE {} LOGIN").format(
                sql.Identifier(made.stranger)))
        yield made
    finally:
        drop_roles(owner_url, made.all)


def role_script(roles: Roles) -> str:
    """`docs/append_only_role.sql` with its role names replaced by `roles`' unique ones."""
    return (SCRIPT.read_text().replace("stockledger_projector", roles.projector)
            .replace("stockledger_auditor", roles.auditor)
            .replace("stockledger_app", roles.app))


def drop_roles(owner_url: str, roles: tuple[str, ...]) -> None:
    """End the roles' sessions, drop what they own in the store's database and drop them."""
    with psycopg.connect(owner_url, autocommit=True) as connection:
        for role in roles:
            connection.execute(sql.SQL(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE usename = {}").format(sql.Literal(role)))
            if connection.execute("SELECT 1 FROM pg_roles WHERE rolname = %s",
                                  (role,)).fetchone():
                # One role at a time: DROP OWNED BY several roles whose default privileges
                # name each other fails on PostgreSQL 15 ("could not find tuple for default
                # ACL").
                connection.execute(sql.SQL("DROP OWNED BY {} CASCADE").format(
                    sql.Identifier(role)))
    with psycopg.connect(database_url(owner_url, "postgres"), autocommit=True) as connection:
        for role in roles:
            connection.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
