"""Reproducible benchmarks of datamill, each against baselines measured in the same run.

Run them all with `python -m bench` (or `make bench`); see `bench.common` for
how results are measured and reported.
"""
