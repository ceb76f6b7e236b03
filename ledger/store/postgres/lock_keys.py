"""The advisory lock keys of a PostgreSQL store, and why each kind has a key space of its own.

Advisory locks are the store's only locks: the append holds no table lock (`sql_append`).
Every key is XORed with the events table's oid, so that stores in other schemas of the same
database have locks, and horizons, of their own. The kinds never share a key space, or one
kind's holder would block (or be taken for) another:

* the allocation lock and the seal lock: one fixed 64-bit key each, named for what it guards;
* the queue's keys: a stream id's first 64 bits (`values.stream_key`), the writer queue's
  exclusive locks and the gate's shared probes (`queue_locks`, `sql_append`);
* the read-check keys: the server's own salted 64-bit hash of a stream id, so that they lie
  apart from the queue's keys on the same stream (`READ_CHECK_SALT`);
* the in-flight registrations: two-key locks (the events table's oid, a position's low 32
  bits), which no other lock here uses; readers recover the position from its low bits and
  the sequence's last value, which no in-flight registration can be 2**31 positions away
  from (`sql_horizon`).
"""

from __future__ import annotations

import hashlib


def advisory_key(name: str) -> int:
    """A fixed advisory lock key (64-bit, signed) named for what it guards."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


ALLOCATION_LOCK = advisory_key("stockledger:allocate-positions")
"""Held (session-level) only while an append registers and takes its block of positions."""
SEAL_LOCK = advisory_key("stockledger:seal-chain")
"""Held by the one sealer at a time."""
READ_CHECK_SALT = advisory_key("stockledger:read-check")
"""Read-check locks are keyed by the server's own 64-bit hash of the stream id, seeded with
this salt (`uuid_hash_extended`, one call rather than the id's text cut and cast to bits): a
key space apart from the queue's keys on the same stream. Only the append function takes them."""

READ_CHECK_KEY_SQL = "uuid_hash_extended({id}, {salt}) # {table_oid}"
"""The read-check key of the stream id `{id}`, in SQL (`str.format` fields)."""
