"""`scantune train --config job.yaml --out DIR [--resume]`: the whole pipeline, locally."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported where used: `scantune serve` must start without pydantic
    from pydantic import ValidationError


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("train", help="fine-tune, evaluate and export a model locally")
    parser.add_argument("--config", type=Path, required=True, help="job spec (YAML or JSON)")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    parser.add_argument("--weights", help="default pretrained weights file or s3:// URI")
    parser.set_defaults(func=run_train)


def load_spec(path: Path) -> Any:
    import yaml

    from models.spec import JobSpec

    return JobSpec.model_validate(yaml.safe_load(path.read_text()))


def run_train(args: argparse.Namespace) -> int:
    import yaml
    from pydantic import ValidationError

    from models.backbones import WeightsError
    from models.data import DataError
    from models.export import ExportError
    from models.progress import TrainingCancelled
    from models.runner import run_training

    try:
        spec = load_spec(args.config).with_absolute_paths()
        with _ProgressBar() as bar:
            result = run_training(
                spec, args.out, progress=bar, resume=args.resume, weights_uri=args.weights
            )
    except ValidationError as exc:
        return _fail(f"invalid job spec {args.config}: {_first_errors(exc)}")
    except (OSError, yaml.YAMLError) as exc:
        return _fail(f"cannot read {args.config}: {exc}")
    except DataError as exc:
        return _fail(f"{len(exc.problems)} problem(s) with the dataset: " + "; ".join(exc.problems))
    except (WeightsError, ExportError, TrainingCancelled, ValueError) as exc:
        return _fail(str(exc))
    print(summary_table(result.metrics, result.card), file=sys.stdout)
    return 0


def _fail(message: str) -> int:
    print(f"scantune train: error: {message}", file=sys.stderr)
    return 2


def _first_errors(exc: ValidationError) -> str:
    parts = [
        f"{'.'.join(str(p) for p in e['loc']) or 'the file'}: {e['msg']}" for e in exc.errors()[:5]
    ]
    return "; ".join(parts)


def summary_table(metrics: dict[str, Any], card: Any) -> str:
    rows = [(k, metrics[k]) for k in _SUMMARY_KEYS if k in metrics]
    if card.threshold is not None:
        rows.append((f"threshold P({card.threshold.positive_class})", card.threshold.value))
    rows += [
        ("parity max abs diff", card.parity.max_abs_diff),
        ("training seconds", card.training.seconds),
    ]
    width = max(len(k) for k, _ in rows)
    lines = [f"{k:<{width}}  {_fmt(v)}" for k, v in rows]
    return "\n".join([f"{card.name} ({card.base_model}, {card.input.size}px)", *lines])


_SUMMARY_KEYS = (
    "val_accuracy",
    "val_balanced_accuracy",
    "val_auc",
    "val_ece",
    "val_ece_calibrated",
    "temperature",
    "best_epoch",
    "epochs_run",
)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


class _ProgressBar:
    """A tqdm bar over the job's fraction; epoch metrics go into its postfix."""

    def __enter__(self) -> _ProgressBar:
        from tqdm import tqdm

        self.bar = tqdm(
            leave=False,
            total=1000,
            unit="‰",
            file=sys.stderr,
            bar_format="{l_bar}{bar}| {elapsed}<{remaining} {postfix}",
        )
        return self

    def __call__(self, event: Any) -> None:
        target = int(event.fraction * 1000)
        self.bar.update(max(0, target - self.bar.n))
        desc = event.phase if event.epoch is None else f"{event.phase} {event.epoch}/{event.epochs}"
        self.bar.set_description(desc, refresh=False)
        if event.loss is not None:
            postfix = {"loss": f"{event.loss:.3f}"}
            postfix |= {
                k: f"{v:.3f}" for k, v in event.metrics.items() if k in ("val_auc", "val_accuracy")
            }
            self.bar.set_postfix(postfix, refresh=False)
        if event.phase == "training" and event.metrics:
            figures = "  ".join(f"{k} {v:.4f}" for k, v in event.metrics.items())
            self.bar.write(f"epoch {event.epoch}/{event.epochs}  loss {event.loss:.4f}  {figures}")

    def __exit__(self, *exc: object) -> None:
        self.bar.close()
