"""The model cache: loaded versions kept by (name, version), least recently used out first.

A load happens once per key at a time (other requests for it wait up to
`model_load_wait_s`, then get a 503 with Retry-After). A version that fails to load (its ONNX
bytes fail the card's sha256: `ArtifactCorrupt`, or onnxruntime refuses the graph) is not
fetched again until its card changes or a doubling back-off (at most `MAX_RETRY_DELAY_S`)
has passed, so a corrupt target is not re-downloaded on every poll. A version's all-core
"solo" session is built in the background once it serves on its single-threaded ones.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from models.card import ModelCard
from service import cores
from service.config import InferenceSettings
from service.errors import ServiceError, ServiceUnavailable
from service.inference import metrics, prediction_mix, sessions
from service.inference.loaded import LoadedModel, open_model
from service.registry import Registry

log = logging.getLogger("scantune.inference.models")

Key = tuple[str, int]
MAX_RETRY_DELAY_S = 300.0


class ModelNotReady(ServiceUnavailable):
    title = "Model not ready"


@dataclass
class LoadFailure:
    """A failed load, kept so the same artifact is not fetched again and again.

    Its error is raised again until `retry_at`; from `recheck_at` on the card is re-read (at
    most once per poll interval) and a changed card, a re-publish, is retried at once.
    """

    error: ServiceError
    card: ModelCard | None
    attempts: int
    retry_at: float
    recheck_at: float


class ModelCache:
    """Loads and keeps model versions (LRU); knows nothing of aliases or HTTP."""

    def __init__(
        self,
        registry: Registry,
        settings: InferenceSettings,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.registry = registry
        self.settings = settings
        self._clock = clock
        self._models: OrderedDict[Key, LoadedModel] = OrderedDict()
        self._failures: dict[Key, LoadFailure] = {}
        self._key_locks: dict[Key, threading.Lock] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._solo_builds: list[threading.Thread] = []  # under _lock; none start once stopping

    def cached(self, name: str, version: int) -> LoadedModel | None:
        with self._lock:
            model = self._models.get((name, version))
            if model is not None:
                self._models.move_to_end((name, version))
            return model

    def loaded(self) -> list[LoadedModel]:
        with self._lock:
            return list(self._models.values())

    def load(self, name: str, version: int) -> LoadedModel:
        """Load `version` unless cached; waits briefly for a load already in progress."""
        key = (name, version)
        with self._loading(key):
            model = self.cached(name, version)
            if model is not None:
                return model
            self._raise_known_failure(key)
            model = self._open(key)
            self._insert(key, model)  # before the lock goes: a waiter must find it cached
        return model

    def close(self, deadline: float) -> None:
        """Start no more solo builds, join those running until `deadline` (monotonic), then
        close every model. A process exiting while onnxruntime builds a session aborts
        ("terminate called without an active exception")."""
        with self._lock:
            self._stopping.set()
            builds = list(self._solo_builds)  # complete: _build_solo starts none from now on
        for thread in builds:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        with self._lock:
            models = list(self._models.values())
            self._models.clear()
        for model in models:
            model.close()
            metrics.LOADED_MODELS.dec()

    @contextmanager
    def _loading(self, key: Key) -> Iterator[None]:
        with self._lock:
            lock = self._key_locks.setdefault(key, threading.Lock())
        if not lock.acquire(timeout=self.settings.model_load_wait_s):
            retry = max(1, round(self.settings.model_load_wait_s) or 1)
            raise ModelNotReady(
                f"model '{key[0]}' version {key[1]} is loading; retry shortly",
                headers={"Retry-After": str(retry)},
            )
        try:
            yield
        finally:
            lock.release()

    def _raise_known_failure(self, key: Key) -> None:
        """Fail fast with a failed load's error until its retry is due or its card changes."""
        failure = self._failures.get(key)
        if failure is None:
            return
        now = self._clock()
        if now >= failure.retry_at:
            return
        if now >= failure.recheck_at:
            failure.recheck_at = now + self.settings.alias_poll_interval_s
            if self._current_card(key) != failure.card:
                return
        raise failure.error

    def _current_card(self, key: Key) -> ModelCard | None:
        try:
            return self.registry.get_card(*key)
        except Exception:  # unreadable now: the retry reports why
            return None

    def _open(self, key: Key) -> LoadedModel:
        name, version = key
        per_core = cores.active()
        started = time.perf_counter()
        try:
            artifact = self.registry.load(name, version)
            card = artifact.card.with_version(version)
            model = open_model(card, artifact.onnx, self.settings, per_core=per_core)
        except ServiceError as exc:
            self._record_failure(key, exc, type(exc).__name__)
            raise
        except Exception as exc:  # onnxruntime refuses the graph: report, don't crash
            err = ServiceUnavailable(f"model '{name}' version {version} cannot be opened: {exc}")
            self._record_failure(key, err, type(exc).__name__)
            raise err from exc
        model.load_seconds = time.perf_counter() - started
        metrics.LOAD_SECONDS.labels(name).observe(model.load_seconds)
        prediction_mix.loaded(name, version, card)
        log.info("loaded model=%s version=%s seconds=%.3f", name, version, model.load_seconds)
        threads = sessions.all_core_threads(self.settings)
        if (per_core or len(model.sessions) > 1) and threads > 1:  # runners: single-threaded
            self._build_solo(model, artifact.onnx, threads)  # ready now; the all-core one follows
        return model

    def _build_solo(self, model: LoadedModel, onnx: bytes, threads: int) -> None:
        """Build `model`'s all-core session in a thread that `close` joins; none once stopping."""
        thread = threading.Thread(
            target=self._attach_solo,
            args=(model, onnx, threads),
            name=f"solo-{model.name}-{model.version}",
            daemon=True,
        )
        with self._lock:
            if self._stopping.is_set():
                return
            self._solo_builds = [t for t in self._solo_builds if t.is_alive()] + [thread]
            thread.start()

    def _attach_solo(self, model: LoadedModel, onnx: bytes, threads: int) -> None:
        try:
            solo = sessions.create_session(onnx, self.settings, threads)
            sessions.warm_up(solo, model.card)
        except Exception as exc:  # the runners keep serving; only low-load latency suffers
            log.warning("model=%s all-core session not created: %s", model.name, exc)
            return
        if self._stopping.is_set():
            return  # stopped while building: the model is being closed
        model.solo = solo
        model.batcher.set_solo(model.runner(solo))

    def _record_failure(self, key: Key, exc: ServiceError, reason: str) -> None:
        """Keep a failure with the card it was loaded under; retries back off while it holds.

        The card is read only here, on failure: a successful load costs no extra read.
        """
        if exc.status < 500:
            return  # unknown model/version: nothing failed to load
        card = self._current_card(key)
        previous = self._failures.get(key)
        attempts = previous.attempts + 1 if previous and previous.card == card else 1
        interval = self.settings.alias_poll_interval_s
        delay = min(interval * 2 ** min(attempts, 16), max(interval, MAX_RETRY_DELAY_S))
        now = self._clock()
        self._failures[key] = LoadFailure(exc, card, attempts, now + delay, now + interval)
        metrics.LOAD_FAILURES.labels(key[0], reason).inc()
        log.error(
            "model=%s version=%s load failed (retry in %.0f s, or once re-published): %s",
            key[0], key[1], delay, exc.detail,
        )  # fmt: skip

    def _insert(self, key: Key, model: LoadedModel) -> None:
        with self._lock:
            self._models[key] = model
            self._failures.pop(key, None)
            evicted = []
            while len(self._models) > self.settings.cache_size:
                evicted.append(self._models.popitem(last=False)[1])
        metrics.LOADED_MODELS.inc()
        for old in evicted:
            old.close()  # queued requests still run; later ones reload it
            metrics.LOADED_MODELS.dec()
