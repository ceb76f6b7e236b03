"""The HTTP benchmark reads what its wrk script prints: a refusal or a replay is never a sale."""

from __future__ import annotations

import pytest

from benchmarks.http import wrk

OUTPUT = """Running 5s test @ http://127.0.0.1:40000
  8 threads and 8 connections
Requests/sec:    200.00
unanswered ab12cd-0-1
unanswered ab12cd-3-120
status 200 990
status 409 7
status 503 3
sent 1002
replayed 2
latency_us 50 12500
latency_us 90 20000
latency_us 99 41000
latency_us 99.9 60000
latency_us 100 75500
duration_us 5000000
errors 0 1 0 10 0
"""


def test_sales_are_the_2xx_answers_that_were_not_replays() -> None:
    run = wrk.parse(OUTPUT, connections=8)
    assert run.ok == 990 and run.sold == 988
    assert run.rate == pytest.approx(988 / 5.0)
    assert run.not_ok == {409: 7, 503: 3}
    assert run.unanswered == ["ab12cd-0-1", "ab12cd-3-120"]
    assert run.sent == 1002
    assert (run.p(50), run.p(99), run.p(100)) == (12.5, 41.0, 75.5)
    assert run.errors == {"connect": 0, "read": 1, "write": 0, "status": 10, "timeout": 0}


def test_an_output_without_the_script_lines_is_refused() -> None:
    with pytest.raises(RuntimeError, match="no results"):
        wrk.parse("Running 5s test @ http://127.0.0.1:40000\n", connections=8)
