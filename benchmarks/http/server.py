"""`ledger serve` for the benchmark: started on a free loopback port, its memory sampled, and
stopped by SIGTERM as an operator stops it."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
START_SECONDS = 60.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def rss_mib(pid: int) -> float:
    """The resident set of one process (`VmRSS`), 0 if it has gone."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def children(pid: int) -> list[int]:
    """The processes whose parent is `pid` (uvicorn's workers, with several)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if parent == pid:
            found.append(int(stat.parent.name))
    return found


def tree_rss_mib(pid: int) -> float:
    """The server's memory: the process and its children (the workers, if it has any)."""
    return rss_mib(pid) + sum(rss_mib(child) for child in children(pid))


@dataclass
class Server:
    """A running `ledger serve`."""

    base_url: str
    process: subprocess.Popen[bytes]
    workers: int

    def rss_mib(self) -> float:
        return tree_rss_mib(self.process.pid)


@dataclass
class MemorySampler:
    """Samples the server's RSS every `interval` seconds while a block runs."""

    server: Server
    interval: float = 1.0
    samples: list[tuple[float, float]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    @contextlib.contextmanager
    def sampling(self) -> Iterator[MemorySampler]:
        began = time.perf_counter()

        def sample() -> None:
            while True:
                self.samples.append((time.perf_counter() - began, self.server.rss_mib()))
                if self._stop.wait(self.interval):
                    return

        thread = threading.Thread(target=sample, name="rss-sampler", daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            thread.join()
            self.samples.append((time.perf_counter() - began, self.server.rss_mib()))


@contextlib.contextmanager
def serving(store_url: str, workers: int) -> Iterator[Server]:
    """`ledger serve --workers N --no-webhooks` on the store, from this checkout."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("LEDGER_DATABASE_URL", None)
    process = subprocess.Popen(
        [sys.executable, "-c", "import sys; from cli.main import main; sys.exit(main())",
         "--db", store_url, "serve", "--host", "127.0.0.1", "--port", str(port),
         "--workers", str(workers), "--log-level", "warning", "--no-webhooks"],
        cwd=ROOT, env=env)
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_SECONDS
        while True:
            try:
                if httpx.get(f"{base_url}/v1/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"ledger serve did not start (exit {process.poll()})")
            time.sleep(0.1)
        yield Server(base_url, process, workers)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
