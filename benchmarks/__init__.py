"""The stockledger benchmark suite: `python -m benchmarks [--quick] [--json]`.

Runs the same workloads through stockledger, a faithful psycopg reproduction of the old CRUD
stock module, and raw psycopg inserts (the ceiling), against a real PostgreSQL server, and checks
the targets of issue 6 in the same run.
"""
