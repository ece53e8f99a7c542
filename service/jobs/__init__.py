"""Training jobs: store, state machine, launchers, runner and supervisor.

The training API talks only to `JobService` (service.jobs.service). Underneath:

- `store.JobStore` (SQLAlchemy 2; SQLite in WAL mode or PostgreSQL; Alembic migrations in
  `migrations/`, run under a lock at start-up): every state change is a conditional UPDATE,
  fenced by `attempts`, so API processes and runners can share one database.
- `state`: queued → running → succeeded | failed | cancelled; running → queued only for a
  resume-retry; phases inside running.
- `launchers`: `local` (a subprocess in its own session) and `kubernetes` (a batch/v1 Job).
- `runner` (`python -m service.jobs.runner JOB_ID`): trains through `models.runner`,
  heartbeats, publishes the version, applies the promotion gate, sends the webhook.
- `supervisor`: a thread per API process that launches queued jobs and reaps dead runners.
"""
