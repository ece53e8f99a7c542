"""How `scantune jobs submit --wait` and `scantune jobs watch` show a job's progress.

On a terminal: one live rich progress bar (phase, epoch, the last finished epoch's metrics).
Otherwise (CI logs, pipes): a plain line only when something a reader cares about changes -
the status, the phase, a finished epoch - never the same line again on every poll.
"""

from __future__ import annotations

import sys
from typing import Any, Protocol, TextIO

SHOWN = ("val_auc", "val_accuracy", "val_loss", "train_loss")


class Display(Protocol):
    def update(self, job: dict[str, Any]) -> None: ...
    def close(self) -> None: ...


def make_display(stream: TextIO | None = None) -> Display:
    out = stream or sys.stdout
    return RichDisplay(out) if out.isatty() else PlainDisplay(out)


def finished_epoch(job: dict[str, Any]) -> str:
    """'epoch 2: val_auc=0.9312 ...' for the last finished epoch (the one the metrics are of;
    `job.epoch` is the one under way)."""
    history = job.get("history") or []
    if not history:
        return ""
    last = history[-1]
    figures = " ".join(f"{k}={last[k]:.4f}" for k in SHOWN if isinstance(last.get(k), int | float))
    return f"epoch {last['epoch']}: {figures}"


def position(job: dict[str, Any], steps: bool = False) -> str:
    """'running training epoch 3/6' - where the job is, without the percentage; with `steps`,
    the step inside the epoch too (the live bar's, not a log line's: it moves every poll)."""
    parts = [job["status"]]
    running = job["status"] == "running"
    if running and job.get("phase"):
        parts.append(job["phase"])
    if job.get("epoch") is not None and job.get("epochs") and running:
        parts.append(f"epoch {job['epoch']}/{job['epochs']}")
        if steps and job.get("phase") == "training" and job.get("step") and job.get("steps"):
            parts.append(f"step {job['step']}/{job['steps']}")
    return " ".join(parts)


def best_epoch_line(job: dict[str, Any]) -> str | None:
    """Which epoch the published model is from, and its figures: the run keeps the best
    epoch by the monitored metric, not the last."""
    best = job.get("best_metrics") or {}
    if "epoch" not in best:
        return None
    monitor = ((job.get("spec") or {}).get("recipe") or {}).get("monitor") or "val_auc"
    ran = len(job.get("history") or []) or job.get("epochs")
    figures = " ".join(f"{k}={best[k]:.4f}" for k in SHOWN if isinstance(best.get(k), int | float))
    return (
        f"published model: the best epoch, {best['epoch']} of {ran} by {monitor}: {figures}"
    ).rstrip()


class PlainDisplay:
    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.last: tuple[str, str] | None = None

    def update(self, job: dict[str, Any]) -> None:
        key = (position(job), finished_epoch(job))
        if key == self.last:
            return
        self.last = key
        pct = f"{100 * (job.get('progress') or 0):.0f}%"
        line = " · ".join(p for p in (position(job), pct, key[1]) if p)
        print(line, file=self.out, flush=True)

    def close(self) -> None:
        pass


class RichDisplay:
    def __init__(self, out: TextIO) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn

        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[metrics]}"),
            console=Console(file=out),
        )
        self.task = self.progress.add_task("queued", total=100, metrics="")
        self.progress.start()

    def update(self, job: dict[str, Any]) -> None:
        self.progress.update(
            self.task,
            description=position(job, steps=True),
            completed=100 * (job.get("progress") or 0),
            metrics=finished_epoch(job),
        )

    def close(self) -> None:
        self.progress.stop()
