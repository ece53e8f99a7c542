"""Benchmark: the default recipe vs a minimal hand-written PyTorch loop on PneumoniaMNIST.

Not a test. Fine-tunes the default job spec (only data, classes and base model named) on the
full shared train split, then trains the same model on the same prepared data at the same
resolution with a bare loop (AdamW on all weights, no augmentation, no freezing, no
validation between epochs), and prints validation ACC, AUC, ECE, wall time and images/s.

    python bench/train_pneumonia.py [--data PATH] [--skip-minimal] [--json OUT]
        [--recipe '{"cv_folds": 3}']   # the job with these recipe settings over the default
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models import evaluate
from models.augment import normalize
from models.data import load_dataset
from models.finetune import build_model, input_stats, plan_phases, sized_epochs
from models.progress import ProgressEvent
from models.runner import run_training
from models.spec import JobSpec
from models.trainer import Trainer, predict_logits

DEFAULT_DATA = (
    Path(__file__).resolve().parents[2] / "shared/data/pneumoniamnist/pneumoniamnist_trainval.npz"
)


def default_spec(data: Path, recipe: dict[str, Any] | None = None) -> JobSpec:
    return JobSpec.model_validate(
        {
            "model_name": "bench-pneumonia",
            "dataset": {"uri": str(data), "format": "npz", "classes": ["normal", "pneumonia"]},
            "base_model": "efficientnet_lite0",
            "recipe": recipe or {},
        }
    )


def bench_trainer(spec: JobSpec) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        result = run_training(spec, Path(out), progress=_print_epochs)
        wall = time.perf_counter() - start
    m = result.metrics
    return {
        "val_accuracy": m["val_accuracy"],
        "val_auc": m["val_auc"],
        "val_ece": m["val_ece"],
        "val_ece_calibrated": m["val_ece_calibrated"],
        "wall_s": wall,
        "train_images_per_s": m["train_images_per_s"],
        "epochs_run": m["epochs_run"],
        "best_epoch": m["best_epoch"],
        "parity_max_abs_diff": result.card.parity.max_abs_diff,
    }


def _print_epochs(event: ProgressEvent) -> None:
    if event.metrics and event.phase == "training":
        figures = {k: round(v, 4) for k, v in event.metrics.items()}
        print(f"  epoch {event.epoch}/{event.epochs} loss {event.loss:.4f} {figures}", flush=True)


def bench_minimal(spec: JobSpec) -> dict[str, Any]:
    """The bare loop on the same model, data, resolution, batch size, epochs and frozen layers.

    It trains exactly the layers the recipe's phases train (head only in epoch 1, then the
    groups from the same unfreeze point on), so images/s compare like for like; it has no
    augmentation, warm-up, schedule, class weights, validation, checkpoints or progress.
    """
    start = time.perf_counter()
    data = load_dataset(spec.dataset, size=spec.image_size, channels=spec.recipe.channels, seed=0)
    spec = sized_epochs(spec, len(data.train.labels))  # the epochs the recipe would run
    model = build_model(spec, len(data.classes))
    mean, std = input_stats(spec)
    x = normalize(torch.from_numpy(data.train.images), mean, std)
    y = torch.from_numpy(data.train.labels)
    loss_fn = torch.nn.CrossEntropyLoss()
    batch, train_s, seen = spec.recipe.batch_size, 0.0, 0
    phases = plan_phases(spec)
    epochs = sum(p.epochs for p in phases)
    for epoch in range(epochs):
        opt = _minimal_freeze(
            model, phases[0 if epoch < phases[0].epochs else 1].unfreeze_from, spec
        )
        order = torch.randperm(len(y))
        t0 = time.perf_counter()
        for i in range(len(y) // batch):
            idx = order[i * batch : (i + 1) * batch]
            loss = loss_fn(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            seen += len(idx)
        train_s += time.perf_counter() - t0
    logits = predict_logits(model, data.val.images, mean, std, torch.device("cpu"))
    probs = evaluate.softmax(logits)
    yv = data.val.labels
    return {
        "val_accuracy": float((probs.argmax(1) == yv).mean()),
        "val_auc": evaluate.roc_auc(yv, probs),
        "val_ece": evaluate.ece(yv, probs),
        "wall_s": time.perf_counter() - start,
        "train_images_per_s": seen / train_s,
        "epochs_run": epochs,
    }


def _minimal_freeze(model: Any, unfreeze_from: str | None, spec: JobSpec) -> torch.optim.Optimizer:
    names = list(model.backbone.groups)
    live = set(names[names.index(unfreeze_from) :]) if unfreeze_from else set()
    model.train()
    for name, group in model.backbone.groups.items():
        group.requires_grad_(name in live)
        if name not in live:
            group.eval()
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.AdamW(params, lr=spec.recipe.lr)


def bench_interleaved(spec: JobSpec, rounds: int = 6, steps: int = 3) -> dict[str, Any]:
    """Per-step throughput of the trainer's step vs the bare step, in alternating blocks.

    Both train the same groups of the same model (the fine-tuning phase, where almost all
    the time goes); alternating blocks cancel out slow drifts in machine load.
    """
    data = load_dataset(spec.dataset, size=spec.image_size, channels=spec.recipe.channels, seed=0)
    model = build_model(spec, len(data.classes))
    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(model, spec, data, Path(out))
        trainer.epoch = trainer.phases[0].epochs  # the first fine-tuning epoch
        trainer._enter_phase()
        bare_opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad])
        mean, std = input_stats(spec)
        x = normalize(torch.from_numpy(data.train.images), mean, std)
        y = torch.from_numpy(data.train.labels)
        gen = torch.Generator().manual_seed(0)
        loss_fn = torch.nn.CrossEntropyLoss()
        batch = spec.recipe.batch_size
        times: dict[str, list[float]] = {"trainer": [], "minimal": []}
        for r in range(rounds):
            idx = torch.randperm(len(y), generator=gen)[: steps * batch].view(steps, batch)
            t0 = time.perf_counter()
            for i in idx:
                trainer._step(trainer.train_x[i], trainer.train_y[i], gen)
            t1 = time.perf_counter()
            for i in idx:
                loss = loss_fn(model(x[i]), y[i])
                bare_opt.zero_grad()
                loss.backward()
                bare_opt.step()
            t2 = time.perf_counter()
            if r:  # the first round warms up both
                times["trainer"].append(t1 - t0)
                times["minimal"].append(t2 - t1)
    rate = {k: steps * batch / float(np.median(v)) for k, v in times.items()}
    return {
        "trainer_images_per_s": rate["trainer"],
        "minimal_images_per_s": rate["minimal"],
        "ratio": rate["trainer"] / rate["minimal"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--skip-minimal", action="store_true")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON here")
    parser.add_argument(
        "--interleaved-only", action="store_true", help="only the alternating per-step comparison"
    )
    parser.add_argument(
        "--recipe", type=json.loads, default={}, help="JSON recipe settings over the default's"
    )
    args = parser.parse_args()
    torch.manual_seed(0)
    np.random.seed(0)
    spec = default_spec(args.data, args.recipe)
    threads = torch.get_num_threads()
    print(f"torch {torch.__version__}, {threads} threads, image_size {spec.image_size}")
    if args.interleaved_only:
        print("interleaved", json.dumps(bench_interleaved(spec)), flush=True)
        return
    results = {"trainer": bench_trainer(spec)}
    print("trainer", json.dumps(results["trainer"]), flush=True)
    if not args.skip_minimal:
        results["minimal_loop"] = bench_minimal(spec)
        print("minimal", json.dumps(results["minimal_loop"]), flush=True)
        ratio = (
            results["trainer"]["train_images_per_s"] / results["minimal_loop"]["train_images_per_s"]
        )
        results["throughput_ratio"] = ratio
        print(f"throughput ratio trainer/minimal: {ratio:.3f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
