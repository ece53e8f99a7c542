"""What a job runner checks and records for security, with the API's own settings.

The runner repeats the submit-time checks before it reads anything (settings may have
changed, and a Kubernetes pod must not trust the row alone), and appends the job's end,
its published version and a moved alias to the audit trail.
"""

from __future__ import annotations

from typing import Any

from models.spec import JobSpec
from service.audit import AuditRecord, AuditTrail
from service.config import TrainingSettings
from service.jobs.audit_store import AuditStore
from service.jobs.store import JobStore
from service.jobs.tenancy import check_publish
from service.jobs.validation import check_access


class JobGuard:
    def __init__(self, settings: TrainingSettings, store: JobStore, job_id: str) -> None:
        self.settings, self.store, self.job_id = settings, store, job_id
        self.trail = AuditTrail(AuditStore(store.engine).add)

    @property
    def client(self) -> str:
        return self.store.get(self.job_id).client

    def check(self, spec: JobSpec) -> None:
        """Unprocessable (data, GPUs, webhook) or Forbidden (someone else's model)."""
        check_access(spec, self.settings)
        check_publish(self.store, self.settings, self.client, spec.model_name)

    def record(self, action: str, target: str, outcome: str, **detail: Any) -> None:
        detail.setdefault("job", self.job_id)
        self.trail.record(AuditRecord(action, self.client, target, outcome, detail=detail))
