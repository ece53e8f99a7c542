"""The inference service: classifies scans with published ONNX models, never importing torch.

gunicorn runs `service.inference:create_app()` once per worker; each worker loads its own
onnxruntime sessions, preloads the configured models and follows alias promotions.
"""

from __future__ import annotations

import atexit
import logging
import warnings
from typing import TYPE_CHECKING

from models import scans
from models.uri import is_s3, load_s3_description
from service import cores
from service.config import InferenceSettings
from service.inference.context import EXTENSION, InferenceServices, services
from service.inference.manager import ModelManager
from service.inference.memory import limit_malloc_arenas
from service.registry import Registry
from service.storage import open_store

__all__ = ["EXTENSION", "InferenceServices", "before_fork", "create_app", "services"]

if TYPE_CHECKING:
    from flask import Flask


def create_app(settings: InferenceSettings | None = None) -> Flask:
    """Build the inference app and start loading its preloaded models in the background.

    Loading starts before Flask and the views are imported: onnxruntime builds its session
    without the GIL, so on a cold start the model loads while the web side imports. (Under
    `scantune serve`, gunicorn's master has imported them already: `before_fork`.)
    """
    settings = settings or InferenceSettings()
    limit_malloc_arenas(settings.malloc_arena_max)
    from service.logs import configure_logging

    configure_logging(settings)
    if settings.ort_lanes is not None:
        logging.getLogger("scantune.inference").warning(
            "SCANTUNE_ORT_LANES is deprecated: set SCANTUNE_BATCH_RUNNERS instead"
        )
    _keep_scan_content_out_of_logs()
    store = open_store(
        settings.artifact_uri, endpoint_url=settings.s3_endpoint_url, region=settings.s3_region
    )
    registry = Registry(store, access_recheck_s=settings.access_recheck_s)
    manager = ModelManager(registry, settings)
    manager.start()
    atexit.register(manager.stop)

    from service.inference import metrics, v1, v2
    from service.inference.predictor import Predictor
    from service.inference.shadow import Shadows
    from service.inference.uploads import InMemoryRequest
    from service.web import add_readiness_check, create_base_app
    from service.withdrawals import Withdrawals

    scans.configure(  # before pydicom is imported: see there
        decoders=settings.dicom_decoders or cores.available_cores(),
        on_broken=metrics.DICOM_DECODER_FAILURES.inc,
    )
    app = create_base_app(__name__, settings, service="inference")
    app.request_class = InMemoryRequest
    withdrawals = Withdrawals(store, settings.access_recheck_s)
    shadows = Shadows(manager, withdrawals)
    atexit.register(shadows.stop)
    app.extensions[EXTENSION] = InferenceServices(
        settings, store, registry, manager, Predictor(manager, withdrawals, shadows.follow), shadows
    )
    app.register_blueprint(v1.bp)
    app.register_blueprint(v2.bp)
    add_readiness_check(app, "models", manager.check_ready)
    # While the preloaded models build (without the GIL), not on the first DICOM scan.
    scans.load_dicom_reader()
    return app


def before_fork(settings: InferenceSettings) -> None:
    """Import what `create_app` and the first model load import late, and load the S3
    client's service description: gunicorn's master calls this before it forks
    (`service.inference.gunicorn_conf`), so that no worker pays for them on a cold start.

    It only imports and reads package data: no thread, session, client, credential or
    connection is made here (none of those may cross a fork); each worker makes its own.
    Not onnxruntime: importing it starts a native thread, which a fork would not copy.
    """
    import flask  # noqa: F401
    from PIL import Image

    from service.inference import predictor, responses, uploads, v1, v2  # noqa: F401
    from service.web import create_base_app  # noqa: F401

    Image.preinit()  # the PNG, JPEG, BMP, GIF and PPM plugins, else the first scan loads them

    if is_s3(settings.artifact_uri):
        load_s3_description()


def _keep_scan_content_out_of_logs() -> None:
    """pydicom warns and logs with element values (patient names, dates): none may reach logs."""
    logging.getLogger("pydicom").setLevel(logging.CRITICAL)
    for module in (r"pydicom(\..*)?$", r"models\.scans(\..*)?$", r"PIL(\..*)?$"):
        warnings.filterwarnings("ignore", module=module)
