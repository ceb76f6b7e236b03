"""The embedded default's recorder: the library's SQLite recorder, with the hash chain and each
row's content digest computed in the inserting transaction under SQLite's write lock, and the
ledger's read checks; and the datastore it runs on, which opens the file the way concurrent
tills and read-only copies need.

The library's datastore already waits for SQLite's locks (its busy timeout is the store's
`SQLITE_LOCK_TIMEOUT`) and puts the file in WAL mode, so readers never wait for a writer.
What it does not do:

* **Writes begin `IMMEDIATE`.** It begins every transaction `DEFERRED`, so one that reads
  before it writes (creating what is missing, committing a batch of read models after checking
  their positions) holds a read snapshot when it asks for the write lock. SQLite cannot let
  such a transaction wait (the writer ahead of it may commit rows its snapshot does not see),
  so it fails at once with "database is locked", whatever the busy timeout. A transaction
  opened to write (`commit=True`) now takes the write lock first, waiting its turn for it.
* **Read-only files open read-only.** A file this process may not write (a copy on read-only
  media, a file whose mode forbids it), or any file given with `?mode=ro`, opens with SQLite's
  `mode=ro`; one whose write-ahead-log index cannot be created there either, with
  `immutable=1` (nothing then reads a log, so there must be none with rows in it). Its
  transactions begin plain `BEGIN` and its journal mode is left as it is: reads need no write.
* **Errors name the file.** One the file gives on opening (not a database, damaged, cannot be
  opened, read-only) is a `PersistenceError` naming the file, never a bare `sqlite3` error.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Literal
from urllib.parse import quote
from uuid import UUID

from eventsourcing.persistence import (
    DatabaseError,
    DataError,
    IntegrityError,
    InterfaceError,
    InternalError,
    Notification,
    NotSupportedError,
    OperationalError,
    PersistenceError,
    ProgrammingError,
    StoredEvent,
)
from eventsourcing.sqlite import (
    SQLiteApplicationRecorder,
    SQLiteConnection,
    SQLiteConnectionPool,
    SQLiteCursor,
    SQLiteDatastore,
    SQLiteFactory,
    SQLiteTransaction,
)
from eventsourcing.utils import Environment, EnvType

from ledger.store.hash_chain import (
    GENESIS,
    VERSION_BREAKS_SQL,
    chain_hash,
    content_digest,
)

OPEN_MODE = "LEDGER_SQLITE_OPEN_MODE"
"""How `LedgerSQLiteFactory` opens the file: "ro" (read-only), "immutable" (read-only, and
nothing else writes it either), "rw", or "" (read-only if this process may not write it)."""
OPEN_MODES = ("", "rw", "ro", "immutable")

_SQLITE_READONLY = 8
_SQLITE_CORRUPT = 11
_SQLITE_CANTOPEN = 14
_SQLITE_NOTADB = 26

_LIBRARY_ERRORS: tuple[tuple[type[sqlite3.Error], type[PersistenceError]], ...] = (
    (sqlite3.InterfaceError, InterfaceError),
    (sqlite3.DataError, DataError),
    (sqlite3.OperationalError, OperationalError),
    (sqlite3.IntegrityError, IntegrityError),
    (sqlite3.InternalError, InternalError),
    (sqlite3.ProgrammingError, ProgrammingError),
    (sqlite3.NotSupportedError, NotSupportedError),
    (sqlite3.DatabaseError, DatabaseError),
)


def persistence_error(error: sqlite3.Error, path: str) -> PersistenceError:
    """The library's error for a `sqlite3` one (the same classes its transactions raise),
    saying which file it is about when the file itself is the trouble."""
    code = (getattr(error, "sqlite_errorcode", 0) or 0) & 0xFF
    if code == _SQLITE_READONLY:
        message = f"the store {path} is read-only ({error})"
    elif code in (_SQLITE_NOTADB, _SQLITE_CORRUPT):
        message = f"{path} is not a usable SQLite store: {error}"
    elif code == _SQLITE_CANTOPEN:
        message = f"cannot open the SQLite store {path}: {error}"
    else:
        message = str(error)
    for raw, ours in _LIBRARY_ERRORS:
        if isinstance(error, raw):
            return ours(message)
    return PersistenceError(message)


def may_write(path: str) -> bool:
    """Whether this process may write the file at `path` and what SQLite keeps beside it
    (its write-ahead log and the log's index); True for a file that does not exist yet."""
    file = Path(path)
    if not file.exists():
        return True
    # A file nobody may write is meant to be read only, even by a superuser, whom
    # os.access allows everything.
    if not file.stat().st_mode & 0o222 or not os.access(file, os.W_OK):
        return False
    if os.access(file.parent, os.W_OK | os.X_OK):
        return True
    return all(os.access(f"{path}{suffix}", os.W_OK) for suffix in ("-wal", "-shm"))


def _has_logged_rows(path: str) -> bool:
    wal = Path(f"{path}-wal")
    return wal.exists() and wal.stat().st_size > 0


SETUP_LOCK_TIMEOUT_SECONDS = 30.0


@contextlib.contextmanager
def setup_lock(db_name: str, timeout: float = SETUP_LOCK_TIMEOUT_SECONDS) -> Iterator[None]:
    """Hold an exclusive lock on the store's directory while the store is set up, so that
    processes opening a new store at once set it up one after another (those after the first
    find it done). No lock for a database in memory, or where the platform or the directory
    gives none (there the setup's statements, each creating only what is missing, may race)."""
    try:
        import fcntl
    except ImportError:  # not POSIX
        yield
        return
    if SQLiteConnectionPool.detect_memory_mode(db_name) or db_name.startswith("file:"):
        yield
        return
    directory = Path(db_name).parent
    try:
        directory.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:
        yield  # opening the store says what is wrong with the directory
        return
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise OperationalError(
                        f"another process has been setting up the store {db_name} for "
                        f"{timeout:.0f}s") from None
                time.sleep(0.01)
        yield
    finally:
        os.close(descriptor)  # releases the lock


class LedgerSQLiteTransaction(SQLiteTransaction):
    """A transaction that takes the write lock first if it is meant to write."""

    connection: LedgerSQLiteConnection

    def __init__(self, connection: LedgerSQLiteConnection, *, commit: bool = False) -> None:
        super().__init__(connection, commit=commit)

    def __enter__(self) -> SQLiteCursor:
        cursor = self.connection.cursor()
        writes = self.commit and not self.connection.read_only
        try:
            cursor.execute("BEGIN IMMEDIATE" if writes else "BEGIN")
        except sqlite3.Error as error:
            cursor.sqlite_cursor.close()
            raise persistence_error(error, self.connection.path) from error
        return cursor

    def __exit__(self, exc_type: type[BaseException] | None, exc_val: BaseException | None,
                 exc_tb: TracebackType | None) -> None:
        try:
            super().__exit__(exc_type, exc_val, exc_tb)
        except PersistenceError as error:
            if isinstance(error.__cause__, sqlite3.Error) and not isinstance(
                    error, IntegrityError):
                raise persistence_error(error.__cause__, self.connection.path) from (
                    error.__cause__)
            raise


class LedgerSQLiteConnection(SQLiteConnection):
    """A connection whose transactions are `LedgerSQLiteTransaction`s."""

    def __init__(self, sqlite_conn: sqlite3.Connection, max_age: float | None, *, path: str,
                 read_only: bool) -> None:
        super().__init__(sqlite_conn, max_age)
        self.path = path
        self.read_only = read_only

    @contextlib.contextmanager
    def transaction(self, *, commit: bool) -> Iterator[SQLiteCursor]:
        with LedgerSQLiteTransaction(self, commit=commit) as cursor, cursor:
            yield cursor


class LedgerSQLiteConnectionPool(SQLiteConnectionPool):
    """Opens the file read-only when it must be, and raises errors that name it."""

    def __init__(self, *, open_mode: str = "", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if open_mode not in OPEN_MODES:
            raise OperationalError(f"unknown SQLite open mode {open_mode!r}")
        if self.is_sqlite_memory_mode:
            open_mode = "rw"
        elif not open_mode:
            open_mode = "rw" if may_write(self.db_name) else "ro"
        self.open_mode = open_mode

    @property
    def read_only(self) -> bool:
        return self.open_mode in ("ro", "immutable")

    def _create_connection(self) -> SQLiteConnection:
        if not self.read_only:
            self._make_directory()
            connection = self._connect(self.db_name)
            try:
                if not self.is_sqlite_memory_mode and not self.is_journal_mode_wal:
                    mode = connection.execute("PRAGMA journal_mode").fetchone()[0]
                    if str(mode).lower() != "wal":
                        connection.execute("PRAGMA journal_mode=WAL")
                        self.journal_mode_was_changed_to_wal = True
                    self.is_journal_mode_wal = True
            except sqlite3.Error as error:
                connection.close()
                raise persistence_error(error, self.db_name) from error
        else:
            connection = self._open_read_only()
        connection.row_factory = sqlite3.Row
        return LedgerSQLiteConnection(connection, self.max_age, path=self.db_name,
                                      read_only=self.read_only)

    def _open_read_only(self) -> sqlite3.Connection:
        """Open with `mode=ro`; if the log's index cannot be made beside a WAL file that has
        no log, as `immutable` (no locks, no log: the file as it stands)."""
        base = "file:" + quote(str(Path(self.db_name).absolute()))
        if self.open_mode == "ro":
            connection = self._connect(f"{base}?mode=ro")
            try:
                connection.execute("PRAGMA journal_mode").fetchone()
                return connection
            except sqlite3.Error as error:
                connection.close()
                if (error.sqlite_errorcode & 0xFF) != _SQLITE_CANTOPEN:
                    raise persistence_error(error, self.db_name) from error
                if _has_logged_rows(self.db_name):
                    raise OperationalError(
                        f"cannot read the SQLite store {self.db_name}: its write-ahead log "
                        "has rows, and the log's index (-shm) cannot be made beside it; "
                        "copy the store with its -wal and -shm files, or checkpoint it "
                        "where it can be written") from error
        connection = self._connect(f"{base}?mode=ro&immutable=1")
        try:
            connection.execute("PRAGMA journal_mode").fetchone()
        except sqlite3.Error as error:
            connection.close()
            raise persistence_error(error, self.db_name) from error
        return connection

    def _make_directory(self) -> None:
        """The directory of a file about to be created (the embedded default's included)."""
        if self.is_sqlite_memory_mode or self.db_name.startswith("file:"):
            return
        directory = Path(self.db_name).parent
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise OperationalError(f"cannot make the directory {directory} for the SQLite "
                                   f"store: {error.strerror or error}") from error

    def _connect(self, database: str) -> sqlite3.Connection:
        try:
            return sqlite3.connect(
                database=database,
                uri=True,
                check_same_thread=False,
                isolation_level=None,  # autocommit: transactions begin explicitly
                timeout=self.lock_timeout or 5,
            )
        except sqlite3.Error as error:
            raise persistence_error(error, self.db_name) from error


class LedgerSQLiteDatastore(SQLiteDatastore):
    """The library's datastore over a `LedgerSQLiteConnectionPool`."""

    def __init__(self, db_name: str, *, open_mode: str = "", lock_timeout: int | None = None,
                 pool_size: int = 5, max_overflow: int = 10, pool_timeout: float = 5.0,
                 max_age: float | None = None, pre_ping: bool = False,
                 single_row_tracking: bool = True,
                 originator_id_type: Literal["uuid", "text"] = "uuid") -> None:
        super().__init__(db_name, lock_timeout=lock_timeout, pool_size=pool_size,
                         max_overflow=max_overflow, pool_timeout=pool_timeout, max_age=max_age,
                         pre_ping=pre_ping, single_row_tracking=single_row_tracking,
                         originator_id_type=originator_id_type)
        self.pool.close()  # the library's, never used: it has opened nothing
        self.pool = LedgerSQLiteConnectionPool(
            db_name=db_name, open_mode=open_mode, lock_timeout=lock_timeout,
            pool_size=pool_size, max_overflow=max_overflow, pool_timeout=pool_timeout,
            max_age=max_age, pre_ping=pre_ping)

    @property
    def read_only(self) -> bool:
        pool = self.pool
        return isinstance(pool, LedgerSQLiteConnectionPool) and pool.read_only


class LedgerSQLiteFactory(SQLiteFactory):
    """The library's SQLite persistence module, on a `LedgerSQLiteDatastore`
    (`PERSISTENCE_MODULE=ledger.store.sqlite_recorder:LedgerSQLiteFactory`)."""

    def __init__(self, env: Environment | EnvType | None) -> None:
        super().__init__(env)
        library = self.datastore
        self.datastore = LedgerSQLiteDatastore(
            library.pool.db_name,
            open_mode=(self.env.get(OPEN_MODE) or "").strip(),
            lock_timeout=library.pool.lock_timeout,
            single_row_tracking=library.single_row_tracking,
            originator_id_type=library.originator_id_type,
        )
        library.close()


class ChainedSQLiteRecorder(SQLiteApplicationRecorder):
    """SQLite recorder with the same hash chain and content digests, computed in Python under
    SQLite's write lock."""

    def __init__(self, datastore: SQLiteDatastore,
                 events_table_name: str = "stored_events") -> None:
        super().__init__(datastore, events_table_name)
        self.insert_events_statement = (
            f"INSERT INTO {self.events_table_name} "
            "(originator_id, originator_version, topic, state) VALUES (?,?,?,?)"
        )
        self._digests = False

    def construct_create_table_statements(self) -> list[str]:
        statements = super().construct_create_table_statements()
        statements[0] = statements[0].replace(
            "state BLOB, ", "state BLOB, chain_hash BLOB, content_digest BLOB, ")
        return statements

    @property
    def read_only(self) -> bool:
        """Whether the file was opened read-only (then nothing can be created in it)."""
        datastore = self.datastore
        return isinstance(datastore, LedgerSQLiteDatastore) and datastore.read_only

    def schema_names(self) -> set[str]:
        """The names of the file's tables and views: one read of its schema."""
        with self.datastore.transaction(commit=False) as cursor:
            cursor.execute("SELECT name FROM sqlite_master WHERE type IN ('table', 'view')")
            return {str(row[0]) for row in cursor.fetchall()}

    def create_table(self) -> None:
        """Create the table, or add the digest column to one written before digests existed
        (its rows keep no digest: "legacy", covered by the chain only)."""
        super().create_table()
        with self.datastore.transaction(commit=True) as c:
            self._add_digest_column(c)

    def _add_digest_column(self, c: SQLiteCursor) -> None:
        """Add the content digest's column in the transaction of `c`, which holds the write
        lock, if the table lacks it: once per file written before digests existed."""
        if not self._has_digest_column(c):
            # Not noted as there: the transaction may yet roll back; the next asks again.
            c.execute(f"ALTER TABLE {self.events_table_name} ADD COLUMN content_digest BLOB")

    def _has_digest_column(self, c: SQLiteCursor) -> bool:
        # Asked until it is there (a file written before digests has no such column until it
        # is set up or appended to), then known: no one drops a column through the ledger.
        if not self._digests:
            c.execute(f"PRAGMA table_info({self.events_table_name})")
            self._digests = "content_digest" in {row[1] for row in c.fetchall()}
        return self._digests

    def select_range(self, start: int, stop: int) -> Sequence[Notification]:
        """Every notification from `start` to `stop` (SQLite serialises writers: no horizon)."""
        notifications: Sequence[Notification] = self.select_notifications(
            start, stop - start + 1, stop)
        return notifications

    def select_events_after(self, versions: Sequence[tuple[UUID, int]]) -> list[StoredEvent]:
        """The events of several streams after the versions given (a local file: no round
        trips to save, so one query per stream)."""
        found: list[StoredEvent] = []
        for originator_id, version in versions:
            found.extend(self.select_events(originator_id, gt=version))
        return found

    def select_events_from(self, starts: Sequence[tuple[UUID, int]],
                           lte: int | None = None) -> list[tuple[int, StoredEvent]]:
        """The events of several streams from the versions given (inclusive), up to version
        `lte`, each with its position, in stream order then version order (one query per
        stream: a local file has no round trips to save)."""
        statement = (f"SELECT rowid AS position, originator_version, topic, state "
                     f"FROM {self.events_table_name} "
                     "WHERE originator_id = ? AND originator_version >= ? "
                     + ("AND originator_version <= ? " if lte is not None else "")
                     + "ORDER BY originator_version")
        found: list[tuple[int, StoredEvent]] = []
        with self.datastore.transaction(commit=False) as cursor:
            for originator_id, start in starts:
                cursor.execute(statement, (originator_id.hex, start,
                                           *(() if lte is None else (lte,))))
                found.extend((int(row["position"]), StoredEvent(
                    originator_id=originator_id, originator_version=row["originator_version"],
                    topic=row["topic"], state=row["state"])) for row in cursor.fetchall())
        return found

    def _insert_events(self, c: SQLiteCursor, stored_events: Sequence[StoredEvent],
                       **kwargs: Any) -> Sequence[int] | None:
        ids = super()._insert_events(c, stored_events, **kwargs)
        if not ids:
            return ids
        for originator_id, version in kwargs.get("expect_versions") or ():
            c.execute(f"SELECT 1 FROM {self.events_table_name} WHERE originator_id = ? "
                      "AND originator_version > ? LIMIT 1", (originator_id.hex, version))
            if c.fetchone() is not None:
                raise IntegrityError(f"stream {originator_id} has moved past version {version}")
        # The inserts above took SQLite's write lock, so no other writer can come between the
        # predecessor read here and the rows chained to it.
        c.execute(
            f"SELECT chain_hash FROM {self.events_table_name} WHERE rowid < ? "
            "ORDER BY rowid DESC LIMIT 1",
            (ids[0],),
        )
        row = c.fetchone()
        previous = bytes(row[0]) if row is not None and row[0] is not None else GENESIS
        updates = []
        for position, event in zip(ids, stored_events, strict=True):
            previous = chain_hash(previous, position, event.originator_id,
                                  event.originator_version, event.topic, event.state)
            digest = content_digest(position, event.originator_id, event.originator_version,
                                    event.topic, event.state)
            updates.append((previous, digest, position))
        # The digest goes in with the link, in the same statement: no extra write per row. A
        # file written before digests existed gets their column with its first append here.
        self._add_digest_column(c)
        c.executemany(f"UPDATE {self.events_table_name} SET chain_hash = ?, content_digest = ? "
                      "WHERE rowid = ?", updates)
        return ids

    def select_chained(self, start: int, limit: int,
                       stop: int | None = None) -> list[dict[str, Any]]:
        """Stored rows from position `start` on (to `stop`), with their chain hashes and
        content digests, for verification."""
        with self.datastore.transaction(commit=False) as cursor:
            # A file written before digests existed, not appended to since, has no column for
            # them: its rows are all legacy.
            digest = "content_digest" if self._has_digest_column(cursor) else "NULL"
            statement = (
                "SELECT rowid AS position, originator_id, originator_version, topic, state, "
                f"chain_hash, {digest} AS content_digest FROM {self.events_table_name} "
                "WHERE rowid >= ? AND rowid <= ? ORDER BY rowid LIMIT ?"
            )
            cursor.execute(statement, (start, stop if stop is not None else 2**63 - 1, limit))
            rows = [dict(row) for row in cursor.fetchall()]
        for row in rows:
            row["originator_id"] = UUID(row["originator_id"])
        return rows

    def select_version_breaks(self, stop: int, limit: int) -> list[dict[str, Any]]:
        """Rows up to `stop` that break their stream's run of versions
        (`ledger.store.hash_chain.VERSION_BREAKS_SQL`)."""
        statement = VERSION_BREAKS_SQL.format(position="rowid", table=self.events_table_name,
                                              param="?")
        with self.datastore.transaction(commit=False) as cursor:
            cursor.execute(statement, (stop, limit))
            rows = [dict(row) for row in cursor.fetchall()]
        for row in rows:
            row["originator_id"] = UUID(row["originator_id"])
        return rows
