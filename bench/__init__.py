"""pushreach benchmarks: each figure side by side with its baseline, measured in the same run.

Run them all with `python -m bench` (or `make bench`); `python -m bench --help` for options.
These are benchmarks, not tests: they report figures and never fail.
"""
