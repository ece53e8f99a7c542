"""Loaded models: onnxruntime sessions cached by (name, version), aliases followed by polling.

Requests ask for a name and a version or alias; aliases resolve through a map that a poller
refreshes every `alias_poll_interval_s`. A promoted version is loaded in the background and
only then swapped into the map, so requests never wait for it; requests already holding the
previous version finish on it. A version whose ONNX bytes fail the card's sha256 is refused
(`ArtifactCorrupt`) and the alias keeps pointing at the version that was serving; a failed
version is not fetched again until its card changes or a doubling backoff (at most
`MAX_RETRY_DELAY_S`) has passed, so a corrupt target is not re-downloaded on every poll.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from models.card import ModelCard
from service import cores
from service.config import InferenceSettings
from service.errors import ServiceError, ServiceUnavailable
from service.inference import metrics
from service.inference.batcher import MicroBatcher, Outputs
from service.registry import Registry

if TYPE_CHECKING:
    import onnxruntime

log = logging.getLogger("scantune.inference.models")

Key = tuple[str, int]
MAX_RETRY_DELAY_S = 300.0
STOP_WAIT_S = 10.0


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


@dataclass(eq=False)
class LoadedModel:
    """One model version ready to run: its card, onnxruntime sessions and micro-batcher.

    `sessions` are the batcher's lanes; `solo`, when set, is the all-core session a lone
    request runs on. A run of more than `arena_keep` images gives the memory it took from
    onnxruntime's CPU arena back when it ends (None: never, the arena being off): left in
    the arena, one 64-file request would hold its activations, about 15 MB an image at
    224 px, for the worker's lifetime.
    """

    card: ModelCard
    sessions: list[onnxruntime.InferenceSession]
    load_seconds: float
    solo: onnxruntime.InferenceSession | None = None
    arena_keep: int | None = None
    batcher: MicroBatcher = field(init=False)
    output_names: list[str] = field(init=False)
    loaded_at: float = field(default_factory=time.time)

    def __post_init__(self) -> None:
        present = {o.name for o in self.sessions[0].get_outputs()}
        wanted = [self.card.outputs.probabilities, self.card.outputs.logits, self.card.outputs.cam]
        self.output_names = [n for n in wanted if n is not None and n in present]

    @property
    def name(self) -> str:
        return self.card.name

    @property
    def version(self) -> int:
        return int(self.card.version or 0)

    @property
    def sha256(self) -> str:
        return self.card.onnx_sha256

    @property
    def preprocessing_matches(self) -> bool:
        """The model was trained with the decoding and preprocessing this service runs."""
        return self.card.input.preprocessing_version == _preprocessing_version()

    def runner(self, session: onnxruntime.InferenceSession) -> Callable[[np.ndarray], Outputs]:
        """A function running one ready (N, C, H, W) batch on `session`."""
        input_name = self.card.outputs.input
        keep, give_back = self.arena_keep, None
        if keep is not None:
            import onnxruntime as ort

            give_back = ort.RunOptions()
            give_back.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")

        def run(batch: np.ndarray) -> Outputs:
            options = give_back if keep is not None and len(batch) > keep else None
            values = session.run(self.output_names, {input_name: batch}, options)
            return dict(zip(self.output_names, values, strict=True))

        return run

    def close(self) -> None:
        self.batcher.close()


class ModelManager:
    """Finds, loads, caches (LRU) and refreshes models for the views; knows nothing of HTTP."""

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
        self._aliases: dict[tuple[str, str], int] = {}
        self._failures: dict[Key, LoadFailure] = {}
        self._stale_aliases: dict[tuple[str, str], str] = {}  # alias -> last reason logged
        self._key_locks: dict[Key, threading.Lock] = {}
        self._lock = threading.Lock()
        self._pending_preloads = list(settings.preload_models)
        self._preload_errors: dict[str, str] = {}
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._solo_builds: list[threading.Thread] = []  # under _lock; none start once stopping

    # lifecycle
    def start(self) -> None:
        """Preload the configured models, then poll aliases, in background threads."""
        for target, name in ((self._preload_all, "preload"), (self._poll_loop, "alias-poller")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        """Join the background threads (at most `STOP_WAIT_S` in all), then close the models.

        All-core session builds are joined too: a process exiting while onnxruntime builds a
        session aborts ("terminate called without an active exception").
        """
        self._stop.set()
        deadline = time.monotonic() + STOP_WAIT_S
        for thread in self._threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        with self._lock:
            builds = list(self._solo_builds)  # complete: _build_solo starts none from now on
        for thread in builds:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        with self._lock:
            models = list(self._models.values())
            self._models.clear()
        for model in models:
            model.close()
            metrics.LOADED_MODELS.dec()

    def check_ready(self) -> None:
        """Raise while configured preloads are not all loaded (readiness)."""
        if self._preload_errors:
            raise RuntimeError("; ".join(self._preload_errors.values()))
        if self._pending_preloads:
            raise RuntimeError(f"loading {', '.join(self._pending_preloads)}")

    # lookups
    def get(
        self, name: str, *, version: int | None = None, alias: str | None = None
    ) -> LoadedModel:
        """The loaded model a request means (loading it now if needed)."""
        if version is None:
            version = self.resolve_alias(name, alias or self.settings.default_alias)
        model = self.cached(name, version)
        return model if model is not None else self.load(name, version)

    def resolve_alias(self, name: str, alias: str) -> int:
        with self._lock:
            version = self._aliases.get((name, alias))
        if version is None:
            version = self.registry.get_alias(name, alias).version
            with self._lock:
                version = self._aliases.setdefault((name, alias), version)
        return version

    def aliases_of(self, name: str) -> dict[str, int]:
        """The aliases this process follows for `name` and the versions they serve."""
        with self._lock:
            return {a: v for (n, a), v in self._aliases.items() if n == name}

    def cached(self, name: str, version: int) -> LoadedModel | None:
        with self._lock:
            model = self._models.get((name, version))
            if model is not None:
                self._models.move_to_end((name, version))
            return model

    def loaded(self) -> list[LoadedModel]:
        with self._lock:
            return list(self._models.values())

    # loading
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
            sessions = create_lane_sessions(artifact.onnx, self.settings, per_core=per_core)
            warm_up(sessions[0], artifact.card)
        except ServiceError as exc:
            self._record_failure(key, exc, type(exc).__name__)
            raise
        except Exception as exc:  # onnxruntime refuses the graph: report, don't crash
            err = ServiceUnavailable(f"model '{name}' version {version} cannot be opened: {exc}")
            self._record_failure(key, err, type(exc).__name__)
            raise err from exc
        seconds = time.perf_counter() - started
        model = LoadedModel(
            artifact.card.with_version(version),
            sessions,
            seconds,
            arena_keep=arena_keep(self.settings),
        )
        model.batcher = MicroBatcher(
            [model.runner(s) for s in sessions],
            max_batch_size=self.settings.max_batch_size,
            max_wait_s=self.settings.max_batch_wait_ms / 1000,
            others_busy=cores.others_busy,
            inline=per_core,
            on_batch=metrics.BATCH_SIZE.labels(name).observe,
            name=f"batcher-{name}-{version}",
        )
        metrics.LOAD_SECONDS.labels(name).observe(seconds)
        log.info("loaded model=%s version=%s seconds=%.3f", name, version, seconds)
        if not model.preprocessing_matches:
            log.warning(
                "model=%s version=%s was trained with preprocessing version %s and is served with"
                " version %s: some scans reach it decoded unlike those it learned from (see"
                " models.imaging.PREPROCESSING_VERSION); retrain it to match",
                name, version, model.card.input.preprocessing_version, _preprocessing_version(),
            )  # fmt: skip
        threads = all_core_threads(self.settings)
        if (per_core or len(sessions) > 1) and threads > 1:  # the lanes are single-threaded
            self._build_solo(model, artifact.onnx, threads)  # ready now; the all-core one follows
        return model

    def _build_solo(self, model: LoadedModel, onnx: bytes, threads: int) -> None:
        """Build `model`'s all-core session in a thread that `stop` joins; none once stopping."""
        thread = threading.Thread(
            target=self._attach_solo,
            args=(model, onnx, threads),
            name=f"solo-{model.name}-{model.version}",
            daemon=True,
        )
        with self._lock:
            if self._stop.is_set():
                return
            self._solo_builds = [t for t in self._solo_builds if t.is_alive()] + [thread]
            thread.start()

    def _attach_solo(self, model: LoadedModel, onnx: bytes, threads: int) -> None:
        try:
            solo = create_session(onnx, self.settings, threads)
            warm_up(solo, model.card)
        except Exception as exc:  # lanes keep serving; only low-load latency suffers
            log.warning("model=%s all-core session not created: %s", model.name, exc)
            return
        if self._stop.is_set():
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
            key[0],
            key[1],
            delay,
            exc.detail,
        )

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

    # background work
    def _preload_all(self) -> None:
        for entry in list(self._pending_preloads):
            if self._stop.is_set():
                return
            try:
                name, version, alias = parse_model_ref(entry, self.settings.default_alias)
                self.get(name, version=version, alias=alias)
                self._preload_errors.pop(entry, None)
            except Exception as exc:  # keep going; readiness reports it, the poller retries
                self._preload_errors[entry] = f"{entry}: {exc}"
                log.error("preload %s failed: %s", entry, exc)
            self._pending_preloads.remove(entry)

    def _poll_loop(self) -> None:
        while not self._stop.wait(self.settings.alias_poll_interval_s):
            self.poll_once()

    def poll_once(self) -> None:
        """Re-read followed aliases; load new targets first, then swap; retry failed preloads."""
        with self._lock:
            followed = list(self._aliases.items())
        for (name, alias), current in followed:
            try:
                target = self.registry.get_alias(name, alias).version
                if target != current:
                    self.load(name, target)
                    with self._lock:
                        self._aliases[(name, alias)] = target
                    log.info("alias %s@%s moved %s -> %s", name, alias, current, target)
                self._stale_aliases.pop((name, alias), None)
            except Exception as exc:  # keep serving `current`; the failure is logged and counted
                # once per reason: a refused version would otherwise warn every poll interval
                repeated = self._stale_aliases.get((name, alias)) == str(exc)
                self._stale_aliases[(name, alias)] = str(exc)
                log.log(
                    logging.DEBUG if repeated else logging.WARNING,
                    "alias %s@%s not refreshed, still serving %s: %s",
                    name, alias, current, exc,
                )  # fmt: skip
        if self._preload_errors and not self._pending_preloads:
            self._pending_preloads.extend(self._preload_errors)
            self._preload_all()


def parse_model_ref(entry: str, default_alias: str) -> tuple[str, int | None, str | None]:
    """'name', 'name@alias' or 'name:version' as (name, version, alias)."""
    if ":" in entry:
        name, _, number = entry.partition(":")
        return name, int(number), None
    name, _, alias = entry.partition("@")
    return name, None, alias or default_alias


def create_lane_sessions(
    onnx: bytes, settings: InferenceSettings, *, per_core: bool = False
) -> list[onnxruntime.InferenceSession]:
    """The batcher lanes' sessions: one single-threaded session that every lane runs at once
    (onnxruntime sessions are safe to run concurrently), or with one lane an all-core session.
    A worker of the one-per-core layout (`service.cores`) has one
    single-threaded session: its core is its share."""
    if per_core:
        return [create_session(onnx, settings, 1)]
    lanes = settings.ort_lanes or cores.available_cores()
    if lanes == 1:
        return [create_session(onnx, settings, all_core_threads(settings))]
    return [create_session(onnx, settings, 1)] * lanes


def warm_up(session: onnxruntime.InferenceSession, card: ModelCard) -> None:
    """Run one blank scan of the card's input through a new session before it serves.

    The first run of a session allocates onnxruntime's buffers (the first request would pay
    for it, about 20 ms here), and a graph that loads but cannot take the card's input, or
    answers in another shape than the card's classes, is refused here, while the previous
    version keeps serving, instead of failing requests.
    """
    spec, names = card.input, card.outputs
    blank = np.zeros((1, spec.channels, spec.size, spec.size), dtype=np.float32)
    (probabilities,) = session.run([names.probabilities], {names.input: blank})
    expected = (1, len(card.classes))
    if probabilities.shape != expected:
        raise ValueError(
            f"output '{names.probabilities}' has shape {list(probabilities.shape)} for one scan;"
            f" the card's {len(card.classes)} classes need {list(expected)}"
        )
    if not np.isfinite(probabilities).all():
        raise ValueError(f"output '{names.probabilities}' is not finite for a blank scan")


def arena_keep(settings: InferenceSettings) -> int | None:
    """The largest run whose CPU arena memory a session keeps; micro-batches always are."""
    if not settings.ort_cpu_mem_arena:
        return None
    return max(settings.ort_arena_keep_batch, settings.max_batch_size)


def all_core_threads(settings: InferenceSettings) -> int:
    """Intra-op threads of the all-core session a lone request runs on."""
    return settings.ort_intra_op_threads or cores.available_cores()


def create_session(
    onnx: bytes, settings: InferenceSettings, threads: int
) -> onnxruntime.InferenceSession:
    """An onnxruntime session from bytes in memory with `threads` intra-op threads (0: auto)."""
    try:
        import onnxruntime as ort
    except ImportError as exc:  # pragma: no cover - install guidance
        raise ImportError(
            "the inference service needs onnxruntime: pip install 'scantune[serve]'"
        ) from exc
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.enable_cpu_mem_arena = settings.ort_cpu_mem_arena
    options.add_session_config_entry(
        "session.intra_op.allow_spinning", "1" if settings.ort_allow_spinning else "0"
    )
    options.log_severity_level = 3
    providers: list[Any] = [p for p in settings.providers if p in ort.get_available_providers()]
    return ort.InferenceSession(onnx, sess_options=options, providers=providers or None)


def _preprocessing_version() -> int:
    from models.imaging import PREPROCESSING_VERSION  # here: the load starts before PIL loads

    return PREPROCESSING_VERSION
