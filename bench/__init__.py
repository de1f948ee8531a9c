"""`make bench`: the order saga against a hand-rolled Celery chain of the same effects, Celery's
floor (a bare chain) and, with --peers, DBOS, measured in one run.

`python -m bench --help` for the options; docs/bench.md for what each figure means."""
