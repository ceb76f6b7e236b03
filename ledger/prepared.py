"""One server-side prepared statement, run over a psycopg connection's libpq handle.

A sale's append is one statement whose arguments the recorder writes as text itself. Sent
through psycopg's cursor, each call also pays for the cursor, the query conversion, the
parameter adaptation and the row factory: about as much client CPU as the rest of the append.
Sent here, it costs one `PQsendQueryPrepared`, a wait on the socket and the answer's values,
and the server parses and plans the statement once per connection instead of once per call.
"""

from __future__ import annotations

import select
import weakref
from collections.abc import Sequence

import psycopg
from psycopg import pq
from psycopg.errors import error_from_result

INVALID_STATEMENT_NAME = b"26000"


class PreparedStatement:
    """A statement prepared once on each connection it runs on, by name."""

    def __init__(self, name: str, sql: str) -> None:
        self.name = name.encode()
        self.sql = sql.encode()
        self._prepared_on: weakref.WeakSet[psycopg.Connection[object]] = weakref.WeakSet()

    def values(self, connection: psycopg.Connection[object],
               params: Sequence[bytes | None]) -> list[bytes | None]:
        """Run the statement with text parameters; the first column of every row it returns.

        Errors are raised as psycopg raises them (`psycopg.errors.UniqueViolation`...). If
        the wait is interrupted (KeyboardInterrupt, a timeout signal), the connection is
        closed: it would otherwise go back to its pool in the middle of a statement, and the
        server then ends the statement as it would for a client that went away.
        """
        pgconn = connection.pgconn
        if connection not in self._prepared_on:
            self._prepare(pgconn)
            self._prepared_on.add(connection)
        result = _wait(pgconn, lambda: pgconn.send_query_prepared(self.name, params))
        if result.status == pq.ExecStatus.FATAL_ERROR and result.error_field(
                pq.DiagnosticField.SQLSTATE) == INVALID_STATEMENT_NAME:
            # Someone ran DISCARD ALL or DEALLOCATE on this session: prepare it again.
            self._prepare(pgconn)
            result = _wait(pgconn, lambda: pgconn.send_query_prepared(self.name, params))
        _check(result, pq.ExecStatus.TUPLES_OK)
        return [result.get_value(row, 0) for row in range(result.ntuples)]

    def _prepare(self, pgconn: pq.abc.PGconn) -> None:
        _check(_wait(pgconn, lambda: pgconn.send_prepare(self.name, self.sql)),
               pq.ExecStatus.COMMAND_OK)


def _wait(pgconn: pq.abc.PGconn, send: object) -> pq.abc.PGresult:
    """Send, then wait for the one result of one statement."""
    try:
        send()  # type: ignore[operator]
        while pgconn.flush():
            select.select([], [pgconn.socket], [])
        result: pq.abc.PGresult | None = None
        while True:
            while pgconn.is_busy():
                select.select([pgconn.socket], [], [])
                pgconn.consume_input()
            received = pgconn.get_result()
            if received is None:
                break
            result = received
    except BaseException:
        pgconn.finish()
        raise
    if result is None:
        raise psycopg.OperationalError(pgconn.get_error_message() or "no result")
    return result


def _check(result: pq.abc.PGresult, expected: pq.ExecStatus) -> None:
    if result.status != expected:
        raise error_from_result(result)
