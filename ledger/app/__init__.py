"""The application layer: commands and results, the `Ledger` service (load, decide, save), the
one retry-and-append loop, idempotency, and the auditors' reads."""
