"""A till killed with SIGKILL mid-sale leaves the whole sale in the store or none of it."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from typing import Any

import pytest

from ledger.app.service import Ledger
from ledger.events import CommandAccepted, SaleRecorded, StockSold

pytestmark = pytest.mark.postgres

OUTLET = "CRASH-1"
SKUS = [f"SKU-{n:02d}" for n in range(30)]
RECEIVED = 100_000
ITERATIONS = 24

CHILD = """
import sys
from ledger.app.service import Ledger

url, iteration = sys.argv[1], sys.argv[2]
skus = sys.argv[3].split(",")
with Ledger.open(url) as ledger:
    print("ready", flush=True)
    for n in range(10_000):
        sale_id = f"C{iteration}-{n}"
        ledger.sell(outlet="CRASH-1", sale_id=sale_id, lines=[(sku, 1 + n % 3) for sku in skus])
        print("done", sale_id, flush=True)
"""


def _stored_events(ledger: Ledger) -> list[Any]:
    app = ledger.application
    return [app.mapper.to_domain_event(n)
            for n in app.recorder.select_notifications(start=1, limit=1_000_000)]


def test_killed_sale_is_all_or_nothing(postgres_url: str) -> None:
    with Ledger.open(postgres_url, create_tables=True) as ledger:
        for sku in SKUS:
            ledger.receive(outlet=OUTLET, sku=sku, batch_id="B", quantity=RECEIVED)
    rng = random.Random()
    acknowledged: set[str] = set()
    killed = 0
    for iteration in range(ITERATIONS):
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, postgres_url, str(iteration), ",".join(SKUS)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        assert child.stdout is not None
        ready = child.stdout.readline()
        assert ready == "ready\n", f"child did not start: {ready!r} {child.stderr}"
        time.sleep(rng.uniform(0.0, 0.25))
        child.send_signal(signal.SIGKILL)
        out, err = child.communicate(timeout=30)
        if child.returncode == -signal.SIGKILL:
            killed += 1
        else:
            pytest.fail(f"child ended by itself ({child.returncode}): {err}")
        acknowledged.update(line.split()[1] for line in out.splitlines()
                            if line.startswith("done "))
    assert killed == ITERATIONS
    assert acknowledged, "no child completed a sale before it was killed"

    with Ledger.open(postgres_url) as ledger:
        events = _stored_events(ledger)
        sold_lines: dict[str, Counter[str]] = defaultdict(Counter)
        for event in events:
            if isinstance(event, StockSold):
                sold_lines[event.sale_id][event.sku] += 1
        recorded = {e.sale_id: e for e in events if isinstance(e, SaleRecorded)}
        accepted = {e.key for e in events if isinstance(e, CommandAccepted)}
        sale_ids = set(sold_lines) | set(recorded) | {
            k.removeprefix("sale:") for k in accepted if k.startswith("sale:")}
        for sale_id in sale_ids:
            assert sold_lines[sale_id] == Counter(dict.fromkeys(SKUS, 1)), (
                f"sale {sale_id} is partly recorded: lines {dict(sold_lines[sale_id])}")
            assert sale_id in recorded, f"sale {sale_id} has stock movements but no sale"
            assert f"sale:{sale_id}" in accepted, f"sale {sale_id} has no idempotency record"
        assert acknowledged <= sale_ids, f"acknowledged but lost: {acknowledged - sale_ids}"

        # Conservation: every SKU holds what was received less what the whole sales took.
        for sku in SKUS:
            sold = sum(t.quantity for e in events if isinstance(e, StockSold) and e.sku == sku
                       for t in e.takes)
            item = ledger.stock_item(OUTLET, sku)
            assert item.batch_quantities() == {"B": RECEIVED - sold}
            assert item.on_hand == RECEIVED - sold
            assert sold == sum(1 + int(s.rsplit("-", 1)[1]) % 3 for s in sale_ids)
        # The store is still writable after all those deaths (no lock left behind).
        after = ledger.sell(outlet=OUTLET, sale_id="AFTER", lines=[(sku, 1) for sku in SKUS])
        assert after.replayed is False
