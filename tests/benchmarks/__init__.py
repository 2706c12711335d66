"""``make bench``: benchmarks that report our paths as ratios against bare transports.

Run with ``.venv/bin/python -m tests.benchmarks.run [--quick] [--only NAME ...]``; see
docs/benchmarks.md. Files are named ``bench_*.py`` so pytest never collects them.
"""
