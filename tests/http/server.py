"""A real `ledger serve` on loopback for the HTTP tests: started on a free port, stopped by
SIGTERM (the graceful way), with tokens of every role made beforehand."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from cli.http.tokens import TokenStore
from ledger.app.service import Ledger
from projections.runner import create_read_models

ROOT = Path(__file__).resolve().parents[2]
OUTLET = "NAIROBI-1"
OTHER = "MOMBASA-2"


@dataclass
class Server:
    base_url: str
    store_url: str
    tokens: dict[str, str]
    """Token by name: admin, till (NAIROBI-1), store (NAIROBI-1), auditor, revoked."""
    process: subprocess.Popen[bytes]
    clients: list[httpx.Client] = field(default_factory=list)

    def client(self, token: str | None = "admin", *, raw: str | None = None) -> httpx.Client:
        """A client with the named token (or the `raw` token text); closed with the server."""
        secret = raw if raw is not None else self.tokens[token] if token else None
        headers = {"Authorization": f"Bearer {secret}"} if secret else {}
        client = httpx.Client(base_url=self.base_url, headers=headers, timeout=60)
        self.clients.append(client)
        return client


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def make_tokens(store_url: str) -> dict[str, str]:
    ledger = Ledger.open(store_url, create_tables=True)
    try:
        create_read_models(ledger.application)
        store = TokenStore(ledger.application)
        tokens = {
            "admin": store.create("admin-1", "admin", []),
            "till": store.create("till-7", "till", [OUTLET]),
            "store": store.create("store-1", "store", [OUTLET]),
            "auditor": store.create("auditor-1", "auditor", []),
            "revoked": store.create("old-till", "till", [OUTLET]),
        }
        store.revoke("old-till")
        return tokens
    finally:
        ledger.close()


@contextmanager
def running_server(store_url: str, workers: int = 1, *, webhooks: bool = True,
                   tokens: dict[str, str] | None = None) -> Iterator[Server]:
    """`ledger serve` on the store (with `workers` processes, delivering webhooks unless
    told not to), stopped by SIGTERM when the block ends; with the tokens of `make_tokens`,
    made here unless given (made beforehand by the owner for a service that runs as a
    lesser role)."""
    tokens = make_tokens(store_url) if tokens is None else tokens
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("LEDGER_DATABASE_URL", None)
    process = subprocess.Popen(
        [sys.executable, "-c", "import sys; from cli.main import main; sys.exit(main())",
         "--db", store_url, "serve", "--port", str(port), "--workers", str(workers),
         "--log-level", "warning", "--webhooks" if webhooks else "--no-webhooks"],
        cwd=ROOT, env=env)
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base_url}/v1/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"ledger serve did not start (exit {process.poll()})")
            time.sleep(0.1)
        server = Server(base_url, store_url, tokens, process)
        try:
            yield server
        finally:
            for client in server.clients:
                client.close()
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
