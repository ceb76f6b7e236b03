"""The embedded SQLite store through the `ledger` command: concurrent tills queue instead of
failing, and an initialised store is opened without DDL."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import threading
from collections import Counter
from pathlib import Path

import pytest
from eventsourcing.utils import get_topic

from ledger.app.service import Ledger
from ledger.events import SaleRecorded
from tests.executables import ledger_executable

TILLS = 8
SALES_PER_TILL = 8


class Till:
    """Runs `ledger --db URL ...` as a till would, in a clean environment."""

    def __init__(self, url: str, home: Path) -> None:
        self.url = url
        self.env = {k: v for k, v in os.environ.items() if k != "LEDGER_DATABASE_URL"}
        self.env.update(XDG_DATA_HOME=str(home / "xdg"), HOME=str(home),
                        LEDGER_ACTOR="e2e-test")
        self.executable = ledger_executable()

    def __call__(self, *args: str, url: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([self.executable, "--db", url or self.url, *args], env=self.env,
                              capture_output=True, text=True, timeout=120, check=False)

    def ok(self, *args: str, url: str | None = None) -> subprocess.CompletedProcess[str]:
        done = self(*args, url=url)
        assert done.returncode == 0, f"{args}: exit {done.returncode}: {done.stderr}"
        return done


def one_line_reason(done: subprocess.CompletedProcess[str]) -> str:
    """Nothing on stdout, one `ledger: ...` line on stderr, no traceback."""
    assert "Traceback" not in done.stderr, done.stderr
    assert done.stdout == "", done.stdout
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("ledger: "), lines[0]
    return lines[0]


@pytest.fixture
def till(tmp_path: Path) -> Till:
    return Till(f"sqlite:///{tmp_path / 'store' / 'ledger.sqlite3'}", tmp_path)


def sqlite_path(url: str) -> Path:
    return Path(url.removeprefix("sqlite:///"))


def schema_version(path: Path) -> int:
    """SQLite's schema cookie: every CREATE, DROP or ALTER moves it."""
    connection = sqlite3.connect(path)
    try:
        return int(connection.execute("PRAGMA schema_version").fetchone()[0])
    finally:
        connection.close()


def recorded_sales(url: str) -> int:
    with Ledger.open(url) as ledger:
        app = ledger.application
        return len(app.recorder.select_notifications(1, 1_000_000,
                                                     topics=[get_topic(SaleRecorded)]))


def on_hand(url: str, outlet: str, sku: str) -> dict[str, int]:
    with Ledger.open(url) as ledger:
        return ledger.stock_item(outlet, sku).batch_quantities()


def sell_from_tills(till: Till, quantity: int, sales_per_till: int = SALES_PER_TILL,
                    ) -> list[subprocess.CompletedProcess[str]]:
    """`TILLS` tills at once, each ringing up `sales_per_till` sales of `quantity` AMOX one
    after another, each sale its own `ledger sell` process."""
    done: list[subprocess.CompletedProcess[str]] = []
    lock = threading.Lock()

    def ring_up(number: int) -> None:
        for sale in range(sales_per_till):
            result = till("sell", "--outlet", "O1", "--sale", f"T{number}-S{sale}",
                          "--line", f"AMOX={quantity}")
            with lock:
                done.append(result)

    threads = [threading.Thread(target=ring_up, args=(n,)) for n in range(TILLS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return done


# --------------------------------------------------------------------------- busy store


def test_concurrent_tills_on_the_embedded_store_all_record(till: Till) -> None:
    """8 tills selling at once queue for SQLite's write lock; none sees the store as
    unavailable, and every sale is recorded exactly once."""
    till.ok("init")
    till.ok("receive", "--outlet", "O1", "--sku", "AMOX", "--batch", "B1", "--qty", "100")
    done = sell_from_tills(till, quantity=1)
    failures = [(d.returncode, d.stderr.strip()) for d in done if d.returncode != 0]
    assert failures == [], Counter(code for code, _ in failures)
    assert len(done) == TILLS * SALES_PER_TILL
    assert recorded_sales(till.url) == TILLS * SALES_PER_TILL
    assert on_hand(till.url, "O1", "AMOX") == {"B1": 100 - TILLS * SALES_PER_TILL}


def test_concurrent_tills_when_stock_runs_out_are_refused_not_failed(till: Till) -> None:
    """Demand beyond the stock: every till either sells or is refused for insufficient stock
    (exit 1), never exit 3, and exactly the stock there was is sold."""
    stock = 41  # the tills ask for 64, two at a time: 20 sales, then one unit too few
    till.ok("init")
    till.ok("receive", "--outlet", "O1", "--sku", "AMOX", "--batch", "B1",
            "--qty", str(stock))
    done = sell_from_tills(till, quantity=2, sales_per_till=4)
    codes = Counter(d.returncode for d in done)
    assert set(codes) <= {0, 1}, [(d.returncode, d.stderr) for d in done if d.returncode > 1]
    for refused in (d for d in done if d.returncode == 1):
        assert "insufficient_stock" in one_line_reason(refused)
    assert codes[0] == stock // 2
    assert recorded_sales(till.url) == stock // 2
    assert on_hand(till.url, "O1", "AMOX") == {"B1": stock % 2}


def test_an_initialised_store_is_opened_without_ddl(till: Till) -> None:
    """Commands on a store that has its tables change no schema: no DDL, and so no write lock
    taken just to open the store."""
    till.ok("init")
    till.ok("receive", "--outlet", "O1", "--sku", "AMOX", "--batch", "B1", "--qty", "10")
    path = sqlite_path(till.url)
    before = schema_version(path)
    till.ok("sell", "--outlet", "O1", "--sale", "S-1", "--line", "AMOX=1")
    till.ok("stock", "--outlet", "O1")
    till.ok("audit", "verify")
    till.ok("audit", "export", "--format", "csv")
    assert schema_version(path) == before


def test_the_embedded_store_sets_itself_up_on_first_use(till: Till) -> None:
    """No `ledger init`: the first command creates the store (once, under a lock)."""
    path = sqlite_path(till.url)
    assert not path.exists()
    till.ok("receive", "--outlet", "O1", "--sku", "AMOX", "--batch", "B1", "--qty", "10")
    till.ok("sell", "--outlet", "O1", "--sale", "S-1", "--line", "AMOX=1")
    assert "AMOX" in till.ok("stock", "--outlet", "O1").stdout
    assert "verified" in till.ok("audit", "verify").stdout


def test_concurrent_first_use_of_a_new_store(till: Till) -> None:
    """Several tills opening a store that does not exist yet: one sets it up, the others wait
    for it, and all of them record."""
    done: list[subprocess.CompletedProcess[str]] = []
    lock = threading.Lock()

    def receive(number: int) -> None:
        result = till("receive", "--outlet", "O1", "--sku", f"SKU-{number}", "--batch", "B1",
                      "--qty", "5")
        with lock:
            done.append(result)

    threads = [threading.Thread(target=receive, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [(d.returncode, d.stderr) for d in done if d.returncode] == []
    assert "verified" in till.ok("audit", "verify").stdout
