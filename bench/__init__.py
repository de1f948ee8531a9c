"""`make bench`: the order saga against a bare Celery chain, measured in one run.

`python -m bench --help` for the options; docs/bench.md for what each figure means."""
