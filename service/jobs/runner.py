"""The job runner: `python -m service.jobs.runner JOB_ID`, in a local subprocess or a k8s pod.

It trains through `models.runner.run_training` (the same code as `scantune train`), reports
progress and heartbeats into the job row, stops when the job is cancelled or taken from it,
or on SIGINT (its service stopping; in a pod also SIGTERM, the pod's end) queues the job to
resume from its last checkpoint, then allocates the version, publishes it (card last),
records success, applies the promotion gate and sends the webhook. Tracebacks go to this
process's output (the job log); the job row gets a reason and one line.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import threading
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from models.card import CARD_FILE, ONNX_FILE, ModelCard
from models.spec import JobSpec
from service.config import TrainingSettings
from service.errors import ServiceError
from service.jobs.checkpoints import CheckpointSync
from service.jobs.failures import OwnershipLost, PublishFailed, failure_reason, short_detail
from service.jobs.guard import JobGuard
from service.jobs.promotion import apply_gate
from service.jobs.state import IllegalTransition, Phase, Status, phase_for
from service.jobs.stops import StopRequested, StopSignals, job_created_at
from service.jobs.store import JobStore, utcnow
from service.jobs.tenancy import card_access
from service.jobs.webhook import send_job_webhook
from service.logs import configure_logging
from service.registry import Registry
from service.storage import ArtifactStore, open_store

if TYPE_CHECKING:
    from models.progress import ProgressEvent

log = logging.getLogger("scantune.runner")

RUN_DIR = "run"
EXIT_OK, EXIT_FAILED, EXIT_LOST = 0, 1, 3
PROGRESS_WRITE_S = 0.5


class JobRunner:
    def __init__(
        self,
        settings: TrainingSettings,
        job_id: str,
        *,
        store: JobStore | None = None,
        artifacts: ArtifactStore | None = None,
    ) -> None:
        self.settings, self.job_id = settings, job_id
        self.store = store or JobStore.open(settings.database_url, run_migrations=False)
        self.artifacts = artifacts or open_store(
            settings.artifact_uri, endpoint_url=settings.s3_endpoint_url, region=settings.s3_region
        )
        self.registry = Registry(self.artifacts)
        self.guard = JobGuard(settings, self.store, job_id)
        self.attempt = 0
        self._lost = threading.Event()
        self._stop_heartbeat = threading.Event()
        self._last_poll = 0.0
        self._last_write = 0.0
        self._last_phase: str | None = None
        self._history: list[dict[str, Any]] = []
        self._best: dict[str, Any] | None = None
        self._sync: CheckpointSync | None = None
        self._monitor = "val_auc"
        self.stops = StopSignals(settings.k8s_active_deadline_s, job_created_at())

    # the whole run
    def run(self) -> int:
        job = self.store.get(self.job_id)
        if job.status != Status.RUNNING:
            log.info("job %s is %s; nothing to run", self.job_id, job.status)
            return EXIT_OK
        self.attempt = job.attempts
        self._history, self._best = list(job.history or []), job.best_metrics
        try:
            spec = JobSpec.model_validate(job.spec)
        except ValidationError as exc:  # stored by an older version with another schema
            self._finish_failed("invalid_spec", short_detail(exc))
            return EXIT_FAILED
        self._monitor = spec.recipe.monitor
        out_dir = Path(self.settings.work_dir) / self.job_id / RUN_DIR
        beat = threading.Thread(target=self._heartbeat, name="heartbeat", daemon=True)
        beat.start()
        try:
            return self._run(spec, out_dir)
        except StopRequested:
            return self._out_of_time() if self.stops.deadline_reached else self._queue_to_resume()
        finally:
            self._stop_heartbeat.set()
            beat.join(timeout=5)

    def _run(self, spec: JobSpec, out_dir: Path) -> int:
        try:
            self.guard.check(spec)  # the API's checks again, before reading anything
            card = self._train(spec, out_dir)
            self._check_owned()
            card = self._publish(spec, out_dir, card)
        except OwnershipLost as exc:
            return self._lost_ownership(str(exc))
        except Exception as exc:
            if type(exc).__name__ == "TrainingCancelled" or self._lost.is_set():
                return self._lost_ownership(short_detail(exc))
            log.error("job %s failed:\n%s", self.job_id, traceback.format_exc())
            self._finish_failed(failure_reason(exc), short_detail(exc))
            return EXIT_FAILED
        self._finish_succeeded(spec, out_dir, card)
        return EXIT_OK

    def _train(self, spec: JobSpec, out_dir: Path) -> ModelCard:
        from models.runner import run_training  # torch: only in the runner process

        out_dir.mkdir(parents=True, exist_ok=True)
        if self.settings.launcher == "kubernetes":
            self._sync = CheckpointSync(self.artifacts, self.job_id, out_dir)
            restored = self._sync.restore()
            log.info("restored %d checkpoint file(s) from the artifact store", restored)
        resume = (out_dir / "checkpoints" / "last.pt").is_file()
        log.info(
            "job %s attempt %d: %s", self.job_id, self.attempt, "resuming" if resume else "starting"
        )
        self._write(phase=Phase.PREPARING_DATA.value)
        result = run_training(
            spec,
            out_dir,
            progress=self._on_progress,
            resume=resume,
            should_stop=self._should_stop,
            weights_uri=self._default_weights(spec),
            # Per job: two jobs downloading the same object into one cache would collide.
            cache_dir=out_dir.parent / "cache",
            s3_endpoint_url=self.settings.s3_endpoint_url,
        )
        return result.card

    def _default_weights(self, spec: JobSpec) -> str | None:
        if spec.weights_uri or self.settings.weights_dir is None:
            return None
        path = Path(self.settings.weights_dir) / f"{spec.base_model}.pth"
        return str(path) if path.is_file() else None

    # publishing
    def _publish(self, spec: JobSpec, out_dir: Path, card: ModelCard) -> ModelCard:
        try:
            version = self.store.allocate_version(self.job_id, self.attempt)
        except IllegalTransition as exc:
            raise OwnershipLost(str(exc)) from exc
        log.info("publishing %s version %d", spec.model_name, version)
        lineage = {**card.lineage, "job_id": self.job_id}
        access = card_access(spec, self.guard.client, self.settings)
        card = card.model_copy(
            update={"name": spec.model_name, "lineage": lineage, "access": access}
        )
        try:
            return self._publish_version(spec.model_name, version, out_dir, card)
        except Exception as exc:
            self.store.release_version(self.job_id)
            raise PublishFailed(short_detail(exc)) from exc

    def _publish_version(
        self, name: str, version: int, out_dir: Path, card: ModelCard
    ) -> ModelCard:
        if version in self.registry.list_versions(name):  # an earlier attempt got this far
            existing = self.registry.get_card(name, version)
            if existing.lineage.get("job_id") == self.job_id:
                return existing
        return self.registry.publish(name, version, out_dir, card)

    def _finish_succeeded(self, spec: JobSpec, out_dir: Path, card: ModelCard) -> None:
        assert card.version is not None
        uris = self.registry.artifact_uris(card.name, card.version)
        artifacts = {
            "version": card.version,
            "card_uri": uris.get(CARD_FILE),
            "onnx_uri": uris.get(ONNX_FILE),
            "onnx_sha256": card.onnx_sha256,
            "uris": uris,
        }
        # Decided before the job reads succeeded, so a client that sees success sees the gate.
        promotion = self._promote(spec, card) if spec.promote is not None else None
        try:
            self.store.transition(
                self.job_id,
                Status.SUCCEEDED,
                expected=[Status.RUNNING],
                attempt=self.attempt,
                progress=1.0,
                metrics=_numbers(card.metrics),
                artifacts=artifacts,
                promotion=promotion,
                heartbeat_at=utcnow(),
            )
        except IllegalTransition as exc:  # cannot happen once publishing began, but be sure
            log.error("published version %d but could not mark success: %s", card.version, exc)
            return
        log.info("job %s succeeded: %s version %d", self.job_id, card.name, card.version)
        target = f"model/{card.name}/versions/{card.version}"
        self.guard.record("model_published", target, "published")
        self.guard.record("job_finished", f"job/{self.job_id}", "succeeded")
        self._stop_heartbeat.set()
        self._cleanup(out_dir)
        send_job_webhook(self.store, self.job_id, self.settings)

    def _promote(self, spec: JobSpec, card: ModelCard) -> dict[str, Any]:
        assert spec.promote is not None
        try:
            decision = apply_gate(
                self.registry,
                spec.promote,
                card,
                monitor=spec.recipe.monitor,
                actor=f"{self.guard.client} (job {self.job_id})",
            )
            if decision["passed"]:
                target = f"model/{card.name}/aliases/{spec.promote.alias}"
                self.guard.record("alias_moved", target, "moved", version=card.version)
        except (ServiceError, ValueError, OSError) as exc:
            decision = {
                "alias": spec.promote.alias,
                "passed": False,
                "reason": f"promotion could not be applied: {short_detail(exc)}",
                "figures": {},
            }
        log.info("promotion to %s: %s", spec.promote.alias, decision["reason"])
        return decision

    def _cleanup(self, out_dir: Path) -> None:
        shutil.rmtree(out_dir / "checkpoints", ignore_errors=True)
        shutil.rmtree(out_dir.parent / "cache", ignore_errors=True)
        if self._sync is not None:
            try:
                self._sync.discard()
            except Exception:
                log.warning("could not delete stored checkpoints of job %s", self.job_id)

    # failure, cancellation, loss
    def _finish_failed(self, reason: str, detail: str) -> None:
        try:
            self.store.transition(
                self.job_id,
                Status.FAILED,
                expected=[Status.RUNNING],
                attempt=self.attempt,
                error_reason=reason,
                error_detail=detail,
            )
        except IllegalTransition as exc:
            log.warning("could not record the failure: %s", exc)
            return
        self.guard.record("job_finished", f"job/{self.job_id}", "failed", reason=reason)
        send_job_webhook(self.store, self.job_id, self.settings)

    def _lost_ownership(self, why: str) -> int:
        job = self.store.get(self.job_id)
        log.info(
            "job %s stopped (%s); it is now %s, attempt %d",
            self.job_id,
            why,
            job.status,
            job.attempts,
        )
        if job.status == Status.CANCELLED:
            send_job_webhook(self.store, self.job_id, self.settings)
            return EXIT_OK
        return EXIT_LOST

    def _out_of_time(self) -> int:
        limit = self.settings.k8s_active_deadline_s
        log.info("job %s reached its time limit (%ds)", self.job_id, limit)
        self._finish_failed(
            "deadline_exceeded",
            f"the attempt ran into its time limit (SCANTUNE_K8S_ACTIVE_DEADLINE_S={limit}s)",
        )
        return EXIT_FAILED

    def _queue_to_resume(self) -> int:
        try:
            self.store.pause(self.job_id, self.attempt)
        except IllegalTransition:
            return self._lost_ownership("interrupted")
        log.info("job %s interrupted; queued to resume from its last checkpoint", self.job_id)
        return EXIT_OK

    def _check_owned(self) -> None:
        if self._lost.is_set() or not self._owned():
            raise OwnershipLost("the job is no longer this runner's")

    def _owned(self) -> bool:
        job = self.store.get(self.job_id)
        return job.status == Status.RUNNING and job.attempts == self.attempt

    # callbacks from the trainer and the heartbeat thread
    def _should_stop(self) -> bool:
        if self._lost.is_set():
            return True
        now = time.monotonic()
        if now - self._last_poll >= min(1.0, self.settings.heartbeat_interval_s):
            self._last_poll = now
            if not self._owned():
                self._lost.set()
        return self._lost.is_set()

    def _heartbeat(self) -> None:
        while not self._stop_heartbeat.wait(self.settings.heartbeat_interval_s):
            try:
                if not self.store.heartbeat(self.job_id, self.attempt):
                    self._lost.set()
                    return
            except Exception:
                log.warning("heartbeat failed; retrying", exc_info=True)

    def _on_progress(self, event: ProgressEvent) -> None:
        data = event.to_dict()
        phase = phase_for(data.get("phase"))
        values: dict[str, Any] = {"progress": min(float(data.get("fraction") or 0.0), 0.99)}
        if data.get("epoch") is not None:
            values["epoch"] = data["epoch"]
        for key in ("epochs", "step", "steps"):
            if data.get(key) is not None:
                values[key] = data[key]
        metrics = _numbers(data.get("metrics") or {})
        epoch_done = bool(metrics) and data.get("epoch") is not None
        if metrics:
            values["metrics"] = metrics
        if epoch_done:
            values |= self._record_epoch(int(data["epoch"]), data.get("loss"), metrics)
            log.info("epoch %s/%s %s", data["epoch"], data.get("epochs"), _fmt(metrics))
        changed = phase is not None and phase.value != self._last_phase
        if changed or epoch_done or time.monotonic() - self._last_write >= PROGRESS_WRITE_S:
            if phase is not None:
                values["phase"] = self._last_phase = phase.value
            self._write(**values)
        if epoch_done and self._sync is not None:
            # After the row has the epoch's history: a stored checkpoint never runs ahead of it.
            self._sync.push()

    def _record_epoch(self, epoch: int, loss: Any, metrics: dict[str, float]) -> dict[str, Any]:
        entry: dict[str, Any] = {"epoch": epoch, **metrics}
        if isinstance(loss, int | float):
            entry["train_loss"] = float(loss)
        self._history = [h for h in self._history if h.get("epoch") != epoch] + [entry]
        self._history.sort(key=lambda h: int(h.get("epoch", 0)))
        monitor = self._monitor
        value = metrics.get(monitor)
        best = (self._best or {}).get(monitor)
        lower = monitor.endswith("loss")
        if value is not None and (best is None or (value < best if lower else value > best)):
            self._best = {"epoch": epoch, **metrics}
        return {"history": self._history, "best_metrics": self._best}

    def _write(self, **values: Any) -> None:
        self._last_write = time.monotonic()
        values["heartbeat_at"] = utcnow()
        if not self.store.update_running(self.job_id, self.attempt, **values):
            self._lost.set()


def _numbers(metrics: dict[str, Any]) -> dict[str, float]:
    """The JSON-safe scalar metrics (per-class tables and matrices stay in the card)."""
    out = {}
    for key, value in metrics.items():
        if isinstance(value, int | float) and not isinstance(value, bool) and value == value:
            out[key] = float(value)
    return out


def _fmt(metrics: dict[str, float]) -> str:
    return " ".join(f"{k}={v:.4f}" for k, v in sorted(metrics.items()))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m service.jobs.runner", description=__doc__)
    parser.add_argument("job_id")
    args = parser.parse_args(argv)
    settings = TrainingSettings()
    configure_logging(settings, stream=sys.stdout)
    runner = JobRunner(settings, args.job_id)
    runner.stops.install(settings.launcher)
    try:
        return runner.run()
    finally:
        runner.store.close()


if __name__ == "__main__":
    sys.exit(main())
