"""The machine the run measured: cores, memory, CPU model, Python, and process peak RSS."""

from __future__ import annotations

import os
import platform
import sys

from projections.parallel import peak_rss_mib

__all__ = ["describe", "peak_rss_mib"]


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def memory_gib() -> float:
    try:
        with open("/proc/meminfo") as info:
            for line in info:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) / 1024 / 1024
    except OSError:
        pass
    return 0.0


def describe() -> dict[str, str]:
    return {
        "nproc": str(os.cpu_count()),
        "memory": f"{memory_gib():.1f} GiB",
        "cpu": cpu_model(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
    }
