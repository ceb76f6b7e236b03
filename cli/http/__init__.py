"""The till-facing HTTP service (`ledger serve`): the CLI's contract as a versioned JSON API.

It sits in `cli` because it is a face like the CLI: it reads through `projections` and
commands through `ledger.app`, and nothing below imports it.
"""
