"""Webhook signatures, as Stripe signs its webhooks, and the delivery back-off: pure functions.

A delivery carries `Ledger-Signature: t=<unix seconds>,v1=<hex>`, where the hex is
HMAC-SHA256, keyed by the subscription's secret, over `<t>.<the raw request body>`. Signing
the timestamp with the body lets a receiver refuse a replayed delivery (an old `t`) as well
as a forged one; every attempt is signed afresh. `verify` is the receiver's side, documented
in docs/http.md for receivers written in other languages.
"""

from __future__ import annotations

import hashlib
import hmac
import random
from collections.abc import Callable

HEADER = "Ledger-Signature"
SCHEME = "v1"
DEFAULT_TOLERANCE_SECONDS = 300
"""How old a signed timestamp a receiver should still accept (Stripe's default)."""


class SignatureError(Exception):
    """A delivery's signature is missing, malformed, wrong or too old."""


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The hex HMAC-SHA256 of `<timestamp>.<body>` under `secret`."""
    signed = str(timestamp).encode("ascii") + b"." + body
    return hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def signature_header(secret: str, timestamp: int, body: bytes) -> str:
    """The `Ledger-Signature` header's value for a delivery of `body` at `timestamp`."""
    return f"t={timestamp},{SCHEME}={signature(secret, timestamp, body)}"


def verify(secret: str, header: str | None, body: bytes, now: float,
           tolerance: float = DEFAULT_TOLERANCE_SECONDS) -> int:
    """Check a delivery as a receiver should: the header's `v1` signature (one of them, if
    there are several, as while a secret is rotated) is the HMAC of its `t` and the raw body,
    compared in constant time, and `t` lies within `tolerance` seconds of `now`. Returns `t`;
    raises `SignatureError` saying what is wrong."""
    if not header:
        raise SignatureError(f"no {HEADER} header")
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t" and value.isascii() and value.isdigit():
            timestamp = int(value)
        elif key == SCHEME:
            candidates.append(value)
    if timestamp is None or not candidates:
        raise SignatureError(f"{HEADER} has no t=... or no {SCHEME}=...")
    expected = signature(secret, timestamp, body)
    if not any(hmac.compare_digest(expected, candidate) for candidate in candidates):
        raise SignatureError("no signature matches the body")
    if abs(now - timestamp) > tolerance:
        raise SignatureError(f"the timestamp {timestamp} is more than {tolerance:g}s from now")
    return timestamp


def backoff_seconds(failures: int, base: float, cap: float,
                    uniform: Callable[[float, float], float] = random.uniform) -> float:
    """How long to wait before the next attempt after `failures` failures in a row: doubling
    from `base`, never more than `cap`, the second half of it jittered so that receivers
    coming back are not hit by every subscription at once."""
    if failures < 1:
        return 0.0
    delay = min(cap, base * 2.0 ** min(failures - 1, 62))
    return delay / 2 + uniform(0.0, delay / 2)
