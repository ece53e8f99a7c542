"""Classification as plain objects: scans in, labelled and calibrated predictions out.

Views call `Predictor`; it decodes with the trainer's own preprocessing (`models.scans`),
runs through the model's micro-batcher and turns outputs into per-scan results.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from models import scans
from models.card import InputSpec, ModelCard
from models.input_profile import Checker, colourfulness
from service.errors import BadRequest, NotFound, PayloadTooLarge, Unprocessable
from service.inference import metrics, prediction_mix
from service.inference.batcher import Outputs
from service.inference.explain import heatmap_png
from service.inference.loaded import LoadedModel
from service.inference.manager import ModelManager
from service.inference.uploads import Upload
from service.model_access import seen_by
from service.withdrawals import Withdrawals

log = logging.getLogger("scantune.inference")


@dataclass(frozen=True)
class Selector:
    """Which model a request means: a version, an alias, or (neither) the default alias."""

    name: str
    version: int | None = None
    alias: str | None = None


Followed = Callable[[LoadedModel, Sequence[Upload], list[dict[str, Any]]], None]
"""What runs after each v1 answer (`shadow.Shadows.follow`): the model, its scans, its answer."""


class Predictor:
    def __init__(
        self, manager: ModelManager, withdrawals: Withdrawals, after: Followed | None = None
    ) -> None:
        self.manager, self.withdrawals, self.after = manager, withdrawals, after

    def predict(
        self,
        model: LoadedModel,
        selector: Selector,
        uploads: Sequence[Upload],
        *,
        explain: bool,
        top_k: int,
    ) -> dict[str, Any]:
        """Classify scans; the result is the v1 response body without the request id."""
        started = time.perf_counter()
        if explain and model.card.outputs.cam not in model.output_names:
            raise BadRequest(f"model '{model.name}' version {model.version} has no CAM output")
        with model.batcher.announce() as arrival:
            batch, sizes, scores = self._prepare(uploads, model)
            decoded = time.perf_counter()
            outputs = arrival.run(batch)
        ran = time.perf_counter()
        checks = input_checks(model.checker, scores)
        predictions = [
            describe(model.card, outputs, i, upload.name, sizes[i], explain, top_k,
                     checks[i] if checks else None)
            for i, upload in enumerate(uploads)
        ]  # fmt: skip
        count_scans(model, len(uploads), scores)
        prediction_mix.answered(model.name, model.version, predictions)
        if self.after is not None:
            self.after(model, uploads, predictions)
        return {
            "model": model_info(model, selector, self.manager.settings.default_alias),
            "predictions": predictions,
            "timing_ms": {
                "preprocess": round((decoded - started) * 1000, 3),
                "inference": round((ran - decoded) * 1000, 3),
                "total": round((time.perf_counter() - started) * 1000, 3),
            },
        }

    def _prepare(
        self, uploads: Sequence[Upload], model: LoadedModel
    ) -> tuple[np.ndarray, list[tuple[int, int]], list[float]]:
        limit = self.manager.settings.max_request_megapixels
        return prepare_all(uploads, model.card.input, limit, model.checker)

    def model(self, selector: Selector, client: str | None) -> LoadedModel:
        """The model `selector` means, if `client` may use it (None: any model) and it is not
        withdrawn (410): checked before it is loaded, so a client cannot make the service load
        another's model."""
        name, version = selector.name, selector.version
        viewer = seen_by(self.manager.registry, client)
        if version is not None:
            viewer.require_visible(name, version)
        else:
            alias = selector.alias or self.manager.settings.default_alias
            try:
                version = self.manager.resolve_alias(name, alias)
                viewer.require_visible(name, version)
            except NotFound:  # the 404 the client's view gives: a hidden alias or model
                viewer.get_alias(name, alias)
                raise
        self.withdrawals.require_in_service(name, version)
        return self.manager.get(name, version=version)

    def infer_tensor(self, model: LoadedModel, batch: np.ndarray) -> Outputs:
        """Run a ready (N, C, size, size) float32 tensor (the V2 protocol's tensor input);
        `tensor_scores` checks it against the input profile."""
        spec = model.card.input
        expected = (spec.channels, spec.size, spec.size)
        if batch.ndim != 4 or tuple(batch.shape[1:]) != expected:
            raise BadRequest(
                f"input shape {list(batch.shape)} does not match the model's [-1, {spec.channels},"
                f" {spec.size}, {spec.size}]"
            )
        if not 1 <= len(batch) <= self.manager.settings.max_files:
            raise BadRequest(
                f"batch of {len(batch)}; 1 to {self.manager.settings.max_files} allowed"
            )
        return model.batcher.run(np.ascontiguousarray(batch, dtype=np.float32))

    def infer_files(
        self, model: LoadedModel, uploads: Sequence[Upload]
    ) -> tuple[Outputs, list[float]]:
        """Decode and run encoded scans (the V2 protocol's BYTES input); the outputs and each
        scan's input check score (none when the model has no input profile)."""
        if len(uploads) > self.manager.settings.max_files:
            raise BadRequest(f"{len(uploads)} scans; at most {self.manager.settings.max_files}")
        with model.batcher.announce() as arrival:
            batch, _, scores = self._prepare(uploads, model)
            return arrival.run(batch), scores


def prepare_all(
    uploads: Sequence[Upload],
    spec: InputSpec,
    max_megapixels: float,
    checker: Checker | None = None,
) -> tuple[np.ndarray, list[tuple[int, int]], list[float]]:
    """The model's (N, C, size, size) batch, each scan's (height, width) and, with a
    `checker`, each scan's input check score on the image prepared for the model; or a 422
    naming the first scan that is not one, or a 413 for the scan that would take the request
    past `max_megapixels`.

    Each scan is charged against the budget before it is decoded, at the size its codec will
    decode (the frame's own header, not only the DICOM one), so neither a scan over the
    budget nor a refused one is ever decoded. Scans are decoded one at a time, each prepared
    before the next is decoded, so a request holds one decoded scan at once: 64 files of 60
    kB that each decode to 64 MP would otherwise hold 16 GB.
    """
    batch = np.empty((len(uploads), spec.channels, spec.size, spec.size), dtype=np.float32)
    sizes: list[tuple[int, int]] = []
    scores: list[float] = []
    budget = int(max_megapixels * 1e6)
    for i, upload in enumerate(uploads):
        try:
            image = scans.decode(upload.data, upload.name, budget)
        except scans.OverPixelBudget as exc:
            raise PayloadTooLarge(
                f"{exc.name} decodes to {exc.pixels / 1e6:.2f} megapixels, past what is left of"
                f" the {max_megapixels:g} one request may hold (send fewer scans per request)"
            ) from None
        except scans.ImageDecodeError as exc:
            raise Unprocessable(
                f"{exc.name}: {exc.reason}",
                errors=[{"loc": exc.name, "msg": exc.reason, "type": "decode"}],
            ) from None
        sizes.append((int(image.shape[0]), int(image.shape[1])))
        budget -= sizes[-1][0] * sizes[-1][1]
        prepared = scans.prepare(image, spec.size, spec.channels)
        batch[i] = scans.normalize(prepared, spec.mean, spec.std)
        if checker is not None:
            scores.append(checker.score(prepared, colourfulness(image)))
        del image
    return batch, sizes, scores


def tensor_scores(checker: Checker | None, batch: np.ndarray, spec: InputSpec) -> list[float]:
    """Input check scores of a ready (normalised) batch: undone to [0, 1]; its colour, where
    it has three channels, in place of the file's."""
    if checker is None:
        return []
    mean = np.asarray(spec.mean, np.float32).reshape(-1, 1, 1)
    std = np.asarray(spec.std, np.float32).reshape(-1, 1, 1)
    prepared = np.clip(batch * std + mean, -1.0, 2.0)  # far outside [0, 1] is atypical anyway
    colour = [colourfulness(image.transpose(1, 2, 0)) if len(image) == 3 else 0.0
              for image in prepared]  # fmt: skip
    return [float(s) for s in checker.scores_of(prepared, np.asarray(colour, np.float32))]


def count_scans(model: LoadedModel, count: int, scores: Sequence[float]) -> None:
    """Count a request's scans, and those its input check flags, for the version (v1 and v2
    alike, so the atypical share the chart alerts on is of every scan the version saw)."""
    labels = (model.name, str(model.version))
    metrics.IMAGES.labels(*labels).inc(count)
    if model.checker is not None:
        atypical = sum(score > model.checker.limit for score in scores)
        if atypical:
            metrics.ATYPICAL.labels(*labels).inc(atypical)


def input_checks(checker: Checker | None, scores: Sequence[float]) -> list[dict[str, Any]]:
    """Each scan's `input_check` member: typical, its score and the limit; none without a
    checker."""
    if checker is None:
        return []
    limit = checker.limit
    return [{"typical": s <= limit, "score": round(s, 4), "limit": limit} for s in scores]


def check_parameters(checker: Checker | None, scores: Sequence[float]) -> dict[str, Any]:
    """The input check as V2 response parameters, whose values the protocol keeps to strings,
    numbers and booleans: the limit, how many scans are over it, and each scan's score in
    batch order, comma-separated; none without a checker."""
    if checker is None:
        return {}
    limit = checker.limit
    return {
        "input_check_limit": limit,
        "input_check_atypical": sum(score > limit for score in scores),
        "input_check_scores": ",".join(f"{score:.4f}" for score in scores),
    }


def calibrated(card: ModelCard, outputs: Outputs) -> np.ndarray:
    """Calibrated class probabilities (N, K), applying the temperature unless the graph did."""
    if card.calibration.applied_in_graph and card.outputs.probabilities in outputs:
        return outputs[card.outputs.probabilities]
    logits = outputs[card.outputs.logits].astype(np.float64) / card.calibration.temperature
    logits -= logits.max(axis=1, keepdims=True)
    exp = np.exp(logits)
    return (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)


def predicted_index(card: ModelCard, probs: np.ndarray) -> int:
    """The class to report: the binary operating point when the card has one, else argmax."""
    threshold = card.threshold
    if threshold is not None and len(card.classes) == 2:
        positive = card.classes.index(threshold.positive_class)
        return positive if float(probs[positive]) >= threshold.value else 1 - positive
    return int(np.argmax(probs))


def describe(
    card: ModelCard,
    outputs: Outputs,
    i: int,
    name: str,
    size: tuple[int, ...],
    explain: bool,
    top_k: int,
    check: dict[str, Any] | None = None,
) -> dict[str, Any]:
    probs = calibrated(card, outputs)[i]
    index = predicted_index(card, probs)
    order = np.argsort(-probs, kind="stable")[: max(1, min(top_k, len(card.classes)))]
    result: dict[str, Any] = {
        "file": name,
        "label": card.classes[index],
        "probabilities": {c: float(p) for c, p in zip(card.classes, probs, strict=True)},
        "top_k": [{"label": card.classes[j], "probability": float(probs[j])} for j in order],
    }
    if check is not None:
        result["input_check"] = check
    if explain:
        result["explanation"] = explanation(card, outputs, i, index, size)
    return result


def explanation(
    card: ModelCard, outputs: Outputs, i: int, index: int, size: tuple[int, ...]
) -> dict[str, Any]:
    cam_name = card.outputs.cam or "cam"
    height, width = int(size[0]), int(size[1])
    return {
        "method": "cam",
        "class": card.classes[index],
        "width": width,
        "height": height,
        "png_base64": heatmap_png(outputs[cam_name][i, index], height, width),
    }


def model_info(model: LoadedModel, selector: Selector, default_alias: str) -> dict[str, Any]:
    info: dict[str, Any] = {"name": model.name, "version": model.version, "sha256": model.sha256}
    if selector.version is None:
        info["alias"] = selector.alias or default_alias
    return info
