"""Webhook signatures as a receiver checks them, and the delivery back-off: pure functions."""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cli.http.signing import (
    SignatureError,
    backoff_seconds,
    signature_header,
    verify,
)

SECRET = "whsec_0123456789abcdef"
BODY = b'{"subscription":"wh-1","after":3,"next":9,"movements":[]}'
NOW = 1_800_000_000


def test_a_signature_is_the_hmac_of_the_timestamp_and_the_body_the_way_stripe_signs() -> None:
    header = signature_header(SECRET, NOW, BODY)
    expected = hmac.new(SECRET.encode(), f"{NOW}.".encode() + BODY, hashlib.sha256).hexdigest()
    assert header == f"t={NOW},v1={expected}"
    assert verify(SECRET, header, BODY, NOW + 10) == NOW


def test_a_receiver_refuses_what_it_should() -> None:
    header = signature_header(SECRET, NOW, BODY)
    with pytest.raises(SignatureError, match="no signature matches"):
        verify(SECRET, header, BODY + b" ", NOW)  # the body changed
    with pytest.raises(SignatureError, match="no signature matches"):
        verify("whsec_someone_else_entirely", header, BODY, NOW)
    with pytest.raises(SignatureError, match="no signature matches"):
        verify(SECRET, header.replace(f"t={NOW}", f"t={NOW + 1}"), BODY, NOW)  # replayed as new
    with pytest.raises(SignatureError, match="300s from now"):
        verify(SECRET, header, BODY, NOW + 301)  # an old delivery replayed
    assert verify(SECRET, header, BODY, NOW + 300) == NOW
    assert verify(SECRET, header, BODY, NOW + 900, tolerance=1000) == NOW
    for bad in (None, "", "v1=abc", f"t={NOW}", "t=x,v1=abc"):
        with pytest.raises(SignatureError):
            verify(SECRET, bad, BODY, NOW)


def test_any_of_several_signatures_may_match_while_a_secret_is_rotated() -> None:
    old = signature_header("whsec_old_secret_value_123", NOW, BODY).split(",")[1]
    header = f"{signature_header(SECRET, NOW, BODY)},{old}"
    assert verify(SECRET, header, BODY, NOW) == NOW
    assert verify("whsec_old_secret_value_123", header, BODY, NOW) == NOW


def test_the_back_off_doubles_from_the_base_up_to_the_cap() -> None:
    least = [backoff_seconds(n, 1.0, 60.0, uniform=lambda low, high: low) for n in range(1, 10)]
    most = [backoff_seconds(n, 1.0, 60.0, uniform=lambda low, high: high) for n in range(1, 10)]
    assert most == [1, 2, 4, 8, 16, 32, 60, 60, 60]
    assert least == [m / 2 for m in most]
    assert backoff_seconds(0, 1.0, 60.0) == 0.0


@given(failures=st.integers(1, 10_000), base=st.floats(0.01, 100), cap=st.floats(0.01, 1e5))
def test_the_back_off_is_always_bounded(failures: int, base: float, cap: float) -> None:
    delay = backoff_seconds(failures, base, cap)
    doubled = min(cap, base * 2.0 ** min(failures - 1, 62))
    assert doubled / 2 <= delay <= doubled <= cap


def test_the_receivers_recipe_in_the_docs_verifies_what_the_worker_signs() -> None:
    text = (Path(__file__).resolve().parents[2] / "docs" / "http.md").read_text()
    [recipe] = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    namespace: dict[str, Any] = {}
    exec(recipe, namespace)
    receiver_verify = namespace["verify"]
    now = int(time.time())
    header = signature_header(SECRET, now, BODY)
    assert receiver_verify(SECRET, header, BODY) is True
    assert receiver_verify(SECRET, header, BODY + b" ") is False
    assert receiver_verify("whsec_someone_else_entirely", header, BODY) is False
    assert receiver_verify(SECRET, signature_header(SECRET, now - 301, BODY), BODY) is False
