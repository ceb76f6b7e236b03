"""Webhooks, on both stores: `ledger webhooks add | list | remove | status`, and delivery to a
receiver on loopback that fails, times out and recovers (nothing lost, order kept, every
signature valid, back-off growing), a worker killed mid-delivery whose subscription another
worker takes over from its recorded position, and `ledger serve` delivering by itself."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
from click.testing import CliRunner

from cli.http import signing
from cli.main import main
from ledger.app.service import Ledger
from tests.databases import fresh_database
from tests.http.feed_client import keys, recorded_movements
from tests.http.receiver import Receiver, receiving
from tests.http.server import OTHER, OUTLET, ROOT, Server, running_server
from tests.http.test_api import head, new, ok, receive

SECRET = "whsec_test_0123456789abcdef"
OTHER_SECRET = "whsec_other_fedcba9876543210"


@pytest.fixture(scope="module",
                params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def server(request: pytest.FixtureRequest,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server that delivers nothing itself: the tests run `ledger webhooks run`."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('hooks') / 'ledger.sqlite3'}"
        with running_server(url, webhooks=False) as started:
            yield started
    else:
        with fresh_database() as url, running_server(url, webhooks=False) as started:
            yield started


def ledger_cli(store_url: str, *args: str, input: str | None = None) -> Any:
    result = CliRunner().invoke(main, ["--db", store_url, "webhooks", *args], input=input)
    return result


def add(store_url: str, url: str, secret: str, *options: str) -> str:
    result = ledger_cli(store_url, "add", "--url", url, "--secret", secret, *options)
    assert result.exit_code == 0, result.output
    identifier: str = result.stdout.strip()
    return identifier


def remove_all(store_url: str) -> None:
    listed = json.loads(ledger_cli(store_url, "list", "--json").stdout)["webhooks"]
    for row in listed:
        assert ledger_cli(store_url, "remove", row["id"]).exit_code == 0


def status_of(store_url: str, identifier: str) -> dict[str, Any]:
    result = ledger_cli(store_url, "status", "--json")
    assert result.exit_code == 0, result.output
    [found] = [w for w in json.loads(result.stdout)["webhooks"] if w["id"] == identifier]
    return found  # type: ignore[no-any-return]


def start_worker(store_url: str, *options: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("LEDGER_DATABASE_URL", None)
    return subprocess.Popen(
        [sys.executable, "-c", "import sys; from cli.main import main; sys.exit(main())",
         "--db", store_url, "webhooks", "run", *options], cwd=ROOT, env=env)


def stop_worker(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0


def sell(client: Any, sku: str, outlet: str = OUTLET) -> str:
    sale_id = new("S")
    ok(client.post("/v1/sales", json={"outlet": outlet, "sale_id": sale_id,
                                      "lines": [{"sku": sku, "quantity": 1}]}))
    return sale_id


def assert_in_order_once(receiver: Receiver, expected: list[dict[str, Any]]) -> None:
    """The deliveries the receiver took hold every expected movement once, in order; each
    holds only movements after its `after` up to its `next`; and each took delivery starts
    where the one before it ended, or further on only past positions that held nothing for
    the subscription (which a subscription to some outlets passes over undelivered)."""
    assert keys(receiver.movements()) == keys(expected)
    taken = receiver.taken()
    for attempt in taken:
        page = attempt.payload
        assert all(page["after"] < row["position"] <= page["next"] for row in page["movements"])
    for before, after in itertools.pairwise(taken):
        passed_over = (before.payload["next"], after.payload["after"])
        assert passed_over[0] <= passed_over[1]
        assert [row for row in expected
                if passed_over[0] < row["position"] <= passed_over[1]] == []


def test_deliveries_survive_failures_and_a_timeout_and_keep_order(server: Server) -> None:
    admin = server.client()
    sku = new("HOOK")
    receive(admin, sku, 50)
    receive(admin, sku, 50, outlet=OTHER)
    start = head(admin)
    # Two failures, a hang past the sender's timeout, a 503, then it takes everything.
    with receiving(["fail", "fail", "hang:2.5", "unavailable"]) as flaky, \
            receiving() as other_outlet:
        everything = add(server.store_url, flaky.url, SECRET)
        add(server.store_url, other_outlet.url, OTHER_SECRET, "--outlet", OTHER)
        worker = start_worker(server.store_url, "--timeout", "1", "--backoff", "0.2",
                              "--max-backoff", "1", "--poll", "0.1")
        try:
            till = server.client()
            sales = []
            for i in range(12):
                sales.append(sell(till, sku, OTHER if i % 3 == 0 else OUTLET))
                time.sleep(0.15 if i < 6 else 0)
            expected = recorded_movements(server.store_url, start)
            expected_other = [row for row in expected if row["outlet"] == OTHER]
            assert {row["reference"] for row in expected} == set(sales)
            assert flaky.wait_for(lambda: len(flaky.movements()) >= len(expected), 60)
            assert other_outlet.wait_for(
                lambda: len(other_outlet.movements()) >= len(expected_other), 30)
            final = head(admin)
            assert flaky.wait_for(
                lambda: status_of(server.store_url, everything)["position"] == final, 30)
        finally:
            stop_worker(worker)
        remove_all(server.store_url)

    assert_in_order_once(flaky, expected)
    assert_in_order_once(other_outlet, expected_other)
    # Every attempt, taken or not, is signed with its subscription's secret, for its body.
    assert all(a.signature_is_valid(SECRET) for a in flaky.attempts)
    assert all(a.signature_is_valid(OTHER_SECRET) for a in other_outlet.attempts)
    assert not any(a.signature_is_valid(OTHER_SECRET) for a in flaky.attempts)
    assert all(a.headers["ledger-webhook"] == everything for a in flaky.attempts)
    for attempt in flaky.attempts:
        assert signing.verify(SECRET, attempt.headers["ledger-signature"], attempt.body,
                              attempt.arrived) > 0

    # The failed attempts were retried from the same position, each after a longer wait:
    # at least half of 0.2 s doubled per failure (capped at 1 s), and the hang's timeout.
    actions = [a.action for a in flaky.attempts]
    assert actions[:5] == ["fail", "fail", "hang:2.5", "unavailable", "ok"]
    retried = flaky.attempts[:5]
    assert {a.payload["after"] for a in retried} == {start}
    gaps = [b.arrived_monotonic - a.arrived_monotonic for a, b in itertools.pairwise(retried)]
    assert gaps[0] >= 0.1 and gaps[1] >= 0.2 and gaps[2] >= 1.0 + 0.4 and gaps[3] >= 0.5, gaps


def test_status_shows_lag_and_the_last_error(server: Server) -> None:
    admin = server.client()
    sku = new("LAG")
    receive(admin, sku, 10)
    with receiving(["unavailable"] * 1000) as down:
        identifier = add(server.store_url, down.url, SECRET)
        sell(admin, sku)
        worker = start_worker(server.store_url, "--timeout", "1", "--backoff", "0.1",
                              "--max-backoff", "0.3", "--poll", "0.1")
        try:
            assert down.wait_for(lambda: len(down.attempts) >= 3, 30)
        finally:
            stop_worker(worker)
        failing = status_of(server.store_url, identifier)
        assert failing["failures"] >= 3 and failing["last_error"] == "HTTP 503"
        assert failing["lag_events"] > 0 and failing["lag_seconds"] > 0
        assert failing["delivered"] == 0 and failing["next_attempt_at"] is not None
        assert failing["position"] == head(admin) - failing["lag_events"]
        # Nothing was skipped: every attempt was the same page, and the position stayed.
        assert {a.payload["after"] for a in down.attempts} == {failing["position"]}

        down.script.clear()  # the receiver is back
        worker = start_worker(server.store_url, "--timeout", "1", "--backoff", "0.1",
                              "--max-backoff", "0.3", "--poll", "0.1")
        try:
            final = head(admin)
            assert down.wait_for(
                lambda: status_of(server.store_url, identifier)["position"] == final, 30)
        finally:
            stop_worker(worker)
        recovered = status_of(server.store_url, identifier)
        assert recovered["lag_events"] == 0 and recovered["failures"] == 0
        assert recovered["delivered"] == len(down.taken()) >= 1
        assert recovered["last_error"] == "HTTP 503"  # kept, with its time, for the operator
        remove_all(server.store_url)


def test_a_worker_killed_mid_delivery_is_taken_over_and_nothing_is_skipped(
        server: Server) -> None:
    admin = server.client()
    sku = new("CRASH")
    receive(admin, sku, 10)
    start = head(admin)
    options = ("--timeout", "1", "--backoff", "0.1", "--max-backoff", "0.5", "--poll", "0.1")
    with receiving(["hang:0.8"]) as receiver:
        add(server.store_url, receiver.url, SECRET)
        first = start_worker(server.store_url, *options)
        sales = [sell(admin, sku)]
        try:
            assert receiver.wait_for(lambda: receiver.attempts, 30)
        finally:
            first.kill()  # mid-delivery: the receiver has the page and has not answered
            first.wait(timeout=10)
        in_flight = receiver.attempts[0].payload
        sales += [sell(admin, sku) for _ in range(3)]
        second = start_worker(server.store_url, *options)
        try:
            expected = recorded_movements(server.store_url, start)
            assert receiver.wait_for(lambda: len(receiver.movements()) >= len(expected), 60)
        finally:
            stop_worker(second)
        remove_all(server.store_url)
    assert {row["reference"] for row in expected} == set(sales)
    # The page in flight when the worker died was delivered again, from the same position.
    assert in_flight["after"] == start
    assert receiver.taken()[0].payload["after"] == start
    assert_in_order_once(receiver, expected)
    assert all(a.signature_is_valid(SECRET) for a in receiver.attempts)


def test_ledger_serve_delivers_webhooks(store_url: str) -> None:
    with running_server(store_url) as server, receiving() as receiver:
        admin = server.client()
        sku = new("SERVE")
        receive(admin, sku, 5)
        add(store_url, receiver.url, SECRET)
        start = head(admin)
        sale = sell(server.client("till"), sku)
        assert receiver.wait_for(lambda: receiver.movements(), 30)
    [delivered] = receiver.movements()
    assert delivered["reference"] == sale and delivered["actor"] == "till-7"
    assert receiver.taken()[0].payload["after"] == start
    assert receiver.attempts[0].signature_is_valid(SECRET)


def test_subscriptions_are_added_listed_and_removed_and_the_secret_never_shown(
        store_url: str) -> None:
    Ledger.open(store_url, create_tables=True).close()
    url = "https://erp.example.com/hooks/stock?tenant=7"
    identifier = add(store_url, url, SECRET, "--outlet", OUTLET, "--outlet", OTHER)
    from_stdin = ledger_cli(store_url, "add", "--url", "http://127.0.0.1:9/x", "--secret", "-",
                            "--after", "0", input=OTHER_SECRET + "\n")
    assert from_stdin.exit_code == 0, from_stdin.output
    second = from_stdin.stdout.strip()

    listed = ledger_cli(store_url, "list", "--json")
    rows = json.loads(listed.stdout)["webhooks"]
    assert {(r["id"], r["url"], tuple(r["outlets"] or ())) for r in rows} == {
        (identifier, url, (OTHER, OUTLET)), (second, "http://127.0.0.1:9/x", ())}
    for command in (["list"], ["list", "--json"], ["status"], ["status", "--json"]):
        shown = ledger_cli(store_url, *command)
        assert shown.exit_code == 0
        assert SECRET not in shown.output and OTHER_SECRET not in shown.output
        assert "whsec" not in shown.output

    for bad in (["--url", "ftp://example.com/x", "--secret", SECRET],
                ["--url", "not a url", "--secret", SECRET],
                ["--url", "https://example.com/x", "--secret", "short"],
                ["--url", "https://example.com/x", "--secret", SECRET, "--after", "999999"]):
        refused = ledger_cli(store_url, "add", *bad)
        assert refused.exit_code == 2, (bad, refused.output)
    assert ledger_cli(store_url, "remove", "wh-nonexistent").exit_code == 1
    assert ledger_cli(store_url, "remove", identifier).exit_code == 0
    assert ledger_cli(store_url, "remove", identifier).exit_code == 1
    left = json.loads(ledger_cli(store_url, "list", "--json").stdout)["webhooks"]
    assert [r["id"] for r in left] == [second]
