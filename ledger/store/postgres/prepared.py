"""One server-side prepared statement, run over a psycopg connection's libpq handle.

A sale's append is one statement whose arguments the recorder writes as text itself. Sent
through psycopg's cursor, each call also pays for the cursor, the query conversion, the
parameter adaptation and the row factory: about as much client CPU as the rest of the append.
Sent here, it costs one `PQsendQueryPrepared`, a wait on the socket and the answer's values,
and the server parses and plans the statement once per connection instead of once per call.
"""

from __future__ import annotations

import contextlib
import select
import weakref
from collections.abc import Callable, Sequence

import psycopg
from psycopg import pq
from psycopg.errors import error_from_result

INVALID_STATEMENT_NAME = b"26000"
DUPLICATE_PREPARED_STATEMENT = b"42P05"


class PreparedStatement:
    """A statement prepared once on each connection it runs on, by name."""

    def __init__(self, name: str, sql: str) -> None:
        self.name = name.encode()
        self.sql = sql.encode()
        self._prepared_on: weakref.WeakSet[psycopg.Connection[object]] = weakref.WeakSet()

    def values(self, connection: psycopg.Connection[object],
               params: Sequence[bytes | None], *, then: bytes | None = None,
               binary: bool = False) -> list[bytes | None]:
        """Run the statement with text parameters (with `binary`, parameters in their types'
        binary formats); the first column of every row it returns.

        `then`, a statement without parameters, is sent with it and run after it as a
        transaction of its own, whether the statement succeeded or failed: one round trip
        for both, and the server runs `then` as soon as the statement has committed, without
        waiting for this process to read the answer and send it.

        Errors are raised as psycopg raises them (`psycopg.errors.UniqueViolation`...). If
        the wait is interrupted (KeyboardInterrupt, a timeout signal), the statement is
        cancelled, as psycopg cancels its own, and the connection closed: it would otherwise
        go back to its pool in the middle of a statement. (A statement that committed before
        the cancel arrived stays recorded, unacknowledged, like any append whose answer was
        lost: the command's retry under its idempotency key finds it.)
        """
        if connection not in self._prepared_on:
            self._prepare(connection)
            self._prepared_on.add(connection)
        formats = [1] * len(params) if binary else None
        result = self._run(connection, params, then, formats)
        if result.status == pq.ExecStatus.FATAL_ERROR and result.error_field(
                pq.DiagnosticField.SQLSTATE) == INVALID_STATEMENT_NAME:
            # Someone ran DISCARD ALL or DEALLOCATE on this session: prepare it again. (A
            # `then` has run already; a queued append then goes without its queue's lock,
            # which costs the next till in the queue a lost race at worst: the stream's
            # version uniqueness still decides.)
            self._prepare(connection)
            result = self._run(connection, params, then, formats)
        _check(result, pq.ExecStatus.TUPLES_OK)
        return [result.get_value(row, 0) for row in range(result.ntuples)]

    def _run(self, connection: psycopg.Connection[object], params: Sequence[bytes | None],
             then: bytes | None, formats: Sequence[int] | None) -> pq.abc.PGresult:
        pgconn = connection.pgconn
        if then is None:
            return _wait(connection, lambda: pgconn.send_query_prepared(
                self.name, params, param_formats=formats))
        # A pipeline with a sync after each statement: each is its own transaction, and
        # the second runs even if the first fails.

        def send() -> None:
            pgconn.send_query_prepared(self.name, params, param_formats=formats)
            pgconn.pipeline_sync()
            pgconn.send_query_params(then, None)
            pgconn.pipeline_sync()

        results = _pipeline(connection, send, syncs=2)
        if results[1].status not in (pq.ExecStatus.TUPLES_OK, pq.ExecStatus.COMMAND_OK):
            # The statement's outcome stands; a session `then` failed to clean up ends here.
            connection.close()
        return results[0]

    def _prepare(self, connection: psycopg.Connection[object]) -> None:
        result = _wait(connection, lambda: connection.pgconn.send_prepare(self.name, self.sql))
        if result.status == pq.ExecStatus.FATAL_ERROR and result.error_field(
                pq.DiagnosticField.SQLSTATE) == DUPLICATE_PREPARED_STATEMENT:
            # Prepared by an earlier call that was interrupted before it could note so. The
            # name stands for this statement only.
            return
        _check(result, pq.ExecStatus.COMMAND_OK)


def run_together(connection: psycopg.Connection[object], statements: Sequence[bytes], *,
                 binary: bool = False) -> pq.abc.PGresult:
    """Run statements without parameters as one transaction, in one round trip; the last
    one's result (in binary format with `binary`).

    They go as a pipeline with one sync: each statement is parsed apart and the first error
    stops the rest, raised as psycopg raises it.
    """
    pgconn = connection.pgconn
    result_format = 1 if binary else 0

    def send() -> None:
        for statement in statements:
            pgconn.send_query_params(statement, None, result_format=result_format)
        pgconn.pipeline_sync()

    results = _pipeline(connection, send, syncs=1)
    for result in results:
        if result.status == pq.ExecStatus.FATAL_ERROR:
            raise error_from_result(result)
    _check(results[-1], pq.ExecStatus.TUPLES_OK)
    return results[-1]


def _pipeline(connection: psycopg.Connection[object], send: Callable[[], None],
              syncs: int) -> list[pq.abc.PGresult]:
    """In pipeline mode, send, then wait for the last result of every statement up to the
    `syncs`-th sync."""
    pgconn = connection.pgconn
    pgconn.enter_pipeline_mode()
    try:
        return _wait_all(connection, send, syncs)
    finally:
        if pgconn.status == pq.ConnStatus.OK:
            try:
                pgconn.exit_pipeline_mode()
            except psycopg.Error:
                pgconn.finish()  # never back to a pool in pipeline mode
                raise


def _wait(connection: psycopg.Connection[object],
          send: Callable[[], None]) -> pq.abc.PGresult:
    """Send one statement, then wait for its result."""
    return _wait_all(connection, send, syncs=0)[0]


def _wait_all(connection: psycopg.Connection[object], send: Callable[[], None],
              syncs: int) -> list[pq.abc.PGresult]:
    """Send, then wait for the last result of each statement: of the one statement sent, or
    in pipeline mode of every statement up to the `syncs`-th sync."""
    pgconn = connection.pgconn
    results: list[pq.abc.PGresult] = []
    result: pq.abc.PGresult | None = None
    try:
        send()
        while pgconn.flush():
            _wait_for(pgconn.socket, writable=True)
        while True:
            while pgconn.is_busy():
                _wait_for(pgconn.socket, writable=False)
                pgconn.consume_input()
            received = pgconn.get_result()
            if received is None:  # the end of one statement's results
                if result is None and not syncs:
                    raise psycopg.OperationalError(pgconn.get_error_message() or "no result")
                if result is not None:
                    results.append(result)
                    result = None
                if not syncs:
                    return results
            elif received.status == pq.ExecStatus.PIPELINE_SYNC:
                syncs -= 1
                if not syncs:
                    return results
            else:
                result = received
    except BaseException:
        if pgconn.transaction_status == pq.TransactionStatus.ACTIVE:
            with contextlib.suppress(Exception):
                connection.cancel_safe(timeout=5.0)
        pgconn.finish()
        raise


def _wait_for(fd: int, *, writable: bool) -> None:
    """Block until the socket is readable (or writable). `poll`, not `select`: a process
    holding more than 1024 descriptors (a server with many clients) has sockets `select`
    cannot watch."""
    if _HAS_POLL:
        poller = select.poll()
        poller.register(fd, select.POLLOUT if writable else select.POLLIN)
        poller.poll()
    else:  # Windows, where select takes any socket
        select.select([], [fd], []) if writable else select.select([fd], [], [])


_HAS_POLL = hasattr(select, "poll")


def _check(result: pq.abc.PGresult, expected: pq.ExecStatus) -> None:
    if result.status != expected:
        raise error_from_result(result)
