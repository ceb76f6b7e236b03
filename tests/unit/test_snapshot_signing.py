"""A snapshot is believed only under the key that signed it, and only for what was signed.

The key file: created readable by its owner only, never half-written, the same for two tills
that create it at once; a missing file is no key, a short or unreadable one is refused once.
The MAC: any change to the stream, version, position, topic or state, or another key, and the
snapshot is refused with the reason.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import stat
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger.store.snapshot_keys import (
    SNAPSHOT_KEY_VARIABLE,
    SnapshotKey,
    SnapshotKeyError,
    SnapshotKeys,
    create_key,
    default_key_path,
    key_path,
    read_key,
)
from ledger.store.snapshots import (
    BATCH_FIELDS,
    FORMAT,
    LAYER_FIELDS,
    StockItemSnapshot,
    signed_content,
    state_problem,
)

KEY = SnapshotKey(b"0123456789abcdef0123456789abcdef")
OTHER_KEY = SnapshotKey(b"fedcba9876543210fedcba9876543210")
TOPIC = "ledger.domain.stock_item:StockItem"
STREAM = uuid4()


RECEIVED_AT = "2026-03-01T08:00:00+00:00"


def state(quantity: int = 97) -> dict[str, Any]:
    return {
        "format": FORMAT, "outlet": "NAIROBI-1", "sku": "AMOX-500",
        "batches": [["B1", "2027-01-31", 0, RECEIVED_AT, False,
                     [[0, RECEIVED_AT, quantity, 100, "0.42", "receipt DN-1"]]]],
        "shortfall": 0, "reorder_level": None, "next_received_seq": 1, "next_layer_seq": 1,
        "created_on": datetime(2026, 3, 1, 8, 0, tzinfo=UTC),
        "modified_on": datetime(2026, 3, 9, 17, 30, 0, 123456, tzinfo=UTC),
    }


def signed(key: SnapshotKey = KEY, **changes: Any) -> StockItemSnapshot:
    """A snapshot at version 200, position 4711, signed under `key`, then changed by
    `changes` (as a forger would)."""
    snapshot = StockItemSnapshot(
        originator_id=STREAM, originator_version=200, timestamp=datetime.now(UTC),
        topic=TOPIC, state=state(), position=4711, key_id=key.key_id,
        mac=key.mac(signed_content(STREAM, 200, 4711, TOPIC, state())))
    return dataclasses.replace(snapshot, **changes)


# --------------------------------------------------------------------------- the MAC


def test_a_snapshot_signed_under_the_tills_key_is_believed() -> None:
    assert signed().signature_problem(KEY) is None


@pytest.mark.parametrize(("changes", "why"), [
    ({"state": state(5002)}, "MAC does not match"),
    ({"originator_version": 201}, "MAC does not match"),
    ({"originator_id": uuid4()}, "MAC does not match"),
    ({"position": 4712}, "MAC does not match"),
    ({"topic": "ledger.domain.sale:Sale"}, "MAC does not match"),
    ({"mac": "0" * 64}, "MAC does not match"),
    ({"key_id": OTHER_KEY.key_id}, "signed under another key"),
    ({"position": None, "key_id": None, "mac": None}, "written before snapshots were signed"),
    ({"mac": None}, "missing or malformed"),
    ({"position": "4711"}, "missing or malformed"),
    ({"position": True}, "missing or malformed"),
    ({"state": {**state(), "created_on": object()}}, "created_on is a object"),
])
def test_a_changed_snapshot_is_refused_with_the_reason(changes: dict[str, Any],
                                                       why: str) -> None:
    problem = signed(**changes).signature_problem(KEY)
    assert problem is not None and why in problem


def test_without_the_tills_key_nothing_is_believed() -> None:
    assert "signed under another key" in (signed().signature_problem(OTHER_KEY) or "")
    assert "no snapshot key" in (signed().signature_problem(None) or "")


@given(st.integers(min_value=-(2**63), max_value=2**63 - 1).filter(lambda q: q != 97))
def test_no_other_quantity_carries_the_same_mac(quantity: int) -> None:
    problem = signed(state=state(quantity)).signature_problem(KEY)
    assert problem is not None and "MAC does not match" in problem


def forged_row(**fields: Any) -> dict[str, Any]:
    row = dict(zip(BATCH_FIELDS, state()["batches"][0], strict=True)) | fields
    return {**state(), "batches": [list(row.values())]}


def forged_layer(**fields: Any) -> dict[str, Any]:
    layer = dict(zip(LAYER_FIELDS, state()["batches"][0][-1][0], strict=True)) | fields
    return forged_row(layers=[list(layer.values())])


@pytest.mark.parametrize(("forged", "why"), [
    # Each encodes as a genuine state does, so it would carry the genuine MAC, were not
    # every value held to the one type a till writes.
    ({**state(), "created_on": {"datetime": state()["created_on"].isoformat()}},
     "created_on is a dict"),
    (forged_layer(unit_cost=float("nan")), "wrong type"),
    (forged_row(expires_on=float("inf")), "wrong type"),
    (forged_layer(quantity=97.0), "wrong type"),
    (forged_layer(received=100.0), "wrong type"),
    (forged_row(received_seq=False), "wrong type"),
    (forged_row(expired=0), "wrong type"),
    (forged_row(layers=[[0, RECEIVED_AT, 97, 100, "0.42"]]), "six fields"),
    ({**state(), "shortfall": False}, "shortfall is a bool"),
    ({**state(), "reorder_level": 5.5}, "reorder_level is a float"),
    ({**state(), "batches": [["B1", "2027-01-31", 0, RECEIVED_AT, False]]}, "six fields"),
    ({**state(), "format": 1}, "format 1"),
    ({**state(), "extra": 1}, "has the fields"),
    ([], "not a mapping"),
])
def test_only_a_state_shaped_as_a_till_writes_it_is_checked(forged: Any, why: str) -> None:
    problem = signed(state=forged).signature_problem(KEY)
    assert problem is not None and why in problem
    assert state_problem(forged) == problem


def test_the_type_check_is_what_refuses_a_value_that_encodes_like_a_genuine_one() -> None:
    def content(of: dict[str, Any]) -> bytes:
        return signed_content(STREAM, 200, 4711, TOPIC, of)

    tagged = {**state(), "created_on": {"datetime": state()["created_on"].isoformat()}}
    assert content(tagged) == content(state())
    assert content(forged_layer(unit_cost=float("nan"))) == content(
        forged_layer(unit_cost=None))
    genuine_mac = signed().mac
    for forged in (tagged, forged_layer(unit_cost=float("nan"))):
        problem = signed(state=forged, mac=genuine_mac).signature_problem(KEY)
        assert problem is not None and "MAC" not in problem


def test_every_value_type_a_till_writes_is_accepted() -> None:
    for row in ({"expires_on": None}, {"received_at": None}, {"expired": True},
                {"layers": []}):
        assert state_problem(forged_row(**row)) is None
    assert state_problem(forged_layer(unit_cost=None)) is None
    assert state_problem({**state(), "reorder_level": 10, "batches": []}) is None


def test_a_quantity_beyond_64_bits_is_signed_and_checked_alike() -> None:
    big = forged_layer(quantity=2**70)
    content = signed_content(STREAM, 200, 4711, TOPIC, big)
    assert str(2**70).encode() in content
    snapshot = dataclasses.replace(signed(), state=big, mac=KEY.mac(content))
    assert snapshot.signature_problem(KEY) is None


# --------------------------------------------------------------------------- the key file


def test_a_created_key_is_the_owners_alone_and_reads_back(tmp_path: Path) -> None:
    path = tmp_path / "config" / "stockledger" / "snapshot.key"
    key = create_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert len(path.read_text().strip()) == 64
    assert read_key(path) == key
    assert os.listdir(path.parent) == ["snapshot.key"]  # no partial file left behind


def test_tills_creating_the_key_at_once_end_up_with_the_same_one(tmp_path: Path) -> None:
    path = tmp_path / "snapshot.key"
    start = threading.Barrier(8)
    keys: list[SnapshotKey] = []

    def create() -> None:
        start.wait()
        keys.append(create_key(path))

    threads = [threading.Thread(target=create) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(keys) == 8 and len(set(keys)) == 1
    assert os.listdir(tmp_path) == ["snapshot.key"]


def test_an_existing_key_is_never_replaced(tmp_path: Path) -> None:
    path = tmp_path / "snapshot.key"
    first = create_key(path)
    assert create_key(path) == first


def test_a_missing_short_or_unreadable_key_file(tmp_path: Path) -> None:
    assert read_key(tmp_path / "none.key") is None
    short = tmp_path / "short.key"
    short.write_text("abc\n")
    with pytest.raises(SnapshotKeyError, match="fewer than 16 bytes"):
        read_key(short)
    with pytest.raises(SnapshotKeyError, match="cannot read"):
        read_key(tmp_path)  # a directory


def test_loading_creates_no_key_and_writing_does(tmp_path: Path) -> None:
    keys = SnapshotKeys(tmp_path / "snapshot.key")
    assert keys.for_loading() is None
    assert not (tmp_path / "snapshot.key").exists()
    written = keys.for_writing()
    assert written is not None and keys.for_loading() == written
    assert read_key(tmp_path / "snapshot.key") == written


def test_an_unusable_key_is_logged_once_and_then_there_is_none(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    short = tmp_path / "short.key"
    short.write_text("abc\n")
    keys = SnapshotKeys(short)
    with caplog.at_level(logging.WARNING, logger="ledger.store.snapshot_keys"):
        assert [keys.for_writing(), keys.for_loading(), keys.for_writing()] == [None] * 3
    assert caplog.text.count("the snapshot key is unusable") == 1
    assert str(short) in caplog.text
    assert short.read_text() == "abc\n"


def test_without_a_home_there_is_no_key_and_it_says_where_to_set_one(
        caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="ledger.store.snapshot_keys"):
        assert SnapshotKeys(None).for_writing() is None
    assert SNAPSHOT_KEY_VARIABLE in caplog.text


def test_where_the_key_is_kept(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(SNAPSHOT_KEY_VARIABLE, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert key_path() == default_key_path() == tmp_path / "xdg" / "stockledger" / "snapshot.key"
    monkeypatch.delenv("XDG_CONFIG_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert key_path() == tmp_path / "home" / ".config" / "stockledger" / "snapshot.key"
    monkeypatch.setenv(SNAPSHOT_KEY_VARIABLE, str(tmp_path / "tills.key"))
    assert key_path() == tmp_path / "tills.key"
