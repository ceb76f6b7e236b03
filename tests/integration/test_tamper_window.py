"""Tamper evidence with no window: every event is digested by its own append, the sealer
refuses a row that fails its digest, verify checks each stream's versions, and signed
checkpoints held off the database catch a rewrite that recomputes every hash (hardening
issue, "Tamper evidence with no window"; `docs/audit.md`).

Each attack edits the store's rows directly, as whoever holds the table's owner rights (or a
copy of the SQLite file) could, on both stores where it applies.
"""

from __future__ import annotations

import itertools
import json
import sqlite3
import stat
from pathlib import Path
from typing import Any
from uuid import UUID

import psycopg
import pytest

from ledger.app.service import Ledger
from ledger.store.hash_chain import GENESIS, chain_hash, content_digest
from projections.runner import ReadModels, rebuild
from tests.integration.test_audit import build_store, cli, verify_json

_deliveries = itertools.count()


class RawStore:
    """The store's events table, written around the ledger (a superuser's, or the file's
    holder's, view of it). Statements use `%s`; SQLite gets `?`."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.postgres = url.startswith("postgres")
        self.position = "notification_id" if self.postgres else "rowid"
        self.table = "stockledger_events" if self.postgres else "stored_events"

    def run(self, statement: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        statement = statement.replace("{pos}", self.position).replace("{table}", self.table)
        if self.postgres:
            with psycopg.connect(self.url, autocommit=True) as connection:
                cursor = connection.execute(statement, params)
                return list(cursor.fetchall()) if cursor.description else []
        connection = sqlite3.connect(self.url.removeprefix("sqlite:///"))
        try:
            cursor = connection.execute(statement.replace("%s", "?"), params)
            rows = list(cursor.fetchall())
            connection.commit()
            return rows
        finally:
            connection.close()

    def rows(self) -> list[dict[str, Any]]:
        return [{"position": r[0], "originator_id": UUID(str(r[1])), "version": r[2],
                 "topic": r[3], "state": bytes(r[4])}
                for r in self.run("SELECT {pos}, originator_id, originator_version, topic, "
                                  "state FROM {table} ORDER BY {pos}")]

    def set_state(self, position: int, state: bytes) -> None:
        self.run("UPDATE {table} SET state = %s WHERE {pos} = %s", (state, position))

    def sealed(self, position: int) -> bool:
        if not self.postgres:
            return True  # SQLite chains as it appends
        return bool(self.run("SELECT 1 FROM {table}_seals WHERE position = %s", (position,)))

    def id_value(self, originator_id: UUID) -> Any:
        return originator_id if self.postgres else originator_id.hex

    def rechain(self) -> None:
        """Recompute every digest and chain link from the rows as they now are: what a
        superuser who read the formulas would do after editing the past."""
        previous = GENESIS
        for row in self.rows():
            args = (row["position"], row["originator_id"], row["version"], row["topic"],
                    row["state"])
            previous = chain_hash(previous, *args)
            digest = content_digest(*args)
            if self.postgres:
                self.run("UPDATE {table} SET content_digest = %s WHERE notification_id = %s",
                         (digest, row["position"]))
                self.run("UPDATE {table}_seals SET chain_hash = %s WHERE position = %s",
                         (previous, row["position"]))
            else:
                self.run("UPDATE {table} SET content_digest = %s, chain_hash = %s "
                         "WHERE rowid = %s", (digest, previous, row["position"]))


def append_unsealed(url: str) -> int:
    """One more receipt, recorded after the store's last catch-up: on PostgreSQL nothing has
    sealed it yet. Returns its position."""
    with Ledger.open(url) as ledger:
        received = ledger.receive(outlet="NBI-1", sku="AMOX-500", batch_id="LATE",
                                  quantity=7, reference=f"D-late-{next(_deliveries)}")
    assert received.position is not None
    return received.position


def edited(state: bytes) -> bytes:
    assert b'"quantity":7' in state or b'"quantity":10' in state, state
    return state.replace(b'"quantity":7', b'"quantity":70').replace(b'"quantity":10',
                                                                  b'"quantity":11')


def checks_at(report: dict[str, Any], position: int) -> set[str]:
    return {f["check"] for f in report["findings"] if f["position"] == position}


@pytest.fixture
def built(store_url: str) -> str:
    build_store(store_url)
    return store_url


def test_edit_before_any_seal_fails_verify_and_is_never_sealed(built: str,
                                                                tmp_path: Path) -> None:
    position = append_unsealed(built)
    raw = RawStore(built)
    assert not raw.postgres or not raw.sealed(position)
    raw.set_state(position, edited(raw.rows()[-1]["state"]))
    code, report = verify_json(built, tmp_path)
    assert code == 1, report
    assert report["first_broken_position"] == position, report
    assert "digest" in checks_at(report, position), report
    if raw.postgres:
        # Verify sealed what it could, and stopped before the edited row; so does every
        # later seal.
        with Ledger.open(built) as ledger:
            head = ledger.application.recorder.seal_all()  # type: ignore[attr-defined]
        assert head == position - 1 and not raw.sealed(position)
        assert report["head_position"] == position - 1
    text = cli(built, tmp_path, "audit", "verify", check=False)
    assert text.returncode == 1 and f"first at position {position}" in text.stdout


def test_deleted_event_shows_as_its_streams_version_gap(built: str, tmp_path: Path) -> None:
    append_unsealed(built)
    raw = RawStore(built)
    rows = raw.rows()
    # The event before the newest of the longest stream (a stock item's).
    streams = [r["originator_id"] for r in rows]
    stream = max(set(streams), key=streams.count)
    of_stream = [r for r in rows if r["originator_id"] == stream]
    assert len(of_stream) >= 3
    victim, after = of_stream[-2], of_stream[-1]
    raw.run("DELETE FROM {table} WHERE {pos} = %s", (victim["position"],))
    code, report = verify_json(built, tmp_path)
    assert code == 1, report
    gaps = [f for f in report["findings"] if f["check"] == "versions"]
    assert [f["position"] for f in gaps] == [after["position"]], report
    assert f"version {after['version']} here, after version {victim['version'] - 1}" in (
        gaps[0]["message"])


def test_swapped_states_are_detected_at_both_positions(built: str, tmp_path: Path) -> None:
    append_unsealed(built)
    with Ledger.open(built) as ledger:
        ledger.receive(outlet="NBI-1", sku="PARA-1G", batch_id="LATE2", quantity=3)
    raw = RawStore(built)
    first, second = raw.rows()[-2:]
    raw.set_state(first["position"], second["state"])
    raw.set_state(second["position"], first["state"])
    code, report = verify_json(built, tmp_path)
    assert code == 1, report
    assert "digest" in checks_at(report, first["position"]), report
    assert "digest" in checks_at(report, second["position"]), report
    assert report["first_broken_position"] == first["position"]


def test_forged_row_with_a_good_digest_breaks_its_streams_versions(
        built: str, tmp_path: Path) -> None:
    raw = RawStore(built)
    rows = raw.rows()
    model = rows[-1]
    version = max(r["version"] for r in rows
                  if r["originator_id"] == model["originator_id"]) + 2
    if raw.postgres:
        (position,), = raw.run("SELECT nextval(pg_get_serial_sequence('{table}', "
                               "'notification_id'))")
    else:
        position = rows[-1]["position"] + 1
    digest = content_digest(position, model["originator_id"], version, model["topic"],
                            model["state"])
    raw.run("INSERT INTO {table} ({pos}, originator_id, originator_version, topic, state, "
            "content_digest) VALUES (%s, %s, %s, %s, %s, %s)",
            (position, raw.id_value(model["originator_id"]), version, model["topic"],
             model["state"], digest))
    if not raw.postgres:
        (link,), = raw.run("SELECT chain_hash FROM {table} WHERE rowid = %s",
                           (rows[-1]["position"],))
        raw.run("UPDATE {table} SET chain_hash = %s WHERE rowid = %s",
                (chain_hash(bytes(link), position, model["originator_id"], version,
                            model["topic"], model["state"]), position))
    code, report = verify_json(built, tmp_path)
    assert code == 1, report
    assert checks_at(report, position) == {"versions"}, report
    assert report["first_broken_position"] == position


def test_rebuild_after_an_edit_does_not_make_verify_pass(built: str, tmp_path: Path) -> None:
    position = append_unsealed(built)
    with Ledger.open(built) as ledger:
        ReadModels(ledger.application).catch_up()  # the read models applied the original
    raw = RawStore(built)
    raw.set_state(position, edited(raw.rows()[-1]["state"]))
    with Ledger.open(built) as ledger:
        rebuild(ledger.application)  # ...and now agree with the edit
    code, report = verify_json(built, tmp_path)
    assert code == 1, report
    assert "digest" in checks_at(report, position), report


def test_signed_checkpoint_catches_a_rewrite_that_recomputes_every_hash(
        built: str, tmp_path: Path) -> None:
    key, other_key = tmp_path / "checkpoint.key", tmp_path / "other.key"
    cli(built, tmp_path, "audit", "keygen", "--out", str(key))
    cli(built, tmp_path, "audit", "keygen", "--out", str(other_key))
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    again = cli(built, tmp_path, "audit", "keygen", "--out", str(key), check=False)
    assert again.returncode == 2  # never overwrites a key older checkpoints need
    checkpoint = tmp_path / "head.checkpoint"
    code, report = verify_json(built, tmp_path, "--checkpoint-out", str(checkpoint),
                               "--key", str(key))
    assert code == 0, report
    signed = json.loads(checkpoint.read_text())
    assert (signed["position"], signed["chain_hash"]) == (report["head_position"],
                                                          report["head_hash"])
    assert signed["algorithm"] == "HMAC-SHA256" and signed["signature"]
    code, report = verify_json(built, tmp_path, "--checkpoint", str(checkpoint),
                               "--key", str(key))
    assert code == 0, report

    # A superuser edits an old, sealed receipt, recomputes every digest and link after it,
    # and rebuilds the read models: without the checkpoint, verify passes.
    raw = RawStore(built)
    ten = [r for r in raw.rows() if b'"quantity":10' in r["state"]
           and r["topic"].endswith("BatchReceived")]
    assert len(ten) == 1 and raw.sealed(ten[0]["position"])
    raw.set_state(ten[0]["position"], edited(ten[0]["state"]))
    raw.rechain()
    with Ledger.open(built) as ledger:
        rebuild(ledger.application)
    code, report = verify_json(built, tmp_path)
    assert code == 0, report
    code, report = verify_json(built, tmp_path, "--checkpoint", str(checkpoint),
                               "--key", str(key))
    assert code == 1, report
    assert checks_at(report, signed["position"]) == {"checkpoint"}, report
    text = cli(built, tmp_path, "audit", "verify", "--checkpoint", str(checkpoint), "--key",
               str(key), check=False)
    assert text.returncode == 1 and "no longer has the chain hash" in text.stdout

    # A checkpoint altered to match the forgery, or checked with another key, fails.
    forged = tmp_path / "forged.checkpoint"
    forged.write_text(json.dumps({**signed, "chain_hash": report["head_hash"]}))
    for path, with_key in ((forged, key), (checkpoint, other_key)):
        code, report = verify_json(built, tmp_path, "--checkpoint", str(path),
                                   "--key", str(with_key))
        assert code == 1, report
        bad = [f for f in report["findings"] if f["check"] == "checkpoint"]
        assert bad and "bad signature" in bad[0]["message"], report
    missing_key = cli(built, tmp_path, "audit", "verify", "--checkpoint", str(checkpoint),
                      check=False)
    assert missing_key.returncode == 2


def test_legacy_rows_without_digests_still_verify(built: str, tmp_path: Path) -> None:
    position = append_unsealed(built)
    raw = RawStore(built)
    raw.run("UPDATE {table} SET content_digest = NULL")
    if not raw.postgres:
        # A file written before digests existed has no such column: opening it adds it.
        raw.run("ALTER TABLE {table} DROP COLUMN content_digest")
        Ledger.open(built, create_tables=True).close()
    code, report = verify_json(built, tmp_path)
    assert code == 0, report
    assert report["digests_from"] is None and report["head_position"] == position
    # New appends are digested; the first of them is where legacy ends.
    later = append_unsealed(built)
    code, report = verify_json(built, tmp_path)
    assert code == 0 and position < report["digests_from"] <= later, report
    another = append_unsealed(built)
    raw.run("UPDATE {table} SET content_digest = NULL WHERE {pos} = %s", (another,))
    code, report = verify_json(built, tmp_path)
    assert code == 1 and checks_at(report, another) == {"digest"}, report
