"""Benchmark: the recipe's quality by repeated stratified k-fold CV on the shared scans.

Not a test. Pools PneumoniaMNIST train + validation, draws stratified subsamples (~500,
~1,000 scans, and the full set), and for each recipe variant trains one model per outer fold
the way a job would (the recipe's own 15 % validation split carved from the fold's training
part, its own threshold rule), then scores the held-out fold. Reports mean and spread (sd over
folds x repeats) of AUC, accuracy at the recipe's threshold and balanced accuracy, plus what
costs nothing extra to measure on the same models: accuracy under the old threshold rule
(Youden on the inner validation split), a horizontal-flip TTA (its AUC, shifted AUC and
accuracy at the threshold a `tta_hflip` job would pick), and AUC on the held-out scans under
simulated acquisition shifts (`acquisition_shifts`: a robustness proxy, since
cross-validation on one site's scans cannot see the shift to another's).

    python bench/quality.py [--sizes 500,1000,full] [--folds 3] [--repeats 1]
        [--variants default,...] [--task binary|three-class|rgb] [--json OUT] [--dump DIR]
        [--only-folds 0,1] [--only-repeats 1]   # a cell's outer folds, split over processes
    python bench/quality.py --inference-cost    # per-image cost of fold ensembles / flip TTA
    python bench/quality.py --rescore DIR       # threshold rules on one dumped cell

Variants are named job-spec overrides (VARIANTS below); one with `recipe.cv_folds` is nested
CV (each outer fold's job trains its own fold ensemble). Tasks: `binary` (normal vs
pneumonia), `three-class` (pneumonia split at its median brightness: a made-up but real
3-class problem), `rgb` (the scans tinted into colour, trained with 3 input channels).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.onnx_cost import ensemble_cost
from bench.shifts import acquisition_shifts
from models import evaluate
from models.crossval import (
    stratified_holdout,
    subset,
    with_splits,
)
from models.data import Dataset, Split, load_dataset
from models.finetune import build_model, input_stats
from models.fitting import Fitted, Run, fit_job
from models.network import Classifier, Ensemble
from models.spec import JobSpec
from models.splits import stratified_folds
from models.threshold import Scores, decide
from models.trainer import predict_logits

DEFAULT_DATA = (
    Path(__file__).resolve().parents[2] / "shared/data/pneumoniamnist/pneumoniamnist_trainval.npz"
)
VARIANTS: dict[str, dict[str, Any]] = {
    "default": {},
    "epochs6": {"recipe": {"schedule_steps": None}},  # 6 epochs whatever the size
    "old": {"recipe": {"small_val": "select_best", "schedule_steps": None}},  # before issue 21
    "res96": {"image_size": 96},
    "flip": {"recipe": {"augment": {"hflip": True}}},
    "steps800": {"recipe": {"schedule_steps": 800}},
    "smooth": {"recipe": {"label_smoothing": 0.1}},
    "mixup": {"recipe": {"mixup_alpha": 0.2}},
    "aug2": {
        "recipe": {
            "augment": {
                "rotate_degrees": 14.0,
                "translate": 0.1,
                "scale": (0.9, 1.1),
                "brightness": 0.2,
                "contrast": 0.2,
            }
        }
    },
    "ema": {"recipe": {"ema_decay": 0.99}},
    "lite1": {"base_model": "efficientnet_lite1"},
    "cv3": {"recipe": {"cv_folds": 3}},  # nested CV: each fold's job is a 3-fold ensemble
    "perscan": {"recipe": {"input_norm": "per_scan"}},
    "wd05": {"recipe": {"weight_decay": 0.05}},  # AdamW's usual fine-tuning decay (default 1e-4)
    "lr1e3": {"recipe": {"lr": 1e-3}},  # half the default's, to stay nearer the pretrained weights
}
TASK_CLASSES = {
    "binary": ["normal", "pneumonia"],
    "three-class": ["normal", "pneumonia-dark", "pneumonia-bright"],
    "rgb": ["normal", "pneumonia"],
}


def task_arrays(data: Path, task: str) -> dict[str, np.ndarray]:
    """The shared npz's arrays, relabelled or recoloured for `task`."""
    with np.load(data) as z:
        arrays = {k: z[k] for k in z.files}
    if task == "three-class":
        for split in ("train", "val"):
            labels = arrays[f"{split}_labels"].ravel().astype(np.int64)
            brightness = arrays[f"{split}_images"].reshape(len(labels), -1).mean(axis=1)
            cut = np.median(brightness[labels == 1])
            arrays[f"{split}_labels"] = labels + ((labels == 1) & (brightness > cut))
    if task == "rgb":
        for split in ("train", "val"):
            gray = arrays[f"{split}_images"].astype(np.float32)
            tint = np.stack([gray, gray * 0.8, gray * 0.6], axis=-1)  # a sepia-like tint
            arrays[f"{split}_images"] = tint.round().astype(np.uint8)
    return arrays


def load_pool(arrays: dict[str, np.ndarray], spec: JobSpec, workdir: Path) -> Dataset:
    """The task's scans prepared by `models.data` exactly as a job would, as one pool."""
    path = workdir / "task.npz"
    np.savez(path, **arrays)  # type: ignore[arg-type]
    dataset = spec.dataset.model_copy(update={"uri": str(path)})
    data = load_dataset(dataset, size=spec.image_size, channels=spec.recipe.channels, seed=0)
    pool = Split(
        np.concatenate([data.train.images, data.val.images]),
        np.concatenate([data.train.labels, data.val.labels]),
        [*data.train.names, *data.val.names],
    )
    return with_splits(data, pool, subset(pool, np.arange(0)))


def make_spec(data: Path, task: str, overrides: dict[str, Any]) -> JobSpec:
    raw: dict[str, Any] = {
        "model_name": "bench-quality",
        "dataset": {"uri": str(data), "format": "npz", "classes": TASK_CLASSES[task]},
        "recipe": {"channels": 3} if task == "rgb" else {},
    }
    for key, value in overrides.items():
        raw[key] = raw.get(key, {}) | value if isinstance(value, dict) else value
    return JobSpec.model_validate(raw)


def sample(labels: np.ndarray, size: int | None, seed: int) -> np.ndarray:
    """Indices of a stratified subsample of about `size` scans (all of them for None)."""
    if size is None or size >= len(labels):
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    picks = [
        rng.choice(members, round(size * len(members) / len(labels)), replace=False)
        for members in (np.flatnonzero(labels == c) for c in np.unique(labels))
    ]
    return np.sort(np.concatenate(picks))


def score_fold(
    spec: JobSpec,
    pool: Dataset,
    train_idx: np.ndarray,
    test_idx: np.ndarray,
    dump: Path | None = None,
) -> dict:
    """Train on `train_idx` as a job would (own val split, `fit_job`), score `test_idx`.

    A variant with `recipe.cv_folds` is thereby nested CV: the fold's training part is split
    again into the job's folds, and the held-out fold scores the exported ensemble.
    """
    kept, held = stratified_holdout(pool.train.labels[train_idx], spec.dataset.val_fraction, 0)
    fold = with_splits(
        pool, subset(pool.train, train_idx[kept]), subset(pool.train, train_idx[held])
    )
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="scantune-quality-") as tmp:
        run = Run(None, None, False, torch.device("cpu"), Path(tmp))
        fitted = fit_job(spec, fold, build_model(spec, len(fold.classes)), run)
    seconds = time.perf_counter() - started
    model, cpu = fitted.model, torch.device("cpu")
    mean, std = input_stats(spec)
    test = subset(pool.train, test_idx)
    logits = predict_logits(model, test.images, mean, std, cpu)
    flipped = predict_logits(model, test.images[..., ::-1].copy(), mean, std, cpu)
    figures = _figures(spec, fitted, fold.train.labels, test.labels, logits, flipped)
    views = acquisition_shifts(test.images)
    shifted = {name: predict_logits(model, x, mean, std, cpu) for name, x in views.items()}
    figures |= _shift_figures(test.labels, shifted)
    # Flip TTA judged as a job with `tta_hflip` would be, through the graph such a job exports
    # (`Ensemble(hflip=True)`): its threshold from TTA validation scores too. Only for a single
    # model: fold ensembles' out-of-fold scans have no one model to mirror them through.
    val_tta = None
    if isinstance(model, Classifier):
        mirror = Ensemble([model], hflip=True).eval()
        val_tta = predict_logits(mirror, fitted.scored.val.images, mean, std, cpu)
        tta = replace(fitted, logits=val_tta)
        both = _figures(spec, tta, fold.train.labels, test.labels, (logits + flipped) / 2)
        mirrored = {name: predict_logits(mirror, x, mean, std, cpu) for name, x in views.items()}
        figures |= {
            f"{key}_tta": value
            for key, value in (both | _shift_figures(test.labels, mirrored)).items()
            if key in ("accuracy", "balanced_accuracy", "auc_shifted", "auc_shifted_worst")
        }
    if dump is not None:  # raw scores, so other threshold rules can be judged without training
        arrays = {
            "val_labels": fitted.scored.val.labels,
            "val_logits": fitted.logits,
            "test_labels": test.labels,
            "test_logits": logits,
            "test_flipped_logits": flipped,
            **({} if val_tta is None else {"val_tta_logits": val_tta}),
            "train_labels": fold.train.labels,
        } | {f"test_{name}_logits": z for name, z in shifted.items()}
        np.savez(dump, **arrays)  # type: ignore[arg-type]
    return figures | {"seconds": seconds, "epochs_run": fitted.fit.epochs_run}


def _shift_figures(y: np.ndarray, shifted: dict[str, np.ndarray]) -> dict[str, float]:
    aucs = {f"auc_{name}": evaluate.roc_auc(y, evaluate.softmax(z)) for name, z in shifted.items()}
    return aucs | {
        "auc_shifted": float(np.mean(list(aucs.values()))),
        "auc_shifted_worst": float(min(aucs.values())),
    }


def _figures(
    spec: JobSpec,
    fitted: Fitted,
    train_labels: np.ndarray,
    y: np.ndarray,
    logits: np.ndarray,
    flipped: np.ndarray | None = None,
) -> dict[str, float]:
    """Figures on the held-out fold; temperature and threshold from the scans the job judges
    itself on (its validation split, or its out-of-fold scans when it has folds). With the
    mirrored scans' `flipped` logits, also the AUC of their average (flip TTA)."""
    truth, judged_logits = fitted.scored.val.labels, fitted.logits
    temperature = evaluate.fit_temperature(truth, judged_logits)
    probs = evaluate.softmax(logits, temperature)
    out = {"auc": evaluate.roc_auc(y, probs)}
    if flipped is not None:
        tta = evaluate.softmax((logits + flipped) / 2, temperature)
        out["auc_tta"] = evaluate.roc_auc(y, tta)
    k = probs.shape[1]
    if k != 2:
        cm = evaluate.confusion_matrix(y, probs.argmax(axis=1), k)
        return out | {
            "accuracy": float(np.trace(cm) / cm.sum()),
            "balanced_accuracy": evaluate.balanced_accuracy(cm),
        }
    score = evaluate.softmax(judged_logits, temperature)[:, 1]
    val = Scores(truth, score, fitted.source)
    balanced = spec.recipe.imbalance != "none"
    new = decide(spec.recipe.threshold, "positive", [val], train_labels, balanced)
    old = evaluate.choose_threshold(val.truth, val.score, "youden", None, "positive")
    pred = (probs[:, 1] >= new.value).astype(np.int64)
    cm = evaluate.confusion_matrix(y, pred, 2)
    return out | {
        "accuracy": float((pred == y).mean()),
        "balanced_accuracy": evaluate.balanced_accuracy(cm),
        "accuracy_old_rule": float(((probs[:, 1] >= old.value) == y).mean()),
        "accuracy_at_0.5": float(((probs[:, 1] >= 0.5) == y).mean()),
        "accuracy_at_1-prior": float(((probs[:, 1] >= 1 - train_labels.mean()) == y).mean()),
        "threshold_from_prior": float(new.chosen_on == "prior"),
    }


def run_cell(
    spec: JobSpec,
    pool: Dataset,
    size: int | None,
    folds: int,
    repeats: int,
    dump: Path | None = None,
    only: set[int] | None = None,
    only_repeats: set[int] | None = None,
) -> dict:
    """Repeated stratified k-fold over a subsample: mean and sd of every figure (over the
    outer folds in `only` of the repeats in `only_repeats`, when given: one cell split across
    processes). Repeat r draws its subsample and folds with seed r."""
    rows = []
    for repeat in sorted(only_repeats or range(repeats)):
        picked = sample(pool.train.labels, size, seed=repeat)
        assignment = stratified_folds(pool.train.labels[picked], folds, seed=repeat)
        for fold in sorted(only or range(folds)):
            train_idx, test_idx = picked[assignment != fold], picked[assignment == fold]
            where = dump / f"r{repeat}f{fold}.npz" if dump else None
            rows.append(score_fold(spec, pool, train_idx, test_idx, where))
            print("    fold", json.dumps({k: round(v, 4) for k, v in rows[-1].items()}), flush=True)
    return {
        "scans": len(sample(pool.train.labels, size, seed=0)),
        "runs": len(rows),
        **mean_and_sd(rows),
    }


def rescore(folder: Path) -> dict[str, Any]:
    """Accuracy and balanced accuracy of each threshold rule on the dumped folds of one cell,
    in distribution and under the simulated acquisition shifts (mean and worst of their
    accuracies): a rule whose cut only suits one site's score distribution shows there."""
    rules: dict[str, list[dict[str, float]]] = {}
    for path in sorted(folder.glob("*.npz")):
        with np.load(path) as z:
            temperature = evaluate.fit_temperature(z["val_labels"], z["val_logits"])
            val = evaluate.softmax(z["val_logits"], temperature)[:, 1]
            y, prior = z["test_labels"], float(z["train_labels"].mean())
            views = {
                key[len("test_") : -len("_logits")]: evaluate.softmax(z[key], temperature)[:, 1]
                for key in z.files
                if key.startswith("test_") and key.endswith("_logits")
            }
            youden = evaluate.choose_threshold(z["val_labels"], val, "youden", None, "p").value
        test = views.pop("")
        views.pop("flipped", None)
        for rule, cut in (("youden_on_val", youden), ("0.5", 0.5), ("1-prior", 1 - prior)):
            cm = evaluate.confusion_matrix(y, (test >= cut).astype(np.int64), 2)
            row = {
                "accuracy": float(np.trace(cm) / cm.sum()),
                "balanced_accuracy": evaluate.balanced_accuracy(cm),
            }
            shifted = [float(((p >= cut) == y).mean()) for p in views.values()]
            if shifted:  # dumps from before the shifts were scored have none
                row |= {
                    "accuracy_shifted": float(np.mean(shifted)),
                    "accuracy_shifted_worst": min(shifted),
                }
            rules.setdefault(rule, []).append(row)
    return {rule: mean_and_sd(rows) for rule, rows in rules.items()}


def mean_and_sd(rows: list[dict[str, float]]) -> dict[str, float]:
    """Each figure's mean over the rows, and its sd as `<name>_sd`."""
    keys = rows[0].keys()
    return {
        **{k: float(np.mean([r[k] for r in rows])) for k in keys},
        **{f"{k}_sd": float(np.std([r[k] for r in rows], ddof=1)) for k in keys},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--sizes", default="500,1000,full")
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--variants", default="default")
    parser.add_argument("--task", choices=sorted(TASK_CLASSES), default="binary")
    parser.add_argument("--override", type=json.loads, default={}, help="JSON spec overrides")
    parser.add_argument("--only-folds", help="comma-separated outer folds to run (default all)")
    parser.add_argument("--only-repeats", help="comma-separated repeats to run (default all)")
    parser.add_argument("--json", type=Path, help="append each cell's figures here (JSON lines)")
    parser.add_argument("--dump", type=Path, help="keep each fold's raw logits under this folder")
    parser.add_argument(
        "--inference-cost", action="store_true", help="only time ensembles/TTA in onnxruntime"
    )
    parser.add_argument("--rescore", type=Path, help="threshold rules on a --dump cell folder")
    args = parser.parse_args()
    for option, parts, count in (
        ("--only-folds", args.only_folds, args.folds),
        ("--only-repeats", args.only_repeats, args.repeats),
    ):
        if parts and not {int(x) for x in parts.split(",")} <= set(range(count)):
            parser.error(f"{option} {parts}: each must be one of 0..{count - 1}")
    if args.rescore:
        print(json.dumps(rescore(args.rescore), indent=1))
        return
    if args.inference_cost:
        ensemble_cost(make_spec(args.data, "binary", args.override))
        return
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, task {args.task}")
    arrays = task_arrays(args.data, args.task)
    sizes = [None if s == "full" else int(s) for s in args.sizes.split(",")]
    for name in args.variants.split(","):
        spec = make_spec(args.data, args.task, VARIANTS[name] | args.override)
        with tempfile.TemporaryDirectory() as tmp:
            pool = load_pool(arrays, spec, Path(tmp))
        for size in sizes:
            print(f"{name} size {size or 'full'}", flush=True)
            cell = {"variant": name, "task": args.task, "size": size or "full"}
            dump = args.dump / f"{args.task}-{name}-{size or 'full'}" if args.dump else None
            if dump:
                dump.mkdir(parents=True, exist_ok=True)
            only = {int(f) for f in args.only_folds.split(",")} if args.only_folds else None
            again = {int(r) for r in args.only_repeats.split(",")} if args.only_repeats else None
            cell |= run_cell(spec, pool, size, args.folds, args.repeats, dump, only, again)
            print(json.dumps(cell), flush=True)
            if args.json:
                with args.json.open("a") as out:
                    out.write(json.dumps(cell) + "\n")


if __name__ == "__main__":
    main()
