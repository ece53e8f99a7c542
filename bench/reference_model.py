"""The benchmark's onnxruntime session, and the model the reference classifiers serve.

`session` is what the limit's processes and the reference apps run on, so they compare
like with like. The reference apps read BENCH_ONNX and BENCH_CARD (the exported model and its
card, as `bench/inference.py` hands them) and BENCH_INTRA_OP (threads, default 1).
"""

from __future__ import annotations

import os
from pathlib import Path

import onnxruntime as ort

from models.card import ModelCard


def session(onnx: bytes | str, threads: int) -> ort.InferenceSession:
    """A CPU session with `threads` intra-op threads, sequential, spinning off."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(onnx, options, providers=["CPUExecutionProvider"])


def load() -> tuple[ModelCard, ort.InferenceSession]:
    card = ModelCard.from_json(Path(os.environ["BENCH_CARD"]).read_text())
    return card, session(os.environ["BENCH_ONNX"], int(os.environ.get("BENCH_INTRA_OP", "1")))
