"""The `ledger` command as an attacker types it: out-of-range positions, endless waits, bytes
that are not UTF-8, and recorded strings that would print lines of their own (hardening
issue)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from ledger.app import handlers
from ledger.app.commands import MAX_POSITION, ReceiveStock, WriteOffStock
from ledger.app.service import Ledger
from tests.executables import ledger_executable

LEDGER_EXE = ledger_executable()
TOO_FAR = str(MAX_POSITION + 1)  # 9223372036854775808


def run_cli(url: str, home: Path, *args: str | bytes,
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "LEDGER_DATABASE_URL"}
    env.update(XDG_DATA_HOME=str(home / "xdg"), HOME=str(home), LEDGER_ACTOR="e2e-test")
    return subprocess.run([LEDGER_EXE, "--db", url, *args], env=env, capture_output=True,
                          text=True, errors="backslashreplace", timeout=timeout, check=False)


@pytest.fixture
def stocked(sqlite_url: str) -> str:
    with Ledger.open(sqlite_url, create_tables=True) as ledger:
        ledger.receive(outlet="O1", sku="AMOX", batch_id="B1", quantity=5)
    return sqlite_url


def record_unchecked(ledger: Ledger, command: ReceiveStock | WriteOffStock) -> None:
    """Record a command as a version without validation did: a store written then may hold
    what the ledger now refuses."""
    handler = handlers.RECEIVE if isinstance(command, ReceiveStock) else handlers.WRITE_OFF
    ledger._loop.run(command, handler)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- bounds


@pytest.mark.parametrize(("args", "option"), [
    (("stock", "--outlet", "O1", "--as-of-position", TOO_FAR), "--as-of-position"),
    (("stock", "--outlet", "O1", "--as-of-position", "-5"), "--as-of-position"),
    (("stock", "--outlet", "O1", "--as-of-position", "99999999999999999999999"),
     "--as-of-position"),
    (("stock", "--outlet", "O1", "--as-of-position", "100", "--timeout", "nan"), "--timeout"),
    (("stock", "--outlet", "O1", "--as-of-position", "100", "--timeout", "inf"), "--timeout"),
    (("stock", "--outlet", "O1", "--as-of-position", "100", "--timeout", "-1"), "--timeout"),
    (("stock", "--outlet", "O1", "--as-of-position", "100", "--timeout", "1e9"), "--timeout"),
    (("audit", "replay", "--outlet", "O1", "--position", TOO_FAR), "--position"),
    (("audit", "replay", "--outlet", "O1", "--position", "99999999999999999999999"),
     "--position"),
    (("projections", "catch-up", "--workers", "100000000"), "--workers"),
    (("projections", "rebuild", "--workers", "0"), "--workers"),
    (("history", "--outlet", "O1", "--limit", "100000"), "--limit"),
], ids=["position-2^63", "position-negative", "position-huge", "timeout-nan", "timeout-inf",
        "timeout-negative", "timeout-1e9", "replay-2^63", "replay-huge", "workers-huge",
        "workers-zero", "limit-huge"])
def test_an_out_of_range_option_exits_2_naming_it(stocked: str, tmp_path: Path,
                                                  args: tuple[str, ...], option: str) -> None:
    """Before: `--as-of-position 2^63` built a list of 4.6e15 ranges (OOM-killed on
    PostgreSQL), `--timeout nan` never returned, positions above 2^63 raised OverflowError
    tracebacks on SQLite."""
    done = run_cli(stocked, tmp_path, *args, timeout=30)
    assert done.returncode == 2, (done.returncode, done.stderr)
    assert option in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("anchor", [f"{TOO_FAR}:ab", "99999999999999999999:ab", "\u00b2:ab",
                                    "\u0661:ab", "-1:ab", "12", ":ab"])
def test_an_expected_head_out_of_range_exits_2(stocked: str, tmp_path: Path,
                                               anchor: str) -> None:
    done = run_cli(stocked, tmp_path, "audit", "verify", "--expect-head", anchor)
    assert done.returncode == 2, (done.returncode, done.stderr)
    assert "invalid expect-head" in done.stderr
    assert "Traceback" not in done.stderr


def test_the_largest_position_is_a_position(stocked: str, tmp_path: Path) -> None:
    done = run_cli(stocked, tmp_path, "stock", "--outlet", "O1", "--as-of-position",
                   str(MAX_POSITION), "--timeout", "0.2", timeout=30)
    assert done.returncode == 1, done.stderr
    assert "did not reach position" in done.stderr
    replayed = run_cli(stocked, tmp_path, "audit", "replay", "--outlet", "O1", "--position",
                       str(MAX_POSITION))
    assert replayed.returncode == 0, replayed.stderr
    assert "AMOX" in replayed.stdout
    anchored = run_cli(stocked, tmp_path, "audit", "verify", "--expect-head",
                       f"{MAX_POSITION}:ab")
    assert anchored.returncode == 1 and "is gone" in anchored.stdout, anchored


@pytest.mark.postgres
def test_waiting_for_a_position_far_beyond_the_head_fits_in_memory(postgres_url: str,
                                                                   tmp_path: Path) -> None:
    """Before: catch-up cut the positions up to the one asked for into ranges for its
    worker processes, all of them at once: a MemoryError (OOM-killed without a limit)."""
    assert run_cli(postgres_url, tmp_path, "init").returncode == 0
    with Ledger.open(postgres_url) as ledger:
        ledger.receive(outlet="O1", sku="AMOX", batch_id="B1", quantity=5)
    done = run_cli(postgres_url, tmp_path, "stock", "--outlet", "O1", "--as-of-position",
                   str(MAX_POSITION), "--timeout", "0.5", timeout=30)
    assert done.returncode == 1, done.stderr
    assert "did not reach position" in done.stderr and "Traceback" not in done.stderr
    assert "AMOX" in run_cli(postgres_url, tmp_path, "stock", "--outlet", "O1").stdout


@pytest.mark.parametrize("args", [
    ("stock", "--outlet", "O\udcff1"),
    ("history", "--outlet", "O1", "--reference", "S\udcff"),
    ("audit", "trace", "--sale", "S\udcff"),
    ("receive", "--outlet", "O1", "--sku", "AMOX", "--batch", "B2", "--qty", "1",
     "--actor=a\udcffb"),
])
def test_bytes_that_are_not_utf8_exit_2_naming_the_option(stocked: str, tmp_path: Path,
                                                          args: tuple[str, ...]) -> None:
    """Before: a read given them failed with a UnicodeEncodeError traceback."""
    argv = [os.fsencode(a) if "\udcff" in a else a for a in args]
    done = run_cli(stocked, tmp_path, *argv)
    assert done.returncode == 2, (done.returncode, done.stderr)
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("ledger: invalid --"), done.stderr
    assert "not UTF-8" in lines[0]


# --------------------------------------------------------------------------- printing


def test_a_newline_in_a_recorded_actor_cannot_fake_a_history_line(stocked: str,
                                                                  tmp_path: Path) -> None:
    """Before: the actor's newline started a line of its own, which read as a movement."""
    fake = "evil\n2026-12-03T19:09:09+00:00  received  AMOX  B1  +500  FAKE  by boss"
    with pytest.raises(Exception, match="actor"), Ledger.open(stocked) as ledger:
        ledger.receive(outlet="O1", sku="AMOX", batch_id="B2", quantity=1, actor=fake)
    with Ledger.open(stocked) as ledger:
        record_unchecked(ledger, ReceiveStock.model_construct(
            outlet="O1", sku="AMOX", batch_id="B2", quantity=1, actor=fake,
            reference="DN\r\x1b[2K-7"))
        record_unchecked(ledger, WriteOffStock.model_construct(
            outlet="O1", sku="AMOX", quantity=1, batch_id="B2", reason="dam\u202eaged",
            actor="\u2066x\u2069", reference="W\u2028-1"))
    done = run_cli(stocked, tmp_path, "history", "--outlet", "O1")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 3, done.stdout  # three movements, one line each
    assert all(line.isprintable() for line in lines), done.stdout
    assert "by evil\\n2026-12-03T19:09:09+00:00  received" in lines[1]
    assert "DN\\r\\x1b[2K-7" in lines[1]
    assert "W\\u2028-1  by \\u2066x\\u2069" in lines[0]
    assert not any(line.startswith("2026-12-03T19:09:09+00:00  received  AMOX") for line in lines)


def test_every_human_readable_printer_escapes_what_the_store_holds(stocked: str,
                                                                    tmp_path: Path) -> None:
    with Ledger.open(stocked) as ledger:
        ledger.set_reorder_level(outlet="O1", sku="AMOX", level=100)
        ledger.sell(outlet="O1", sale_id="S-1", lines=[("AMOX", 1)])
        record_unchecked(ledger, ReceiveStock.model_construct(
            outlet="O1", sku="AMOX", batch_id="B\x85\u202e9", quantity=2,
            actor="a\nb", reference="r\nf"))
        ledger.sell(outlet="O1", sale_id="S-2", lines=[("AMOX", 5)], actor="till")
    for args in (("history", "--outlet", "O1"), ("batches", "--outlet", "O1", "--sku", "AMOX"),
                 ("stock", "--outlet", "O1"), ("low-stock", "--outlet", "O1"),
                 ("audit", "replay", "--outlet", "O1", "--position", "100"),
                 ("audit", "trace", "--sale", "S-1"), ("audit", "trace", "--sale", "S-2"),
                 ("projections", "status"), ("audit", "verify")):
        done = run_cli(stocked, tmp_path, *args)
        assert done.returncode == 0, (args, done.stderr)
        assert all(line.isprintable() for line in done.stdout.splitlines()), (args, done.stdout)
    batches = run_cli(stocked, tmp_path, "batches", "--outlet", "O1", "--sku", "AMOX").stdout
    assert "B\\x85\\u202e9" in batches
    trace = run_cli(stocked, tmp_path, "audit", "trace", "--sale", "S-2").stdout
    assert "B\\x85\\u202e9:1" in trace
