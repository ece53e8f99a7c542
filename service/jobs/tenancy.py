"""Who owns what: a model belongs to the client whose job first took a version of it.

Another client may publish to it only when `model_grants` names a pattern of it for that
client, so one team cannot overwrite (or promote over) another team's model.
"""

from __future__ import annotations

from fnmatch import fnmatchcase

from sqlalchemy import select
from sqlalchemy.orm import Session

from models.card import ModelAccess
from models.spec import JobSpec
from service.config import TrainingSettings
from service.errors import Forbidden
from service.jobs.store import JobStore
from service.jobs.tables import JobRow, ModelVersionRow


def model_owner(store: JobStore, model_name: str) -> str | None:
    """The client of the job that took the model's first version (None: nobody yet)."""
    query = (
        select(JobRow.client)
        .join(ModelVersionRow, ModelVersionRow.job_id == JobRow.id)
        .where(ModelVersionRow.model_name == model_name)
        .order_by(ModelVersionRow.version)
        .limit(1)
    )
    with Session(store.engine) as session:
        return session.scalar(query)


def may_publish(store: JobStore, settings: TrainingSettings, client: str, model_name: str) -> bool:
    owner = model_owner(store, model_name)
    if owner is None or owner == client:
        return True
    patterns = settings.model_grants.get(client, [])
    return any(fnmatchcase(model_name, pattern) for pattern in patterns)


def check_publish(
    store: JobStore, settings: TrainingSettings, client: str, model_name: str
) -> None:
    """Raise Forbidden unless `client` owns `model_name`, is granted it, or it is new."""
    if not may_publish(store, settings, client, model_name):
        raise Forbidden(
            f"model '{model_name}' belongs to another client; ask an administrator for a"
            " grant (SCANTUNE_MODEL_GRANTS)"
        )


def card_access(spec: JobSpec, client: str, settings: TrainingSettings) -> ModelAccess:
    """What the published card records of who may use the version: the job's client owns it;
    private as the spec says, else as the deployment's `models_private` default."""
    if spec.access is None:
        return ModelAccess(owner=client, private=settings.models_private)
    return ModelAccess(
        owner=client, private=spec.access.private, clients=tuple(spec.access.clients)
    )
