"""Catch-up and rebuild in worker processes move tables and positions exactly as one process
does: the same rows, the same positions, a committed prefix after SIGKILL, and no worker left
committing once its runner is dead."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg
import pytest

import projections.runner as runner
from ledger.app.service import Ledger
from projections.runner import ReadModels
from projections.verify import verify_read_models
from tests.databases import fresh_database
from tests.integration.test_projections import (
    CATCH_UP_CHILD,
    LEDGER_EXE,
    cli_env,
    seed_store,
    table_contents,
    tracked_position,
)


def uninterrupted_contents(url: str, tmp_path: Path) -> dict[str, list[tuple[object, ...]]]:
    """The tables one process leaves after catching up a copy of the store at `url`."""
    with fresh_database(template=url.rsplit("/", 1)[1]) as copy_url:
        done = subprocess.run([LEDGER_EXE, "--db", copy_url, "projections", "catch-up",
                               "--workers", "1"], env=cli_env(tmp_path),
                              capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 0, done.stderr
        return table_contents(copy_url)


@pytest.mark.postgres
def test_parallel_catch_up_equals_one_process(postgres_url: str, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    seed_store(postgres_url, sales=300)
    expected = uninterrupted_contents(postgres_url, tmp_path)
    monkeypatch.setattr(runner, "BATCH_SIZE", 97)  # many ranges, so workers interleave
    with Ledger.open(postgres_url) as ledger:
        models = ReadModels(ledger.application)
        head = models.head()
        applied = models.catch_up(workers=3)
        run = models.last_parallel_run
        assert run is not None and run.reached == head
        assert [w.exitcode for w in run.workers] == [0] * 3
        assert sum(w.events for w in run.workers) == run.events == applied
        assert all(w.events > 0 and w.peak_rss_mib > 0 for w in run.workers)
        assert verify_read_models(ledger.application) == []
    assert table_contents(postgres_url) == expected


@pytest.mark.postgres
def test_parallel_catch_up_racing_another_runner(postgres_url: str, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Another runner applying the same events at the same time makes the workers stop; the
    caller finishes from wherever they got, and nothing is applied twice or skipped."""
    seed_store(postgres_url, sales=300)
    expected = uninterrupted_contents(postgres_url, tmp_path)
    monkeypatch.setattr(runner, "BATCH_SIZE", 53)
    errors: list[BaseException] = []

    def race() -> None:
        try:
            with Ledger.open(postgres_url) as other:
                time.sleep(random.uniform(0.5, 2.0))  # while the workers start or run
                ReadModels(other.application).catch_up(workers=1)
        except BaseException as error:
            errors.append(error)

    racer = threading.Thread(target=race)
    racer.start()
    with Ledger.open(postgres_url) as ledger:
        models = ReadModels(ledger.application)
        models.catch_up(workers=2)
        racer.join(timeout=120)
        assert not errors, errors
        assert min(models.positions().values()) == models.head()
        assert verify_read_models(ledger.application) == []
    assert table_contents(postgres_url) == expected


@pytest.mark.postgres
def test_sigkilled_parallel_catch_up_leaves_a_prefix_and_no_worker(postgres_url: str,
                                                                   tmp_path: Path) -> None:
    seed_store(postgres_url, sales=500)
    expected = uninterrupted_contents(postgres_url, tmp_path)
    with Ledger.open(postgres_url) as ledger:
        head = ledger.head_position()
    killed_mid_way = 0
    with psycopg.connect(postgres_url, autocommit=True) as watcher:
        for _ in range(3):
            current = tracked_position(watcher)
            if current >= head:
                break
            target = current + 1 + (head - current) // 5
            child = subprocess.Popen(
                [sys.executable, "-c", CATCH_UP_CHILD, "25", "--db", postgres_url,
                 "projections", "catch-up", "--workers", "2"],
                env=cli_env(tmp_path), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                text=True)
            deadline = time.monotonic() + 60
            while child.poll() is None and tracked_position(watcher) < target:
                assert time.monotonic() < deadline
                time.sleep(0.002)
            finished_first = child.poll() is not None
            child.send_signal(signal.SIGKILL)
            _, err = child.communicate(timeout=30)
            assert child.returncode == (0 if finished_first else -signal.SIGKILL), err
            # A worker may finish the commit it was making; then it sees its runner is gone.
            time.sleep(1.5)
            settled = tracked_position(watcher)
            time.sleep(1.5)
            assert tracked_position(watcher) == settled, "a worker outlived its runner"
            if 0 < settled < head:
                killed_mid_way += 1
            with Ledger.open(postgres_url) as ledger:
                assert verify_read_models(ledger.application) == []
    assert killed_mid_way >= 2
    done = subprocess.run([LEDGER_EXE, "--db", postgres_url, "projections", "catch-up",
                           "--workers", "2"], env=cli_env(tmp_path), capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert table_contents(postgres_url) == expected
