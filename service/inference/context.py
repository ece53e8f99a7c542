"""The inference service's objects as the views reach them: built once per process by
`create_app`, kept on the app, found through `current_app`.

Its own module, so that the views import it and not the package whose `create_app` imports
the views. Flask is imported only when `services()` runs: the app factory builds these objects
before it imports the web side (see `create_app`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from service.config import InferenceSettings
    from service.inference.manager import ModelManager
    from service.inference.predictor import Predictor
    from service.inference.shadow import Shadows
    from service.registry import Registry
    from service.storage import ArtifactStore

EXTENSION = "scantune"


@dataclass(frozen=True)
class InferenceServices:
    """What the views reach through `current_app`: built once per process by `create_app`."""

    settings: InferenceSettings
    store: ArtifactStore
    registry: Registry
    manager: ModelManager
    predictor: Predictor
    shadows: Shadows | None = None


def services() -> InferenceServices:
    """The current app's services (inside a request)."""
    from flask import current_app

    found: InferenceServices = current_app.extensions[EXTENSION]
    return found


def visible_registry() -> Registry:
    """The registry as the request's client sees it (another's private versions left out)."""
    from service.auth import visible_client
    from service.model_access import seen_by

    return seen_by(services().registry, visible_client())
