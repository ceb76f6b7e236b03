"""`ledger tokens create | list | revoke`: the token is printed once, only its hash is kept."""

from __future__ import annotations

import hashlib
import json

from click.testing import CliRunner

from cli.http.tokens import TokenStore
from cli.main import main
from ledger.app.service import Ledger


def test_tokens_are_created_listed_and_revoked(store_url: str) -> None:
    runner = CliRunner()
    Ledger.open(store_url, create_tables=True).close()
    created = runner.invoke(main, ["--db", store_url, "tokens", "create", "--name", "till-7",
                                   "--role", "till", "--outlet", "NAIROBI-1"])
    assert created.exit_code == 0, created.output
    token = created.stdout.splitlines()[0]
    assert token.startswith("slk_") and len(token) > 40

    again = runner.invoke(main, ["--db", store_url, "tokens", "create", "--name", "till-7",
                                 "--role", "till", "--outlet", "NAIROBI-1"])
    assert again.exit_code == 1
    unscoped = runner.invoke(main, ["--db", store_url, "tokens", "create", "--name", "t2",
                                    "--role", "till"])
    assert unscoped.exit_code == 1 and "--outlet" in unscoped.stderr
    bad_role = runner.invoke(main, ["--db", store_url, "tokens", "create", "--name", "t3",
                                    "--role", "root"])
    assert bad_role.exit_code == 2

    listed = runner.invoke(main, ["--db", store_url, "tokens", "list", "--json"])
    rows = json.loads(listed.stdout)["tokens"]
    assert rows == [{"name": "till-7", "role": "till", "outlets": ["NAIROBI-1"],
                     "created_at": rows[0]["created_at"], "revoked_at": None}]
    assert token not in listed.stdout

    with Ledger.open(store_url) as ledger:
        tokens = TokenStore(ledger.application)
        verified = tokens.verify(token)
        assert verified is not None and verified.name == "till-7"
        hashes = [row["token_hash"] for row in tokens._store.query(
            tokens._store.sql(f"SELECT token_hash FROM {tokens._table}"), [])]
        assert hashes == [hashlib.sha256(token.encode()).hexdigest()]

    revoked = runner.invoke(main, ["--db", store_url, "tokens", "revoke", "till-7"])
    assert revoked.exit_code == 0
    assert runner.invoke(main, ["--db", store_url, "tokens", "revoke", "till-7"]).exit_code == 1
    with Ledger.open(store_url) as ledger:
        assert TokenStore(ledger.application).verify(token) is None
