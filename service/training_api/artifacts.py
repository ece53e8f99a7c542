"""A version's files and evaluation, and a job's per-epoch metrics, as the API serves them.

Plain objects over the registry and the job service, no Flask: views stream what these return.
"""

from __future__ import annotations

import json
import mimetypes
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from models import evaluation
from service.errors import NotFound
from service.jobs.service import JobService
from service.registry import Registry
from service.storage import ObjectNotFound

TYPES = {".onnx": "application/octet-stream", ".json": "application/json", ".png": "image/png"}


class FileNotFound(NotFound):
    title = "File not found"


@dataclass(frozen=True)
class Download:
    name: str
    media_type: str
    chunks: Iterator[bytes]


class VersionFiles:
    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    def names(self, name: str, version: int) -> list[str]:
        """The version's published files, relative to it ('card.json', 'plots/roc.png')."""
        self.registry.get_card(name, version)  # 404 for a missing model or version
        prefix = self.registry.version_prefix(name, version) + "/"
        return [k[len(prefix) :] for k in self.registry.store.list_keys(prefix)]

    def open(self, name: str, version: int, file: str) -> Download:
        """Stream one of `names()`. Only a name in that listing is ever read, so no path a
        client sends ('../', '%2e%2e', an absolute path) can reach another key."""
        names = self.names(name, version)
        if file not in names:
            raise FileNotFound(
                f"model '{name}' version {version} has no file '{file}'; it has: {', '.join(names)}"
            )
        key = f"{self.registry.version_prefix(name, version)}/{file}"
        try:
            chunks = self.registry.store.open_stream(key)
        except ObjectNotFound:  # deleted between the listing and the read
            raise FileNotFound(f"model '{name}' version {version} has no file '{file}'") from None
        return Download(file.rsplit("/", 1)[-1], media_type(file), chunks)

    def evaluation(self, name: str, version: int) -> dict[str, Any]:
        """evaluation.json, or for a version published before it, what its card records."""
        card = self.registry.get_card(name, version)
        key = f"{self.registry.version_prefix(name, version)}/{evaluation.EVALUATION_FILE}"
        try:
            found: dict[str, Any] = json.loads(self.registry.store.get_text(key))
        except ObjectNotFound:
            threshold = card.threshold.model_dump(mode="json") if card.threshold else None
            found = evaluation.from_card(list(card.classes), card.metrics, threshold)
        return {"name": name, "version": version, **found}


def media_type(file: str) -> str:
    suffix = "." + file.rsplit(".", 1)[-1].lower() if "." in file else ""
    return TYPES.get(suffix) or mimetypes.guess_type(file)[0] or "application/octet-stream"


def job_metrics(jobs: JobService, job_id: str, client: str | None) -> dict[str, Any]:
    """Per-epoch metrics of a job, as far as it has got: the history, the epoch under way and
    the best epoch so far by the metric the recipe monitors. With `client`, only that
    client's job (another's is not found, as in every job route)."""
    job = jobs.get(job_id, client=client)
    monitor = (job.spec.get("recipe") or {}).get("monitor") or "val_auc"
    best = job.best_metrics or {}
    return {
        "job_id": job.id,
        "status": job.status,
        "phase": job.phase,
        "progress": job.progress,
        "epoch": job.epoch,
        "epochs": job.epochs,
        "monitor": monitor,
        "best_epoch": best.get("epoch"),
        "history": job.history,
    }
