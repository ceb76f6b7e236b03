"""The HTTP service under load: `python -m benchmarks.http` (see its `__main__`)."""
