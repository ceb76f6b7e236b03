"""Signed checkpoints of the sealed head, kept off the database (`docs/audit.md`).

An unsigned hash chain proves only that the rows agree with one another: whoever can rewrite
rows (the table owner, a superuser) can rewrite a row and recompute every digest and link after
it, and the forged chain verifies. A checkpoint is the sealed head (position, chain hash), the
first digested position and the time, signed with HMAC-SHA256 under a key the operator holds
in a file, never in the database. A later `audit verify --checkpoint FILE --key KEYFILE` fails
unless the chain still passes through that head: nothing at or before its position changed.
HMAC needs no dependency; the signer and the checker share the key, so keep it where the
database's administrators cannot read it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ledger.app.audit import ChainReport, Finding
from ledger.store.application import LedgerApplication
from ledger.store.hash_chain import select_chained

FORMAT = "stockledger-checkpoint/1"
ALGORITHM = "HMAC-SHA256"
MIN_KEY_BYTES = 16


class CheckpointError(Exception):
    """A key or checkpoint file that cannot be used: unreadable, malformed, or a signature
    that does not match (wrong key, or the file was altered)."""


@dataclass(frozen=True)
class Checkpoint:
    """A sealed head, as signed: `position`, its `chain_hash` (hex), the first digested
    position (`digests_from`, None in a store of legacy rows only) and when it was taken."""

    position: int
    chain_hash: str
    digests_from: int | None
    created_at: str

    def payload(self) -> dict[str, Any]:
        return {"format": FORMAT, "algorithm": ALGORITHM, "position": self.position,
                "chain_hash": self.chain_hash, "digests_from": self.digests_from,
                "created_at": self.created_at}


def generate_key(path: Path) -> None:
    """Write a new random key (32 bytes, as hex) to `path`, readable by its owner only (0600);
    refuse to overwrite an existing file, which may be the key older checkpoints need."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="ascii") as stream:
        stream.write(secrets.token_hex(32) + "\n")


def read_key(path: Path) -> bytes:
    """The key in `path`: its bytes, surrounding whitespace stripped."""
    try:
        key = path.read_bytes().strip()
    except OSError as error:
        raise CheckpointError(f"cannot read the key {path}: {error.strerror}") from error
    if len(key) < MIN_KEY_BYTES:
        raise CheckpointError(f"the key {path} is shorter than {MIN_KEY_BYTES} bytes")
    return key


def _signature(key: bytes, payload: dict[str, Any]) -> str:
    # Canonical JSON (sorted keys, no spaces): the same fields always sign the same bytes.
    message = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def from_report(report: ChainReport) -> Checkpoint:
    """The checkpoint of a verified chain's sealed head, taken now."""
    return Checkpoint(report.head_position, report.head_hash, report.digests_from,
                      datetime.now(UTC).isoformat())


def write_checkpoint(path: Path, checkpoint: Checkpoint, key: bytes) -> None:
    """Write `checkpoint`, signed with `key`, to `path` as JSON."""
    document = checkpoint.payload()
    document["signature"] = _signature(key, checkpoint.payload())
    path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")


def read_checkpoint(path: Path, key: bytes) -> Checkpoint:
    """The checkpoint in `path`, once its signature under `key` is checked."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise CheckpointError(f"cannot read the checkpoint {path}: {error.strerror}") from error
    except ValueError as error:
        raise CheckpointError(f"the checkpoint {path} is not JSON: {error}") from error
    try:
        checkpoint = Checkpoint(int(document["position"]), str(document["chain_hash"]),
                                None if document["digests_from"] is None
                                else int(document["digests_from"]),
                                str(document["created_at"]))
        signature = str(document["signature"])
        fields_ok = document["format"] == FORMAT and document["algorithm"] == ALGORITHM
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f"the checkpoint {path} lacks a field or has a wrong one: "
                              f"{error}") from error
    if not fields_ok:
        raise CheckpointError(f"the checkpoint {path} is not a {FORMAT} {ALGORITHM} file")
    if not hmac.compare_digest(signature, _signature(key, checkpoint.payload())):
        raise CheckpointError(f"the checkpoint {path} has a bad signature: the key is not the "
                              "one it was signed with, or the file was altered")
    return checkpoint


def check_checkpoint(app: LedgerApplication, checkpoint: Checkpoint,
                     report: ChainReport) -> list[Finding]:
    """What differs from a signed checkpoint: the chain must still pass through its head (the
    stored link at its position equal to the signed one; `verify_chain`, run first, checks the
    links below it), and digests must still start where they did."""
    position = checkpoint.position
    if position == 0:
        return []
    rows = select_chained(app.recorder, position, 1, position)
    if not rows or rows[0]["chain_hash"] is None:
        return [Finding("checkpoint", position,
                        f"the checkpoint's position {position} is gone or no longer sealed: "
                        "events at or before it were removed")]
    findings = []
    if bytes(rows[0]["chain_hash"]).hex() != checkpoint.chain_hash:
        findings.append(Finding(
            "checkpoint", position,
            f"position {position} no longer has the chain hash of the checkpoint taken "
            f"{checkpoint.created_at}: events at or before it were changed, and the chain "
            "recomputed after them"))
    if checkpoint.digests_from is not None and report.digests_from != checkpoint.digests_from:
        findings.append(Finding(
            "checkpoint", checkpoint.digests_from,
            f"content digests started at position {checkpoint.digests_from} when the "
            f"checkpoint was taken, now at {report.digests_from}: digests were removed"))
    return findings
