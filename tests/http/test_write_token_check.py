"""A write verifies its token in its own endpoint's thread (`cli.http.app.Unverified`): one
hop to the thread pool per write instead of two, the token still looked up on every request
(a revoked token's next write is refused), and a request without a live token still told
401 before anything about its body. In process, over the embedded store."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio.to_thread
import pytest

with warnings.catch_warnings():
    # This starlette names an alias anyio deprecates, once, as its test client is defined.
    warnings.simplefilter("ignore", DeprecationWarning)
    from starlette.testclient import TestClient

from cli.http.app import create_app
from cli.http.tokens import TokenStore
from ledger.app.service import Ledger
from projections.runner import create_read_models

OUTLET = "TOKENS-1"


@pytest.fixture
def service(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
            ) -> Iterator[tuple[TestClient, dict[str, str], TokenStore]]:
    url = f"sqlite:///{tmp_path / 'ledger.sqlite3'}"
    with Ledger.open(url, create_tables=True) as ledger:
        create_read_models(ledger.application)
        ledger.receive(outlet=OUTLET, sku="AMOX", batch_id="B1", quantity=10)
        store = TokenStore(ledger.application)
        store.create_table()
        tokens = {"till": store.create("till-1", "till", [OUTLET]),
                  "gone": store.create("till-2", "till", [OUTLET])}
        store.revoke("till-2")
    with TestClient(create_app(url, webhooks=False)) as client:
        yield client, tokens, client.app.state.tokens  # type: ignore[attr-defined]


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def sale(sale_id: str, quantity: Any = 1) -> dict[str, Any]:
    return {"outlet": OUTLET, "sale_id": sale_id, "lines": [{"sku": "AMOX", "quantity": quantity}]}


class Hops:
    """Counts the hops to the thread pool (every one goes through anyio's `run_sync`)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        original: Callable[..., Any] = anyio.to_thread.run_sync

        async def counted(*args: Any, **kwargs: Any) -> Any:
            self.count += 1
            return await original(*args, **kwargs)

        monkeypatch.setattr(anyio.to_thread, "run_sync", counted)


def test_a_sale_hops_to_the_thread_pool_once(
        service: tuple[TestClient, dict[str, str], TokenStore],
        monkeypatch: pytest.MonkeyPatch) -> None:
    client, tokens, _ = service
    hops = Hops(monkeypatch)
    response = client.post("/v1/sales", json=sale("S1"), headers=bearer(tokens["till"]))
    assert response.status_code == 200, response.text
    assert response.json()["lines"][0]["stock"]["available"] == 9
    assert hops.count == 1


def test_a_revoked_tokens_next_write_is_refused(
        service: tuple[TestClient, dict[str, str], TokenStore]) -> None:
    client, tokens, store = service
    assert client.post("/v1/sales", json=sale("S1"), headers=bearer(tokens["till"])
                       ).status_code == 200
    store.revoke("till-1")
    refused = client.post("/v1/sales", json=sale("S2"), headers=bearer(tokens["till"]))
    assert refused.status_code == 401 and refused.json()["type"].endswith("unauthenticated")
    assert refused.headers["WWW-Authenticate"] == "Bearer"


@pytest.mark.parametrize("headers", [{}, bearer("slk_nonsense"), "gone",
                                     {"Authorization": "Basic dXNlcjpwYXNz"}])
def test_a_write_without_a_live_token_is_401_before_its_body_is_judged(
        service: tuple[TestClient, dict[str, str], TokenStore],
        headers: dict[str, str] | str) -> None:
    client, tokens, _ = service
    sent = bearer(tokens[headers]) if isinstance(headers, str) else headers
    for body in (sale("S1"), sale("S1", quantity="lots"), {"outlet": OUTLET}):
        refused = client.post("/v1/sales", json=body, headers=sent)
        assert refused.status_code == 401, refused.text
        assert refused.json()["type"].endswith("unauthenticated")
        assert refused.headers["WWW-Authenticate"] == "Bearer"
    invalid = client.post("/v1/sales", json=sale("S1", quantity="lots"),
                          headers=bearer(tokens["till"]))
    assert invalid.status_code == 422 and "quantity" in invalid.json()["detail"]
