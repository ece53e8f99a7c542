"""The training service's objects as the views reach them: built once per process by
`create_app`, kept on the app, found through `current_app` (flask's examples/celery)."""

from __future__ import annotations

from dataclasses import dataclass

from flask import current_app

from service.auth import visible_client
from service.config import TrainingSettings
from service.jobs.service import JobService
from service.model_access import seen_by
from service.registry import Registry
from service.storage import ArtifactStore
from service.training_api.catalog import Catalog
from service.version_notes import VersionNotes
from service.withdrawals import Withdrawals

EXTENSION = "scantune"


@dataclass(frozen=True)
class TrainingServices:
    """What the views reach through `current_app`: built once per process by `create_app`."""

    settings: TrainingSettings
    jobs: JobService
    store: ArtifactStore
    registry: Registry
    withdrawals: Withdrawals
    notes: VersionNotes


def services() -> TrainingServices:
    """The current app's services (inside a request)."""
    found: TrainingServices = current_app.extensions[EXTENSION]
    return found


def catalog() -> Catalog:
    """The registry as the request's client sees it (another's private versions left out)."""
    found = services()
    return Catalog(seen_by(found.registry, visible_client()), found.withdrawals, found.notes)
