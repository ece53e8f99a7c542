"""onnxruntime sessions and their options: the one module that imports onnxruntime.

A model runs on one of two kinds of session: single-threaded ones (a sync worker's share of
its core, or the micro-batcher's runner threads, which share one session: onnxruntime runs
are safe to make concurrently), and an all-core "solo" session that a lone request runs on
while nothing else is busy (`docs/inference.md`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from models.card import ModelCard
from service import cores
from service.config import InferenceSettings
from service.inference.batcher import Outputs, RunBatch

if TYPE_CHECKING:
    from onnxruntime import InferenceSession as Session


def create_session(onnx: bytes, settings: InferenceSettings, threads: int) -> Session:
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


def create_runner_sessions(
    onnx: bytes, settings: InferenceSettings, *, per_core: bool = False
) -> list[Session]:
    """The micro-batcher's runners' sessions: one single-threaded session that every runner
    thread runs at once, or with one runner an all-core session. A worker of the one-per-core
    layout (`service.cores`) has one single-threaded session: its core is its share."""
    if per_core:
        return [create_session(onnx, settings, 1)]
    runners = settings.batch_runners or cores.available_cores()
    if runners == 1:
        return [create_session(onnx, settings, all_core_threads(settings))]
    return [create_session(onnx, settings, 1)] * runners


def all_core_threads(settings: InferenceSettings) -> int:
    """Intra-op threads of the all-core session a lone request runs on."""
    return settings.ort_intra_op_threads or cores.available_cores()


def arena_keep(settings: InferenceSettings) -> int | None:
    """The largest run whose CPU arena memory a session keeps; micro-batches always are."""
    if not settings.ort_cpu_mem_arena:
        return None
    return max(settings.ort_arena_keep_batch, settings.max_batch_size)


def output_names(session: Session, card: ModelCard) -> list[str]:
    """The card's outputs (probabilities, logits, CAM) that the graph has, in that order."""
    present = {o.name for o in session.get_outputs()}
    wanted = [card.outputs.probabilities, card.outputs.logits, card.outputs.cam]
    return [n for n in wanted if n is not None and n in present]


def batch_runner(
    session: Session, input_name: str, outputs: list[str], keep: int | None
) -> RunBatch:
    """A function running one ready (N, C, H, W) batch on `session`. A run of more than
    `keep` images gives the memory it took from onnxruntime's CPU arena back when it ends
    (None: never, the arena being off): left in the arena, one 64-file request would hold
    its activations, about 15 MB an image at 224 px, for the worker's lifetime."""
    give_back = None
    if keep is not None:
        import onnxruntime as ort

        give_back = ort.RunOptions()
        give_back.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")

    def run(batch: np.ndarray) -> Outputs:
        options = give_back if keep is not None and len(batch) > keep else None
        values = session.run(outputs, {input_name: batch}, options)
        return dict(zip(outputs, values, strict=True))

    return run


def warm_up(session: Session, card: ModelCard) -> None:
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
