"""What the database refuses a role. On PostgreSQL the store's roles are granted only what
they need (`docs/append_only_role.sql`): the auditor reads and writes nothing, the app role
appends but creates nothing. A refusal is a condition an operator repairs (run the command
as a role that may, or grant it), never an outage to retry."""

from __future__ import annotations

import psycopg


def permission_denied(error: BaseException) -> bool:
    """Whether `error`, or an error it was raised from, is the server refusing this role a
    privilege (SQLSTATE 42501, `insufficient_privilege`). The library's errors keep only the
    message of psycopg's, so the message is recognised too."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, psycopg.errors.InsufficientPrivilege) \
                or str(seen).startswith(("permission denied", "must be owner of")):
            return True
        seen = seen.__cause__ or seen.__context__
    return False
