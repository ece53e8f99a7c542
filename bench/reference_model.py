"""The model both reference classifiers serve, as `bench/inference.py` hands it to them.

BENCH_ONNX and BENCH_CARD name the exported model and its card; the session is
single-threaded with spinning off, like each of the limit's processes.
"""

from __future__ import annotations

import os
from pathlib import Path

import onnxruntime as ort

from models.card import ModelCard


def load() -> tuple[ModelCard, ort.InferenceSession]:
    card = ModelCard.from_json(Path(os.environ["BENCH_CARD"]).read_text())
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(os.environ["BENCH_ONNX"], options, ["CPUExecutionProvider"])
    return card, session
