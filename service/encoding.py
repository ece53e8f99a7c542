"""JSON responses that stay valid JSON: NaN/Infinity (an undefined AUC, a diverged model's
probabilities) become null. Both services install it through `service.web.create_base_app`."""

from __future__ import annotations

import json
import math
from typing import Any

from flask.json.provider import DefaultJSONProvider


class FiniteJSONProvider(DefaultJSONProvider):
    """Flask's provider, but never emits the non-standard NaN/Infinity tokens."""

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        kwargs.setdefault("allow_nan", False)
        try:
            return super().dumps(obj, **kwargs)
        except ValueError:  # only on non-finite floats: take the slow path once
            return super().dumps(finite(obj), **kwargs)


def finite(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [finite(v) for v in obj]
    return obj


def parse_json(data: str | bytes) -> Any:
    """`json.loads`, but a document nested deeper than the parser goes raises ValueError like
    any other malformed JSON: `json.loads` raises RecursionError, which would be a 500."""
    try:
        return json.loads(data)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
