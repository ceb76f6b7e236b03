"""Where the ledger keeps its events: database URLs and the embedded default."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import ParseResult, parse_qs, unquote, urlparse

from ledger.domain.errors import InvalidInput

DATABASE_URL_VARIABLE = "LEDGER_DATABASE_URL"


def default_sqlite_path() -> Path:
    """The embedded default: a SQLite file in the user's data directory."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "stockledger" / "ledger.sqlite3"


def resolve_url(url: str | None = None) -> str:
    """An explicit URL, else $LEDGER_DATABASE_URL, else the embedded SQLite file."""
    return url or os.environ.get(DATABASE_URL_VARIABLE) or f"sqlite:///{default_sqlite_path()}"


@dataclass(frozen=True)
class StoreConfig:
    backend: str  # "postgres" | "sqlite"
    url: str
    dbname: str
    host: str = ""
    port: str = ""
    user: str = ""
    password: str = ""
    schema: str = ""
    sqlite_mode: str = ""  # "", "rw", "ro" or "immutable" (`ledger.store.sqlite_recorder`)

    def library_env(self) -> dict[str, str]:
        """The `eventsourcing` environment for this store."""
        if self.backend == "sqlite":
            return {
                # The library's SQLite module on a datastore that begins writes IMMEDIATE and
                # opens read-only files read-only (`ledger.store.sqlite_recorder`).
                "PERSISTENCE_MODULE": "ledger.store.sqlite_recorder:LedgerSQLiteFactory",
                "SQLITE_DBNAME": self.dbname,
                # SQLite's busy timeout: how long a writer waits for the write lock. Writers
                # hold it for milliseconds; tills queue behind each other for it.
                "SQLITE_LOCK_TIMEOUT": "30",
                "LEDGER_SQLITE_OPEN_MODE": self.sqlite_mode,
            }
        env = {
            "PERSISTENCE_MODULE": "eventsourcing.postgres",
            "POSTGRES_DBNAME": self.dbname,
            "POSTGRES_HOST": self.host,
            "POSTGRES_PORT": self.port,
            "POSTGRES_USER": self.user,
            "POSTGRES_PASSWORD": self.password,
            # One connection kept: a ledger runs one command at a time, and the pool hands
            # out its idle connections in turn, so a second kept one would put every other
            # command on another server process, whose caches are cold on a busy machine
            # (8 tills on 2 cores: 9% less CPU a sale, 15% more sales/s). More open when
            # threads need them and close soon after
            # (`ledger.store.postgres.recorder.POOL_MAX_IDLE_SECONDS`).
            "POSTGRES_POOL_SIZE": "1",
            "POSTGRES_MAX_OVERFLOW": "5",
            "POSTGRES_CONN_MAX_AGE": "600",
            # No ping per checkout: it is a round trip on every command. A dropped connection
            # fails its statement instead, and the library's recorders retry it on a new one.
            "POSTGRES_PRE_PING": "n",
            "POSTGRES_LOCK_TIMEOUT": "10",
            "POSTGRES_CONNECT_TIMEOUT": "5",
        }
        if self.schema:
            env["POSTGRES_SCHEMA"] = self.schema
        return env


def parse_url(url: str | None = None) -> StoreConfig:
    """Parse `postgresql://user:pw@host:port/db?schema=s` or `sqlite:///path[?mode=ro]`.

    A malformed URL is `InvalidInput` naming `db` (its password never repeated)."""
    resolved = resolve_url(url)
    try:
        parsed = urlparse(resolved)
    except ValueError as error:
        raise InvalidInput("db", f"malformed database URL: {error}") from None
    if parsed.scheme in ("postgresql", "postgres"):
        query = parse_qs(parsed.query)
        dbname = unquote(parsed.path.lstrip("/"))
        if not dbname:
            raise InvalidInput("db", f"no database name in {_redacted(parsed)!r}")
        return StoreConfig(
            backend="postgres",
            url=resolved,
            dbname=dbname,
            host=parsed.hostname or "127.0.0.1",
            port=str(_port(parsed)),
            user=unquote(parsed.username or "postgres"),
            password=unquote(parsed.password or ""),
            schema=query.get("schema", [""])[0],
        )
    if parsed.scheme == "sqlite":
        location, _, options = resolved[len("sqlite:"):].partition("?")
        path = unquote(location.removeprefix("//"))
        if not location.startswith("//") or path in ("", "/"):
            raise InvalidInput("db", f"no file in {resolved!r}; use sqlite:///path/to/file")
        if path.startswith("/./") or path.startswith("//"):
            path = path[1:]
        if "\x00" in path:
            raise InvalidInput("db", "the SQLite file name has a NUL character in it")
        return StoreConfig(backend="sqlite", url=resolved, dbname=path,
                           sqlite_mode=_sqlite_mode(options))
    raise InvalidInput("db", f"unsupported database URL {_redacted(parsed)!r} "
                             "(use postgresql://... or sqlite:///path)")


def _port(parsed: ParseResult) -> int:
    """The URL's port (5432 if it names none); a port that is no TCP port is malformed."""
    try:
        port = parsed.port
    except ValueError:
        port = 0
        text = parsed.netloc.rpartition("@")[2].rpartition(":")[2]
    else:
        text = str(port)
    if port is None:
        return 5432
    if not 0 < port < 65536:
        raise InvalidInput("db", f"port {text!r} is not a TCP port (1-65535)")
    return port


def _sqlite_mode(options: str) -> str:
    """`?mode=ro` (read-only), `?mode=rw` (read-write even where the ledger would open the
    file read-only) or `?immutable=1` (read-only, and nothing else writes it either)."""
    mode = ""
    for name, values in parse_qs(options, keep_blank_values=True).items():
        value = values[-1]
        if name == "mode" and value in ("ro", "rw"):
            mode = mode if mode == "immutable" else value
        elif name == "immutable" and value in ("0", "1"):
            mode = "immutable" if value == "1" else mode
        elif name in ("mode", "immutable"):
            raise InvalidInput("db", f"unknown SQLite {name} {value!r} "
                                     "(use ?mode=ro, ?mode=rw or ?immutable=1)")
        else:
            raise InvalidInput("db", f"unknown SQLite option {name!r} "
                                     "(use ?mode=ro, ?mode=rw or ?immutable=1)")
    return mode


def _redacted(parsed: ParseResult) -> str:
    """The URL without its password."""
    if parsed.password is None:
        return parsed.geturl()
    netloc = parsed.netloc.replace(f":{parsed.password}@", ":***@", 1)
    return parsed._replace(netloc=netloc).geturl()
