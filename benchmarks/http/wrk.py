"""Drive `ledger serve` with wrk (Debian's `wrk` package: `apt-get install wrk`) and the sale
script beside this module, and read what it reports."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

SCRIPT = Path(__file__).with_name("sale.lua")
TIMEOUT_SECONDS = 10


class WrkMissing(RuntimeError):
    pass


@dataclass
class WrkRun:
    """One wrk run: responses by status, the requests it never saw answered, its latency
    distribution (every response, refusals included) and its socket errors."""

    connections: int
    seconds: float
    statuses: dict[int, int] = field(default_factory=dict)
    sent: int = 0
    replayed: int = 0
    unanswered: list[str] = field(default_factory=list)
    latency_ms: dict[float, float] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    output: str = ""

    @property
    def ok(self) -> int:
        """Requests answered 2xx."""
        return sum(n for status, n in self.statuses.items() if 200 <= status < 300)

    @property
    def sold(self) -> int:
        """Sales answered 2xx and recorded by their request (not a replay): the only ones
        counted as sales."""
        return self.ok - self.replayed

    @property
    def not_ok(self) -> dict[int, int]:
        return {status: n for status, n in sorted(self.statuses.items())
                if not 200 <= status < 300}

    @property
    def rate(self) -> float:
        """Sales (`sold`) per second over wrk's own measured duration."""
        return self.sold / self.seconds if self.seconds else 0.0

    def p(self, percentile: float) -> float:
        return self.latency_ms[percentile]


def wrk_path() -> str:
    found = shutil.which("wrk")
    if found is None:
        raise WrkMissing("wrk is not installed: apt-get install wrk (Debian's package)")
    return found


def run(base_url: str, token: str, tag: str, outlet: str, sku: str, mode: str,
        connections: int, seconds: float) -> WrkRun:
    """`connections` connections, one per wrk thread, each selling one unit per request for
    `seconds`: of `sku` itself (`mode` "hot"), or of `sku` + the thread's number ("distinct").
    Every sale has its own id and Idempotency-Key, `<tag>-<thread>-<n>`."""
    command = [wrk_path(), "-t", str(connections), "-c", str(connections),
               "-d", f"{max(1, round(seconds))}s", "--timeout", f"{TIMEOUT_SECONDS}s",
               "-s", str(SCRIPT), base_url, "--", token, tag, outlet, sku, mode]
    finished = subprocess.run(command, capture_output=True, text=True, check=False,
                              timeout=seconds + 120)
    if finished.returncode != 0:
        raise RuntimeError(f"wrk exited with {finished.returncode}: {finished.stderr.strip()}")
    return parse(finished.stdout, connections)


def parse(output: str, connections: int) -> WrkRun:
    """Read the lines `sale.lua`'s `done` prints after wrk's own summary."""
    result = WrkRun(connections=connections, seconds=0.0, output=output)
    for line in output.splitlines():
        word, _, rest = line.partition(" ")
        values = rest.split()
        if word == "status":
            result.statuses[int(values[0])] = int(values[1])
        elif word == "sent":
            result.sent = int(values[0])
        elif word == "replayed":
            result.replayed = int(values[0])
        elif word == "unanswered":
            result.unanswered.append(values[0])
        elif word == "latency_us":
            result.latency_ms[float(values[0])] = float(values[1]) / 1000
        elif word == "duration_us":
            result.seconds = int(values[0]) / 1e6
        elif word == "errors":
            result.errors = dict(zip(("connect", "read", "write", "status", "timeout"),
                                     map(int, values), strict=True))
    if not result.seconds or not result.latency_ms:
        raise RuntimeError(f"wrk printed no results:\n{output}")
    return result
