"""A candidate version in shadow: it sees the scans the serving version answers, and only
the metrics see what it says.

Before a CI pipeline moves `production` to a new version, its owner points the model's
`shadow` alias at it (`SCANTUNE_SHADOW_ALIAS`; the existing alias API and CLI). From then on,
each v1 answer of another version of that model is followed, after the answer has gone, by
the shadow version classifying the same scans in a background thread: how often the two
agree (`scantune_inference_shadow_scans_total{agreed}`) and the classes the shadow answers
(`prediction_mix`) show how it would do on this site's traffic, with no client seeing it.

It costs a second inference per shadowed request, so it is bounded: at most `PENDING`
comparisons wait per process, others are skipped and counted (`busy`); a shadow version that
is withdrawn, cannot be loaded, or has other classes is skipped and counted too. Nothing of a
scan is recorded: a model, two versions, a class, agreed or not.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from service.errors import NotFound
from service.inference import metrics, prediction_mix
from service.inference.predictor import calibrated, predicted_index, prepare_all

if TYPE_CHECKING:
    from service.inference.loaded import LoadedModel
    from service.inference.manager import ModelManager
    from service.inference.uploads import Upload
    from service.withdrawals import Withdrawals

log = logging.getLogger("scantune.inference.shadow")
PENDING = 4  # comparisons waiting per process at most; a busier service skips the rest


class Shadows:
    def __init__(
        self, manager: ModelManager, withdrawals: Withdrawals, pending: int = PENDING
    ) -> None:
        self.manager, self.withdrawals = manager, withdrawals
        self.alias = manager.settings.shadow_alias
        self.recheck_s = manager.settings.alias_poll_interval_s
        self._known: dict[str, tuple[int | None, float]] = {}  # name -> (version, read at)
        self._reading: set[str] = set()
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(pending) if pending else None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="shadow")

    def follow(
        self, model: LoadedModel, uploads: Sequence[Upload], predictions: Sequence[dict[str, Any]]
    ) -> None:
        """After `model` answered `predictions` for `uploads`: have the model's shadow version
        classify them too, in the background, where there is one other than `model`."""
        version = self.version_of(model.name)
        if version is None or version == model.version:
            return
        if self._slots is None or not self._slots.acquire(blocking=False):
            metrics.SHADOW_SKIPPED.labels(model.name, "busy").inc()
            return
        answered = [p["label"] for p in predictions]
        self._pool.submit(self._compare, model, version, list(uploads), answered)

    def version_of(self, name: str) -> int | None:
        """The version the model's shadow alias names, as last read (None: none); read again
        in the background every `alias_poll_interval_s`, so a request never waits on it."""
        if not self.alias:
            return None
        with self._lock:
            version, read_at = self._known.get(name, (None, float("-inf")))
            stale = time.monotonic() - read_at > self.recheck_s and name not in self._reading
            if stale:
                self._reading.add(name)
        if stale:
            self._pool.submit(self._read, name)
        return version

    def drain(self, timeout_s: float = 60.0) -> None:
        """Wait for what was asked before now (reads and comparisons run in order)."""
        self._pool.submit(lambda: None).result(timeout=timeout_s)

    def stop(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _read(self, name: str) -> None:
        try:
            version: int | None = self.manager.registry.get_alias(name, str(self.alias)).version
        except NotFound:
            version = None
        except Exception as exc:  # the store away: keep what was known, try again later
            log.warning("shadow alias of %s not read: %s", name, type(exc).__name__)
            with self._lock:
                self._reading.discard(name)
            return
        with self._lock:
            self._known[name] = (version, time.monotonic())
            self._reading.discard(name)

    def _compare(
        self, model: LoadedModel, version: int, uploads: list[Upload], answered: list[str]
    ) -> None:
        try:
            if self.withdrawals.current(model.name, version) is not None:
                metrics.SHADOW_SKIPPED.labels(model.name, "withdrawn").inc()
                return
            shadow = self.manager.get(model.name, version=version)
            if shadow.card.classes != model.card.classes:
                metrics.SHADOW_SKIPPED.labels(model.name, "other_classes").inc()
                return
            limit = self.manager.settings.max_request_megapixels
            batch, _, _ = prepare_all(uploads, shadow.card.input, limit)
            probabilities = calibrated(shadow.card, shadow.batcher.run(batch))
            said = [
                {
                    "label": shadow.card.classes[predicted_index(shadow.card, p)],
                    "probabilities": dict(zip(shadow.card.classes, map(float, p), strict=True)),
                }
                for p in probabilities
            ]
            prediction_mix.answered(model.name, version, said)
            counted = metrics.SHADOW_SCANS
            for ours, theirs in zip(answered, said, strict=True):
                agreed = "true" if ours == theirs["label"] else "false"
                counted.labels(model.name, str(model.version), str(version), agreed).inc()
        except Exception as exc:  # never the client's problem: counted and logged, no scan data
            metrics.SHADOW_SKIPPED.labels(model.name, "failed").inc()
            log.warning("shadow v%d of %s failed: %s", version, model.name, type(exc).__name__)
        finally:
            if self._slots is not None:
                self._slots.release()
