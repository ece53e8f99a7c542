"""Training jobs: store, state machine, launchers, runner and supervisor.

The training API talks only to `JobService` (service.jobs.service); everything else here is
its machinery.
"""
