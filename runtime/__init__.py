"""The worker runtime every process shares, one job per module:

- `celery_app`: the Celery app factory and the delivery settings every app must share;
- `settings`: the settings base class of every process;
- `retries`: every retry and publish policy (backoff, budgets, when a step is stuck);
- `step`: `SagaStep`, the base class of every saga step, its options as class attributes;
- `outcome`: `StepOutcome`, what a step returns and its inbox stores;
- `inbox`: a step's effect at most once per (order, step);
- `guard`: the delivery count and the per-(order, step) lock, in Redis;
- `deadletters`, `consumer`, `transport`: what cannot be processed is kept, never dropped;
- `db`, `migrations`: the engine helper and Alembic;
- `cli`: the command line every process offers.

It imports `contracts` and never a service or the orchestrator (import-linter checks)."""
