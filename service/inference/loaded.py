"""A model version ready to run: its card, onnxruntime sessions and micro-batcher."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from models.card import ModelCard
from models.input_profile import Checker, usable
from service import cores
from service.config import InferenceSettings
from service.inference import metrics, sessions
from service.inference.batcher import MicroBatcher, RunBatch

if TYPE_CHECKING:
    from service.inference.sessions import Session

log = logging.getLogger("scantune.inference.models")


@dataclass(eq=False)
class LoadedModel:
    """One model version ready to run.

    `sessions` are the batcher's runners' sessions; `solo`, when set, is the all-core session
    a lone request runs on. `arena_keep`: see `sessions.batch_runner`. `checker` scores each
    scan against the card's input profile (None: the card has none this service can use).
    """

    card: ModelCard
    sessions: list[Session]
    load_seconds: float
    solo: Session | None = None
    arena_keep: int | None = None
    batcher: MicroBatcher = field(init=False)
    output_names: list[str] = field(init=False)
    checker: Checker | None = field(init=False)
    loaded_at: float = field(default_factory=time.time)

    def __post_init__(self) -> None:
        self.output_names = sessions.output_names(self.sessions[0], self.card)
        self.checker = usable(self.card.input_profile)

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
        return self.card.input.preprocessing_version == preprocessing_version()

    def runner(self, session: Session) -> RunBatch:
        """A function running one ready (N, C, H, W) batch on `session`."""
        return sessions.batch_runner(
            session, self.card.outputs.input, self.output_names, self.arena_keep
        )

    def close(self) -> None:
        self.batcher.close()


def open_model(
    card: ModelCard, onnx: bytes, settings: InferenceSettings, *, per_core: bool
) -> LoadedModel:
    """Build a version's sessions, warm them up and put a micro-batcher in front of them.

    Raises whatever onnxruntime or the warm-up raise for a graph that cannot serve.
    """
    started = time.perf_counter()
    built = sessions.create_runner_sessions(onnx, settings, per_core=per_core)
    sessions.warm_up(built[0], card)
    model = LoadedModel(
        card, built, time.perf_counter() - started, arena_keep=sessions.arena_keep(settings)
    )
    model.batcher = MicroBatcher(
        [model.runner(s) for s in built],
        max_batch_size=settings.max_batch_size,
        max_wait_s=settings.max_batch_wait_ms / 1000,
        others_busy=cores.others_busy,
        inline=per_core,
        on_batch=metrics.BATCH_SIZE.labels(card.name).observe,
        name=f"batcher-{card.name}-{card.version}",
    )
    if not model.preprocessing_matches:
        log.warning(
            "model=%s version=%s was trained with preprocessing version %s and is served with"
            " version %s: some scans reach it decoded unlike those it learned from (see"
            " models.scans.PREPROCESSING_VERSION); retrain it to match",
            card.name, card.version, card.input.preprocessing_version, preprocessing_version(),
        )  # fmt: skip
    return model


def preprocessing_version() -> int:
    from models.scans import PREPROCESSING_VERSION  # here: the load starts before PIL loads

    return PREPROCESSING_VERSION
