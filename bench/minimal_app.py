"""The reference point the inference issue names: a minimal Flask classifier under gunicorn.

Not part of the service. `bench/inference.py` runs it beside the service, in the same blocks,
so every run shows what the bare framework reaches against the same limit: Werkzeug's form
parser, the trainer's `models.scans` preprocessing, one single-threaded onnxruntime session
per worker, `jsonify`. No auth, metrics, logging, model registry or error handling.

    BENCH_ONNX=model.onnx BENCH_CARD=card.json gunicorn --workers 2 bench.minimal_app:app
"""

from __future__ import annotations

import numpy as np
from flask import Flask, Response, jsonify, request

from bench import reference_model
from models import scans

card, session = reference_model.load()
outputs = [o.name for o in session.get_outputs()]
app = Flask(__name__)


@app.post("/v1/models/<name>:predict")
def predict(name: str) -> Response:
    upload = request.files["file"]
    batch = scans.to_batch([scans.decode(upload.read(), upload.filename or "")], card.input)
    values = dict(zip(outputs, session.run(None, {card.outputs.input: batch}), strict=True))
    probs = values[card.outputs.probabilities][0]
    return jsonify(
        label=card.classes[int(np.argmax(probs))],
        probabilities={c: float(p) for c, p in zip(card.classes, probs, strict=True)},
    )
