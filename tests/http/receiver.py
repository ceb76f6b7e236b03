"""A webhook receiver on loopback for the tests: a tiny HTTP server on a free port that answers
each delivery as its script says (fail, hang past the sender's timeout, then take them), and
records every attempt with the time it arrived."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Attempt:
    arrived: float
    """time.time() on arrival, to compare with the signed timestamp."""
    arrived_monotonic: float
    body: bytes
    headers: dict[str, str]
    action: str
    """What the receiver did: "ok" (answered 204), "fail" (500), "unavailable" (503), or
    "hang:<seconds>" (answered 204 only after that long, past the sender's timeout)."""

    @property
    def taken(self) -> bool:
        """Whether the sender was told it was taken (a prompt 2xx)."""
        return self.action == "ok"

    @property
    def payload(self) -> dict[str, Any]:
        decoded: dict[str, Any] = json.loads(self.body)
        return decoded

    def signature_is_valid(self, secret: str, tolerance: float = 300) -> bool:
        """Checked here from first principles, not with the service's own code: the v1 HMAC
        of `<t>.<body>`, and `t` within `tolerance` of the arrival."""
        header = self.headers.get("ledger-signature", "")
        parts = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
        if not parts.get("t", "").isdigit() or "v1" not in parts:
            return False
        timestamp = int(parts["t"])
        expected = hmac.new(secret.encode(), f"{timestamp}.".encode() + self.body,
                            hashlib.sha256).hexdigest()
        return hmac.compare_digest(expected, parts["v1"]) and \
            abs(self.arrived - timestamp) <= tolerance


@dataclass
class Receiver:
    url: str
    script: deque[str]
    attempts: list[Attempt] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def taken(self) -> list[Attempt]:
        with self.lock:
            return [attempt for attempt in self.attempts if attempt.taken]

    def movements(self) -> list[dict[str, Any]]:
        """The movements of every delivery the sender was told was taken, in arrival order."""
        return [row for attempt in self.taken() for row in attempt.payload["movements"]]

    def wait_for(self, condition: Any, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if condition():
                return True
            time.sleep(0.05)
        return False


@contextmanager
def receiving(script: list[str] | None = None) -> Iterator[Receiver]:
    """A receiver on a free loopback port for the block; stopped when it ends."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    receiver = Receiver(f"http://127.0.0.1:{server.server_address[1]}/hooks/stock",
                        deque(script or []))
    server.receiver = receiver  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        receiver: Receiver = self.server.receiver  # type: ignore[attr-defined]
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        with receiver.lock:
            action = receiver.script.popleft() if receiver.script else "ok"
            receiver.attempts.append(Attempt(
                time.time(), time.monotonic(), body,
                {name.lower(): value for name, value in self.headers.items()}, action))
        try:
            if action.startswith("hang:"):
                time.sleep(float(action.split(":", 1)[1]))
                self._answer(204)
            elif action == "fail":
                self._answer(500)
            elif action == "unavailable":
                self._answer(503)
            else:
                self._answer(204)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the sender gave up waiting (a hang): it counts the attempt as failed

    def _answer(self, status: int) -> None:
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass
