"""Reproducible loopback benchmarks for mail-proxy (run: ``python -m bench.run_all``)."""
