"""The answer to a predict request, built in one place from the predictor's result.

Every `POST /v1/models/{name}:predict` goes through the Flask view and ends here, so whatever
shapes the answer (the JSON body today; content negotiation, a DICOM SR or FHIR rendering,
audit records tomorrow) is added once and applies to every predict.
"""

from __future__ import annotations

from typing import Any

from flask import Response, g, jsonify


def prediction_response(result: dict[str, Any]) -> Response:
    """The response to a predict: `result` (`Predictor.predict`'s) with the request id."""
    return jsonify(request_id=g.get("request_id"), **result)
