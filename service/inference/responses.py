"""The answer to a predict request, built in one place from the predictor's result.

Every `POST /v1/models/{name}:predict` goes through the Flask view and ends here, so whatever
shapes the answer (the JSON body today; content negotiation, a DICOM SR or FHIR rendering,
audit records tomorrow) is added once and applies to every predict.
"""

from __future__ import annotations

from typing import Any

from flask import Response, g, jsonify


def sign_predictions(result: dict[str, Any], key: str | None) -> None:
    """Each prediction's `signature` (`service.signing`): what this version answered, for the
    outcome reported for the scan later; nothing without a key."""
    if key is None:
        return
    from service.signing import sign

    name, version = result["model"]["name"], result["model"]["version"]
    for prediction in result["predictions"]:
        prediction["signature"] = sign(key, name, version, prediction["probabilities"])


def prediction_response(
    result: dict[str, Any], rendered: tuple[bytes, str] | None = None
) -> Response:
    """The response to a predict: `result` (`Predictor.predict`'s) with the request id, or
    its rendering as a DICOM SR or FHIR Bundle (bytes and media type)."""
    if rendered is not None:
        return Response(rendered[0], mimetype=rendered[1])
    return jsonify(request_id=g.get("request_id"), **result)
