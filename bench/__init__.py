"""Benchmarks of imocha_pipeline (``make bench`` = ``python -m bench``); see docs/benchmarks.md.

Each benchmark measures its figure and its reference in the same run and returns ``report.Result`` rows;
``__main__`` prints them as one table. Benchmarks print figures; they never pass or fail on time
(a missed target is shown in the table, ``met?`` = no).
"""
