"""What the back-office end-to-end tests share: a refusal's one-line reason, and business
times around now (their `cli` fixture is in `conftest.py`)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tests.e2e.test_cli import Cli, one_line_reason

NOW = datetime.now(UTC)


def days_ago(days: float) -> str:
    return (NOW - timedelta(days=days)).isoformat()


def date_in(days: int) -> str:
    return (NOW + timedelta(days=days)).date().isoformat()


def refused(cli: Cli, *args: str) -> str:
    """The one-line reason of a refusal (exit 1) that recorded nothing."""
    head = cli.head()
    done = cli(*args)
    assert done.returncode == 1, (done.returncode, done.stdout, done.stderr)
    assert cli.head() == head, "a refused command recorded events"
    return one_line_reason(done)
