"""The embedded SQLite store through the `ledger` command: concurrent tills queue instead of
failing, an initialised store is opened without DDL, and a store it cannot use (damaged,
read-only, badly named) gets a one-line reason and the right exit status, never a traceback."""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import subprocess
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from eventsourcing.utils import get_topic

from ledger.app.service import Ledger
from ledger.events import SaleRecorded
from tests.executables import ledger_executable

TILLS = 8
SALES_PER_TILL = 4
"""Each sale is its own `ledger` process; eight tills at once contend as much with four sales
each as with more, which the soak run rings up (`SOAK_SALES_PER_TILL`)."""
SOAK_SALES_PER_TILL = 16


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


@pytest.mark.parametrize("sales_per_till", [
    SALES_PER_TILL, pytest.param(SOAK_SALES_PER_TILL, marks=pytest.mark.soak)])
def test_concurrent_tills_on_the_embedded_store_all_record(till: Till,
                                                           sales_per_till: int) -> None:
    """8 tills selling at once queue for SQLite's write lock; none sees the store as
    unavailable, and every sale is recorded exactly once."""
    stock = TILLS * sales_per_till + 36
    till.ok("init")
    till.ok("receive", "--outlet", "O1", "--sku", "AMOX", "--batch", "B1", "--qty", str(stock))
    done = sell_from_tills(till, quantity=1, sales_per_till=sales_per_till)
    failures = [(d.returncode, d.stderr.strip()) for d in done if d.returncode != 0]
    assert failures == [], Counter(code for code, _ in failures)
    assert len(done) == TILLS * sales_per_till
    assert recorded_sales(till.url) == TILLS * sales_per_till
    assert on_hand(till.url, "O1", "AMOX") == {"B1": stock - TILLS * sales_per_till}


def test_concurrent_tills_when_stock_runs_out_are_refused_not_failed(till: Till) -> None:
    """Demand beyond the stock: every till either sells or is refused for insufficient stock
    (exit 1), never exit 3, and exactly the stock there was is sold."""
    stock = 21  # the tills ask for 32, two at a time: 10 sales, then one unit too few
    till.ok("init")
    till.ok("receive", "--outlet", "O1", "--sku", "AMOX", "--batch", "B1",
            "--qty", str(stock))
    done = sell_from_tills(till, quantity=2, sales_per_till=2)
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


# --------------------------------------------------------------------------- damaged files


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store with a little history, written through the command, its read models caught
    up; made once, copied by each test that damages or locks it."""
    home = tmp_path_factory.mktemp("pristine")
    path = home / "store" / "ledger.sqlite3"
    maker = Till(f"sqlite:///{path}", home)
    maker.ok("receive", "--outlet", "O1", "--sku", "AMOX", "--batch", "B1", "--qty", "10")
    maker.ok("sell", "--outlet", "O1", "--sale", "S-1", "--line", "AMOX=2")
    maker.ok("sell", "--outlet", "O1", "--sale", "S-2", "--line", "AMOX=3")
    maker.ok("stock", "--outlet", "O1")
    return path


def copy_store(source: Path, target: Path) -> Path:
    """A consistent copy of a store in one file, as SQLite's online backup makes it."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.closing(sqlite3.connect(source)) as reading, \
            contextlib.closing(sqlite3.connect(target)) as writing:
        reading.backup(writing)
    return target


@pytest.fixture
def stocked(pristine: Path, till: Till) -> Path:
    """A copy of the pristine store at the till's URL; its file's path."""
    return copy_store(pristine, sqlite_path(till.url))


COMMANDS = [
    ("stock", "--outlet", "O1"),
    ("sell", "--outlet", "O1", "--sale", "S-9", "--line", "AMOX=1"),
    ("audit", "verify"),
    ("audit", "export", "--format", "csv"),
]


@pytest.mark.parametrize("args", COMMANDS, ids=lambda args: "-".join(args[:2]))
def test_a_file_that_is_not_a_database_exits_3(till: Till, tmp_path: Path,
                                               args: tuple[str, ...]) -> None:
    path = tmp_path / "garbage.sqlite3"
    path.write_bytes(os.urandom(64 * 1024))
    done = till(*args, url=f"sqlite:///{path}")
    assert done.returncode == 3, done.stderr
    reason = one_line_reason(done)
    assert "not a database" in reason and str(path) in reason, reason


@pytest.mark.parametrize("keep", [0.5, 100], ids=["half", "100-bytes"])
@pytest.mark.parametrize("args", COMMANDS, ids=lambda args: "-".join(args[:2]))
def test_a_truncated_store_exits_3(pristine: Path, till: Till, tmp_path: Path,
                                   args: tuple[str, ...], keep: float) -> None:
    content = copy_store(pristine, tmp_path / "whole.sqlite3").read_bytes()
    truncated = tmp_path / "truncated.sqlite3"
    truncated.write_bytes(content[:int(len(content) * keep) if keep < 1 else int(keep)])
    done = till(*args, url=f"sqlite:///{truncated}")
    assert done.returncode == 3, done.stderr
    reason = one_line_reason(done)
    assert "malformed" in reason or "not a database" in reason, reason


def test_a_store_whose_directory_cannot_be_made_exits_3(till: Till, tmp_path: Path) -> None:
    """A path under a file: the directory cannot be created."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    done = till("stock", "--outlet", "O1", url=f"sqlite:///{blocker}/nested/ledger.sqlite3")
    assert done.returncode == 3, done.stderr
    assert str(blocker) in one_line_reason(done)


# --------------------------------------------------------------------------- malformed URLs


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://u@h:99999/db", "port"),
        ("postgresql://u@h:0/db", "port"),
        ("postgresql://u@h:abc/db", "port"),
        ("postgresql://u@[::1/db", "db"),
        ("postgresql://u:secret@h:99999/db", "port"),
        ("sqlite:///tmp/x.sqlite3?mode=wr", "mode"),
        ("sqlite:///tmp/x.sqlite3?cache=shared", "cache"),
    ],
    ids=["port-out-of-range", "port-zero", "port-not-a-number", "bad-ipv6", "no-password-echo",
         "bad-sqlite-mode", "unknown-sqlite-option"],
)
def test_a_malformed_url_exits_2(till: Till, url: str, expected: str) -> None:
    done = till("stock", "--outlet", "O1", url=url)
    assert done.returncode == 2, done.stderr
    reason = one_line_reason(done)
    assert reason.startswith("ledger: invalid db: ") and expected in reason, reason
    assert "secret" not in reason


# --------------------------------------------------------------------------- read-only stores


@contextlib.contextmanager
def read_only_directory(path: Path) -> Iterator[None]:
    """Make `path` (with the files in it) genuinely read-only for this process: a read-only
    mount when running as root, whom file modes do not stop; file modes otherwise."""
    if os.geteuid() != 0:
        for child in path.iterdir():
            child.chmod(0o444)
        path.chmod(0o555)
        try:
            yield
        finally:
            path.chmod(0o755)
            for child in path.iterdir():
                child.chmod(0o644)
        return
    staged = path.with_name(path.name + "-staged")
    path.rename(staged)
    path.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(path)],
                             capture_output=True, text=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"running as root and cannot mount a read-only copy: {mounted.stderr}")
    try:
        for child in staged.iterdir():
            shutil.copy2(child, path / child.name)
        subprocess.run(["mount", "-o", "remount,ro", str(path)], check=True)
        yield
    finally:
        if subprocess.run(["umount", str(path)], check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], check=False)


@pytest.fixture
def read_only_copy(stocked: Path, tmp_path: Path) -> Iterator[str]:
    """A copy of the stocked store (checkpointed: the file alone, as a backup is) in a
    directory nobody can write to; its URL."""
    copy = copy_store(stocked, tmp_path / "read-only" / "ledger.sqlite3")
    with read_only_directory(copy.parent):
        assert not os.access(copy, os.W_OK)
        with pytest.raises(OSError):
            (copy.parent / "probe").write_text("x")
        yield f"sqlite:///{copy}"


def test_a_read_only_copy_can_be_verified_and_exported(read_only_copy: str, stocked: Path,
                                                      till: Till) -> None:
    original = till.ok("audit", "verify", "--json")
    verified = till.ok("audit", "verify", "--json", url=read_only_copy)
    assert verified.stdout == original.stdout
    assert '"ok": true' in verified.stdout
    exported = till.ok("audit", "export", "--format", "csv", url=read_only_copy)
    assert exported.stdout == till.ok("audit", "export", "--format", "csv").stdout
    assert exported.stdout.count("\n") == 4  # a header, a receipt and two sales
    assert "AMOX" in till.ok("stock", "--outlet", "O1", url=read_only_copy).stdout


def test_a_write_to_a_read_only_copy_exits_3_saying_so(read_only_copy: str,
                                                      till: Till) -> None:
    done = till("sell", "--outlet", "O1", "--sale", "S-9", "--line", "AMOX=1",
                url=read_only_copy)
    assert done.returncode == 3, done.stderr
    assert "read-only" in one_line_reason(done)


def test_a_store_opened_read_only_by_its_url_is_not_written(stocked: Path,
                                                           till: Till) -> None:
    """`?mode=ro`: reads work, a write is refused, and the file is left exactly as it was."""
    before = stocked.read_bytes()
    url = f"{till.url}?mode=ro"
    assert '"ok": true' in till.ok("audit", "verify", "--json", url=url).stdout
    assert till.ok("audit", "export", "--format", "jsonl", url=url).stdout.count("\n") == 3
    done = till("sell", "--outlet", "O1", "--sale", "S-9", "--line", "AMOX=1", url=url)
    assert done.returncode == 3, done.stderr
    assert "read-only" in one_line_reason(done)
    assert stocked.read_bytes() == before


def test_a_path_with_uri_characters_opens_read_only(pristine: Path, till: Till,
                                                    tmp_path: Path) -> None:
    """Opening read-only goes through a SQLite URI; a path with characters that mean something
    in one (`#`, `?` once unquoted, `%`, spaces) still names the same file."""
    odd = copy_store(pristine, tmp_path / "odd #1 %3F %2541" / "ledger.sqlite3")
    assert odd.parent.name == "odd #1 %3F %2541"
    url = "sqlite:///" + str(odd).replace("%", "%25")
    verified = till.ok("audit", "verify", "--json", url=url + "?mode=ro").stdout
    assert verified == till.ok("audit", "verify", "--json", url=f"sqlite:///{pristine}").stdout
    assert {p.name for p in odd.parent.iterdir()} <= {
        odd.name, f"{odd.name}-wal", f"{odd.name}-shm"}
