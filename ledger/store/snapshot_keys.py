"""The key that signs snapshots: held by the tills, never by the database.

A snapshot lets a till skip replaying a stock item's history, so it must not be believable
unless a till wrote it. The database cannot vouch for that: the application role may insert
snapshot rows, and the table's owner and superusers may write anything, including a digest
recomputed from any public formula. So each snapshot carries an HMAC-SHA256 under a key that
lives in a file on the tills' machines (`ledger.store.snapshots`), and a till uses a snapshot
only if it verifies under its own key (`docs/design.md`, "Snapshots are signed").

The file is `$LEDGER_SNAPSHOT_KEY_FILE`, else `snapshot.key` in the user's configuration
directory. It is created (32 random bytes, as hex, readable by its owner only) when the first
snapshot is due and it does not exist; tills on several machines share snapshots only if they
are given the same file. A till without a usable key writes no snapshot and trusts none: it
replays the events, which is slower on long streams, never wrong.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger(__name__)

SNAPSHOT_KEY_VARIABLE = "LEDGER_SNAPSHOT_KEY_FILE"
MIN_KEY_BYTES = 16
"""A shorter key could be guessed; the generated ones have 64 (hex text of 32 random bytes)."""
KEY_ID_PREFIX = b"stockledger-snapshot-key-id\x00"


class SnapshotKeyError(Exception):
    """A key file that exists but cannot be used: unreadable, or too short."""


def default_key_path() -> Path | None:
    """`stockledger/snapshot.key` in $XDG_CONFIG_HOME (else ~/.config); None if the user has
    no home directory to put it in."""
    base = os.environ.get("XDG_CONFIG_HOME")
    if not base:
        try:
            base = str(Path.home() / ".config")
        except RuntimeError:  # no $HOME and no entry in the password database
            return None
    return Path(base) / "stockledger" / "snapshot.key"


def key_path() -> Path | None:
    """$LEDGER_SNAPSHOT_KEY_FILE, else the default."""
    named = os.environ.get(SNAPSHOT_KEY_VARIABLE)
    return Path(named) if named else default_key_path()


@dataclass(frozen=True)
class SnapshotKey:
    """A secret that signs and checks snapshots."""

    secret: bytes = field(repr=False)

    @property
    def key_id(self) -> str:
        """A name for the key that does not reveal it, recorded with each snapshot, so that a
        till can tell a snapshot signed under another key from a tampered one."""
        return hashlib.sha256(KEY_ID_PREFIX + self.secret).hexdigest()[:16]

    def mac(self, message: bytes) -> str:
        """HMAC-SHA256 of `message` under this key, as hex."""
        return hmac.new(self.secret, message, hashlib.sha256).hexdigest()

    def verifies(self, message: bytes, mac: str) -> bool:
        """Whether `mac` is this key's MAC of `message` (compared in constant time)."""
        return hmac.compare_digest(self.mac(message), mac)


def read_key(path: Path) -> SnapshotKey | None:
    """The key in `path` (its bytes, surrounding whitespace stripped); None if there is no
    such file."""
    try:
        secret = path.read_bytes().strip()
    except FileNotFoundError:
        return None
    except OSError as error:
        raise SnapshotKeyError(f"cannot read {path}: {error.strerror}") from error
    if len(secret) < MIN_KEY_BYTES:
        raise SnapshotKeyError(f"{path} holds fewer than {MIN_KEY_BYTES} bytes")
    return SnapshotKey(secret)


def create_key(path: Path) -> SnapshotKey:
    """A new random key in `path`, readable by its owner only; if another process created
    the file first, its key.

    The key is written to a file of its own and linked into place, so that a reader never
    sees a half-written key and two tills starting together end up with the same one."""
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(descriptor, "w", encoding="ascii") as stream:
                stream.write(secrets.token_hex(32) + "\n")
                stream.flush()
                os.fsync(stream.fileno())
            with contextlib.suppress(FileExistsError):
                os.link(partial, path)
        finally:
            with contextlib.suppress(OSError):
                os.unlink(partial)
    except OSError as error:
        raise SnapshotKeyError(f"cannot create {path}: {error.strerror}") from error
    key = read_key(path)
    if key is None:
        raise SnapshotKeyError(f"{path} vanished as it was created")
    return key


class SnapshotKeys:
    """One application's key, read once: none until the file exists, created when a
    snapshot is first due. A file that cannot be used is logged once (naming it and why),
    and snapshots are then neither written nor trusted."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._key: SnapshotKey | None = None
        self._broken = False

    def for_loading(self) -> SnapshotKey | None:
        """The key snapshots are checked with, if there is one."""
        if self._key is None and not self._broken:
            self._resolve(create=False)
        return self._key

    def for_writing(self) -> SnapshotKey | None:
        """The key snapshots are signed with, created if there is none yet."""
        if self._key is None and not self._broken:
            self._resolve(create=True)
        return self._key

    def _resolve(self, *, create: bool) -> None:
        try:
            if self.path is None:
                raise SnapshotKeyError(f"there is no home directory to keep it in; set "
                                       f"{SNAPSHOT_KEY_VARIABLE}")
            self._key = read_key(self.path)
            if self._key is None and create:
                self._key = create_key(self.path)
                logger.info("created the snapshot key %s; give every till of this store "
                            "the same file (%s)", self.path, SNAPSHOT_KEY_VARIABLE)
        except SnapshotKeyError as error:
            self._broken = True
            logger.warning("snapshots are neither written nor used, every load replays its "
                           "stream's events: the snapshot key is unusable: %s", error)
