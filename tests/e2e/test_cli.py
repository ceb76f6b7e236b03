"""The `ledger` command as a user types it: exit codes, one JSON object, one-line reasons.

Most tests run the command in this process with click's CliRunner (`InProcessCli`); a few run
the installed `ledger` console script as a real subprocess (`ScriptCli`), to show that the
entry point behaves the same: help, a write and a read, a refusal, and a store it cannot use.
"""

from __future__ import annotations

import json
import os
import subprocess
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from cli.main import main
from ledger.app.service import Ledger
from tests.databases import database_url
from tests.executables import ledger_executable

COMMANDS = ["init", "receive", "sell", "refund", "count", "write-off", "transfer",
            "transfer-receive", "expire", "outlet", "reorder-level", "settings", "stock",
            "batches", "low-stock", "history", "report", "import", "projections", "audit",
            "demo", "serve", "tokens", "webhooks", "hold", "release", "correct-receipt",
            "discrepancies", "holds", "trace", "expiring"]
"""Every top-level command README.md lists."""


@dataclass(frozen=True)
class Done:
    """How one `ledger` run ended: its exit status and what it printed."""

    returncode: int
    stdout: str
    stderr: str


class Cli(ABC):
    """Runs `ledger --db URL ...` in a clean environment (no default store of the user's)."""

    def __init__(self, url: str, home: Path) -> None:
        self.url = url
        self.env: dict[str, str | None] = {
            "LEDGER_DATABASE_URL": None,
            "XDG_DATA_HOME": str(home / "xdg"),
            "HOME": str(home),
            "LEDGER_ACTOR": "e2e-test",
            "COLUMNS": "80",  # help wraps the same with or without a terminal
        }

    @abstractmethod
    def invoke(self, args: Sequence[str]) -> Done:
        """`ledger ARGS...`, without --db."""

    def __call__(self, *args: str) -> Done:
        return self.invoke(["--db", self.url, *args])

    def ok(self, *args: str) -> Done:
        done = self(*args)
        assert done.returncode == 0, f"{args}: exit {done.returncode}: {done.stderr}"
        return done

    def json(self, *args: str) -> dict[str, Any]:
        done = self.ok(*args, "--json")
        return one_json_object(done.stdout)

    def head(self) -> int:
        with Ledger.open(self.url) as ledger:
            return ledger.head_position()


class InProcessCli(Cli):
    """The `ledger` group called in this process; an exception it does not turn into an exit
    status fails the test with its traceback."""

    def invoke(self, args: Sequence[str]) -> Done:
        # Help wraps at 78 columns, as the script's does with COLUMNS=80 (CliRunner forces 80).
        result = CliRunner().invoke(main, list(args), env=self.env, catch_exceptions=False,
                                    terminal_width=78)
        return Done(result.exit_code, result.stdout, result.stderr)


class ScriptCli(Cli):
    """The installed `ledger` console script, run as a subprocess."""

    def invoke(self, args: Sequence[str]) -> Done:
        env = {k: v for k, v in os.environ.items() if k not in self.env}
        env.update({k: v for k, v in self.env.items() if v is not None})
        done = subprocess.run([ledger_executable(), *args], env=env, capture_output=True,
                              text=True, timeout=60, check=False)
        return Done(done.returncode, done.stdout, done.stderr)


def one_json_object(stdout: str) -> dict[str, Any]:
    """Exactly one JSON object and nothing else on stdout."""
    assert stdout.endswith("\n") and stdout.count("\n") == 1, repr(stdout)
    payload = json.loads(stdout)
    assert isinstance(payload, dict)
    return payload


def one_line_reason(done: Done) -> str:
    assert done.stdout == "", done.stdout
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("ledger: ")
    return lines[0]


@pytest.fixture
def sqlite_cli(tmp_path: Path, sqlite_url: str) -> Cli:
    return InProcessCli(sqlite_url, tmp_path)


# --------------------------------------------------------------------------- the happy path


def run_every_movement(cli: Cli) -> None:
    long_ago = (datetime.now(UTC) - timedelta(days=30)).isoformat()
    expired_on = (datetime.now(UTC) - timedelta(days=2)).date().isoformat()
    soon = (datetime.now(UTC) + timedelta(days=30)).date().isoformat()

    init = cli.ok("init")
    assert "store ready" in init.stdout
    assert cli.ok("init").returncode == 0  # safe to run again

    text = cli.ok("receive", "--outlet", "O1", "--sku", "AMOX", "--batch", "B1", "--qty", "10",
                  "--expires", soon, "--cost", "1.50", "--reference", "DN-1")
    assert "received 10 of AMOX batch B1 at O1: on hand 10" in text.stdout
    repeat = cli.json("receive", "--outlet", "O1", "--sku", "AMOX", "--batch", "B1",
                      "--qty", "10", "--expires", soon, "--cost", "1.50", "--reference", "DN-1")
    assert repeat["replayed"] is True and repeat["stock"]["on_hand"] == 10
    cli.ok("receive", "--outlet", "O1", "--sku", "AMOX", "--batch", "OLD", "--qty", "4",
           "--expires", expired_on, "--at", long_ago)
    cli.ok("receive", "--outlet", "O1", "--sku", "PARA", "--batch", "P1", "--qty", "5")

    sale = cli.json("sell", "--outlet", "O1", "--sale", "S-1", "--line", "AMOX=3",
                    "--line", "PARA=2")
    assert sale["replayed"] is False
    assert {(line["sku"], line["quantity"]) for line in sale["lines"]} == {
        ("AMOX", 3), ("PARA", 2)}
    amox = next(line for line in sale["lines"] if line["sku"] == "AMOX")
    assert amox["takes"] == [{"batch_id": "B1", "quantity": 3}]  # OLD is expired: never sold
    head = cli.head()
    again = cli.json("sell", "--outlet", "O1", "--sale", "S-1", "--line", "AMOX=3",
                     "--line", "PARA=2")
    assert again == {**sale, "replayed": True}
    text_again = cli.ok("sell", "--outlet", "O1", "--sale", "S-1", "--line", "AMOX=3",
                        "--line", "PARA=2")
    assert "repeat, nothing new recorded" in text_again.stdout
    assert cli.head() == head

    refund = cli.json("refund", "--sale", "S-1", "--refund", "R-1", "--line", "AMOX=1")
    assert refund["lines"][0]["restocked"] == [{"batch_id": "B1", "quantity": 1}]
    assert cli.ok("refund", "--sale", "S-1", "--refund", "R-2", "--line", "PARA=1",
                  "--write-off").stdout.startswith("refund R-2 of sale S-1")

    expired = cli.json("expire")
    assert [(e["batch_id"], e["quantity"]) for e in expired["expired"]] == [("OLD", 4)]
    assert cli.json("expire")["expired"] == []
    assert "expired 0 batch(es)" in cli.ok("expire").stdout

    count = cli.json("count", "--outlet", "O1", "--sku", "AMOX", "--batch", "B1",
                     "--counted", "7", "--count-id", "C-1")
    assert count["counts"] == [{"batch_id": "B1", "expected": 8, "counted": 7,
                                "variance": -1}]
    assert "variance +0" in cli.ok("count", "--outlet", "O1", "--sku", "PARA", "--batch",
                                   "P1", "--counted", "3").stdout

    write_off = cli.json("write-off", "--outlet", "O1", "--sku", "AMOX", "--qty", "2",
                         "--reason", "damage")
    assert write_off["takes"] == [{"batch_id": "B1", "quantity": 2}]
    assert write_off["stock"]["on_hand"] == 5

    transfer = cli.json("transfer", "--from", "O1", "--to", "O2", "--sku", "AMOX",
                        "--qty", "2", "--transfer", "T-1")
    assert transfer["received"] is True
    assert transfer["batches"][0]["expires_on"] == soon
    assert transfer["to_stock"]["on_hand"] == 2
    in_transit = cli.ok("transfer", "--from", "O1", "--to", "O2", "--sku", "AMOX", "--qty", "1",
                        "--transfer", "T-2", "--in-transit")
    assert "in transit" in in_transit.stdout
    arrived = cli.json("transfer-receive", "--transfer", "T-2")
    assert arrived["received"] is True and arrived["to_stock"]["on_hand"] == 3
    assert cli.json("transfer-receive", "--transfer", "T-2")["replayed"] is True

    with Ledger.open(cli.url) as ledger:
        assert ledger.stock_item("O1", "AMOX").batch_quantities() == {"B1": 2}
        assert ledger.stock_item("O2", "AMOX").batch_quantities() == {"B1": 3}
        assert ledger.stock_item("O1", "PARA").batch_quantities() == {"P1": 3}


def test_every_movement_on_sqlite(sqlite_cli: Cli) -> None:
    run_every_movement(sqlite_cli)


@pytest.mark.postgres
def test_every_movement_on_postgres(postgres_url: str, tmp_path: Path) -> None:
    run_every_movement(InProcessCli(postgres_url, tmp_path))


# --------------------------------------------------------------------------- refusals


@pytest.fixture
def stocked(sqlite_cli: Cli) -> Iterator[Cli]:
    """A store with 5 AMOX at O1 and one sale of 2 of them (S-1), set up through the API."""
    with Ledger.open(sqlite_cli.url, create_tables=True) as ledger:
        ledger.receive(outlet="O1", sku="AMOX", batch_id="B1", quantity=5)
        ledger.sell(outlet="O1", sale_id="S-1", lines=[("AMOX", 2)], key="POS-1")
    yield sqlite_cli


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("sell", "--outlet", "O1", "--sale", "S-2", "--line", "AMOX=4"),
         ["insufficient_stock", "AMOX", "asked 4", "available 3"]),
        (("refund", "--sale", "S-1", "--refund", "R-1", "--line", "AMOX=3"),
         ["refund_exceeds_sale", "asked 3", "refundable 2"]),
        (("refund", "--sale", "S-404", "--refund", "R-1", "--line", "AMOX=1"),
         ["unknown_sale", "S-404"]),
        (("sell", "--outlet", "O1", "--sale", "S-3", "--line", "AMOX=1", "--key", "POS-1"),
         ["idempotency_key_reused", "POS-1"]),
        (("sell", "--outlet", "NOWHERE", "--sale", "S-4", "--line", "AMOX=1"),
         ["unknown_outlet", "NOWHERE"]),
    ],
    ids=["insufficient-stock", "refund-beyond-sale", "unknown-sale", "key-reused",
         "unknown-outlet"],
)
def test_refusals_exit_1_with_one_line_reason(stocked: Cli, args: tuple[str, ...],
                                              expected: list[str]) -> None:
    head = stocked.head()
    done = stocked(*args)
    assert done.returncode == 1, done.stderr
    reason = one_line_reason(done)
    for part in expected:
        assert part in reason, reason
    assert stocked.head() == head
    # --json changes nothing about a refusal: still nothing on stdout.
    with_json = stocked(*args, "--json")
    assert with_json.returncode == 1
    assert one_line_reason(with_json) == reason


# --------------------------------------------------------------------------- malformed input


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (("receive", "--outlet", "O1", "--sku", "AMOX", "--batch", "B2", "--qty", "abc"),
         "quantity"),
        (("receive", "--outlet", "O1", "--sku", "AMOX", "--batch", "B2", "--qty", "0"),
         "quantity"),
        (("receive", "--outlet", "O1", "--sku", "AMOX", "--batch", "B2", "--qty", "-3"),
         "quantity"),
        (("receive", "--outlet", "O1", "--sku", "AMOX", "--batch", "B2", "--qty", "3",
          "--expires", "2027-13-01"), "expires_on"),
        (("receive", "--outlet", "O1", "--sku", "A" * 101, "--batch", "B2", "--qty", "3"),
         "sku"),
        (("sell", "--outlet", "O1", "--sale", "S" * 101, "--line", "AMOX=1"), "sale_id"),
        (("sell", "--outlet", "O1", "--sale", "S-9", "--line", "AMOX=abc"), "quantity"),
        (("sell", "--outlet", "O1", "--sale", "S-9", "--line", "AMOX=0"), "quantity"),
        (("sell", "--outlet", "O1", "--sale", "S-9", "--line", "AMOX"), "line"),
        (("write-off", "--outlet", "O1", "--sku", "AMOX", "--qty", "-3", "--reason", "x"),
         "quantity"),
        (("transfer", "--from", "O1", "--to", "O2", "--sku", "AMOX", "--qty", "abc",
          "--transfer", "T-1"), "quantity"),
        (("count", "--outlet", "O1", "--sku", "AMOX", "--batch", "B1", "--counted", "-1"),
         "counts"),
        (("sell", "--outlet", "O1", "--sale", "S-9", "--line", "AMOX=1",
          "--at", "2999-01-01T00:00:00+00:00"), "occurred_at"),
    ],
    ids=["qty-abc", "qty-zero", "qty-negative", "bad-expiry", "oversize-sku",
         "oversize-sale-id", "line-qty-abc", "line-qty-zero", "line-no-qty",
         "write-off-negative", "transfer-qty-abc", "count-negative", "future-time"],
)
def test_malformed_input_exits_2_naming_the_field(stocked: Cli, args: tuple[str, ...],
                                                  field: str) -> None:
    head = stocked.head()
    done = stocked(*args)
    assert done.returncode == 2, (done.returncode, done.stderr)
    reason = one_line_reason(done)
    assert field in reason, reason
    assert "Traceback" not in done.stderr
    assert stocked.head() == head


# --------------------------------------------------------------------------- the store


@pytest.mark.postgres
@pytest.mark.parametrize("runner", [InProcessCli, ScriptCli], ids=["in-process", "script"])
def test_a_store_it_cannot_use_exits_3_saying_why(postgres_url: str, tmp_path: Path,
                                                  runner: type[Cli]) -> None:
    """A database that is not there is named, not taken for a store to `ledger init`; an
    empty database is one."""
    missing = database_url(postgres_url, "stockledger_test_no_such_database")
    done = runner(missing, tmp_path)("stock", "--outlet", "O1", "--sku", "AMOX")
    assert done.returncode == 3
    reason = one_line_reason(done)
    assert 'database "stockledger_test_no_such_database" does not exist' in reason, reason
    assert "ledger init" not in reason

    empty = runner(postgres_url, tmp_path)("stock", "--outlet", "O1", "--sku", "AMOX")
    assert empty.returncode == 3
    assert "run `ledger init` first" in one_line_reason(empty)


# --------------------------------------------------------------------------- the console script


def test_the_script_shows_help_listing_every_command(sqlite_url: str, tmp_path: Path) -> None:
    script = ScriptCli(sqlite_url, tmp_path)
    done = script.invoke(["--help"])
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert done.stdout.startswith("Usage: ledger [OPTIONS] COMMAND [ARGS]...\n")
    listed = [line.split()[0] for line in done.stdout.partition("\nCommands:\n")[2].splitlines()
              if line.startswith("  ") and not line.startswith("   ")]
    assert sorted(listed) == sorted(COMMANDS)
    assert script.invoke(["-h"]) == done
    # The in-process runs of the other tests see the same command as the script.
    assert InProcessCli(sqlite_url, tmp_path).invoke(["--help"]) == done


def test_the_script_records_refuses_and_reads(sqlite_url: str, tmp_path: Path) -> None:
    script = ScriptCli(sqlite_url, tmp_path)
    assert script.ok("init").stdout == f"ledger: store ready at {sqlite_url}\n"

    received = script.json("receive", "--outlet", "O1", "--sku", "AMOX", "--batch", "B1",
                           "--qty", "10")
    assert received["replayed"] is False and received["stock"]["on_hand"] == 10
    assert script.head() == received["position"]

    refused = script("sell", "--outlet", "O1", "--sale", "S-1", "--line", "AMOX=11")
    assert refused.returncode == 1, refused.stderr
    assert "insufficient_stock" in one_line_reason(refused)

    stock = script.json("stock", "--outlet", "O1")
    assert stock["stock"][0]["sku"] == "AMOX" and stock["stock"][0]["on_hand"] == 10
    assert stock["position"] == received["position"]
    text = script.ok("stock", "--outlet", "O1", "--sku", "AMOX")
    assert text.stdout == f"{'AMOX':<20} on hand {10:>8}  available {10:>8}\n"
    assert text.stderr == ""
