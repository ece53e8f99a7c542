"""Signed predictions: what a version answered for a scan, so that an outcome reported for it
later can be checked to be that version's answer, unchanged.

The inference service signs each prediction's probabilities with the model's name and version
(HMAC-SHA256 under `SCANTUNE_PREDICTION_SIGNING_KEY`, which the training service holds too);
the training service checks the signature an outcome carries. It catches a client reporting
another version's answers (the alias moved between the predict and the report), answers
edited on the way, and made-up ones. The probabilities are signed as JSON text: a JSON number
read and written again by any conforming parser (Python's, a browser's) is the same double,
so the client needs to keep only the numbers it was given.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping

PREFIX = "v1:"  # the scheme, should the signed message ever change


def sign(key: str, model: str, version: int, probabilities: Mapping[str, float]) -> str:
    """The signature of `probabilities` as `model` `version` answered them."""
    digest = hmac.new(key.encode(), _message(model, version, probabilities), hashlib.sha256)
    return PREFIX + digest.hexdigest()


def verify(
    key: str, model: str, version: int, probabilities: Mapping[str, float], signature: str
) -> bool:
    """Whether `signature` is that of these probabilities answered by that version."""
    return hmac.compare_digest(sign(key, model, version, probabilities), signature)


def _message(model: str, version: int, probabilities: Mapping[str, float]) -> bytes:
    answered = {c: float(p) for c, p in probabilities.items()}
    text = json.dumps(answered, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return f"{model}\n{int(version)}\n{text}".encode()
