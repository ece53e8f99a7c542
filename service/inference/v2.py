"""/v2: the Open Inference Protocol (KServe V2) REST endpoints, so standard clients work.

`infer` takes the model's input tensor as FP32 (`shape` [N, C, size, size], data flat or
nested, already preprocessed), or as BYTES: N base64-encoded scan files (PNG, JPEG, DICOM)
that the service decodes and preprocesses like /v1. Outputs are the graph's tensors.
Errors are the shared problem shape plus the protocol's `error` message member.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from flask import Blueprint, Response, json, jsonify, request
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from service.auth import require
from service.errors import PROBLEM_MEDIA_TYPE, BadRequest, NotFound, validation_errors
from service.inference import services
from service.inference.manager import LoadedModel
from service.inference.predictor import Selector
from service.inference.uploads import Upload, b64decode
from service.inference.views import observe_prediction, served_by, start_prediction
from service.registry import ArtifactCorrupt

bp = Blueprint("v2", __name__, url_prefix="/v2")
SERVER_NAME = "scantune-inference"
FLOAT_TYPES = {"FP32": np.float32, "FP64": np.float64, "FP16": np.float16}


class TensorIn(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: str
    shape: list[int] = Field(min_length=1)
    datatype: str
    data: list[Any]
    parameters: dict[str, Any] | None = None


class OutputRequest(BaseModel):
    name: str
    parameters: dict[str, Any] | None = None


class InferRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str | None = None
    inputs: list[TensorIn] = Field(min_length=1, max_length=1)
    outputs: list[OutputRequest] | None = None
    parameters: dict[str, Any] | None = None


@bp.before_request
def _start() -> None:
    if request.endpoint in ("v2.infer", "v2.infer_version"):
        start_prediction()


bp.after_request(observe_prediction)


@bp.after_app_request
def _add_error_member(response: Response) -> Response:
    """V2 clients (tritonclient, KServe's) read a failure's message from `error`: every problem
    under /v2, routed or not, carries its detail there too, as an RFC 9457 extension member."""
    under_v2 = request.path == bp.url_prefix or request.path.startswith(f"{bp.url_prefix}/")
    if under_v2 and response.mimetype == PROBLEM_MEDIA_TYPE:
        body = json.loads(response.get_data())
        body["error"] = body["detail"]
        response.set_data(json.dumps(body))
    return response


@bp.get("")
def server_metadata() -> Response:
    return jsonify(name=SERVER_NAME, version="2", extensions=[])


@bp.get("/health/live")
def live() -> Response:
    return jsonify(live=True)


@bp.get("/health/ready")
def ready() -> tuple[Response, int]:
    try:
        services().manager.check_ready()
    except RuntimeError:
        return jsonify(ready=False), 503
    return jsonify(ready=True), 200


@bp.get("/models/<name>")
@bp.get("/models/<name>/versions/<int:version>")
@require("read")
def model_metadata(name: str, version: int | None = None) -> Response:
    s = services()
    number = version or _default_version(name)
    card = s.registry.get_card(name, number)
    spec, outputs = card.input, card.outputs
    tensors = [
        {"name": outputs.probabilities, "datatype": "FP32", "shape": [-1, len(card.classes)]},
        {"name": outputs.logits, "datatype": "FP32", "shape": [-1, len(card.classes)]},
    ]
    if outputs.cam:
        tensors.append(
            {"name": outputs.cam, "datatype": "FP32", "shape": [-1, len(card.classes), -1, -1]}
        )
    return jsonify(
        name=name,
        versions=[str(v) for v in s.registry.list_versions(name)],
        platform="onnxruntime_onnx",
        inputs=[
            {
                "name": outputs.input,
                "datatype": "FP32",
                "shape": [-1, spec.channels, spec.size, spec.size],
            }
        ],
        outputs=tensors,
        parameters={"version": str(number), "classes": list(card.classes)},
    )


@bp.get("/models/<name>/ready")
@bp.get("/models/<name>/versions/<int:version>/ready")
@require("read")
def model_ready(name: str, version: int | None = None) -> tuple[Response, int]:
    number = version or _default_version(name)
    try:
        services().registry.get_card(name, number)  # 404 when unknown
    except ArtifactCorrupt:
        return jsonify(name=name, ready=False), 503  # present, and cannot be served
    is_ready = services().manager.cached(name, number) is not None
    return jsonify(name=name, ready=is_ready), 200 if is_ready else 503


@bp.post("/models/<name>/infer")
@require("predict")
def infer(name: str) -> Response:
    return _infer(Selector(name))


@bp.post("/models/<name>/versions/<int:version>/infer")
@require("predict")
def infer_version(name: str, version: int) -> Response:
    return _infer(Selector(name, version=version))


def _infer(selector: Selector) -> Response:
    body = _parse(request.get_json(silent=True))
    tensor = body.inputs[0]
    predictor = services().predictor
    model = predictor.model(selector)
    _check_input_name(model, tensor.name)
    wanted = [o.name for o in body.outputs] if body.outputs else model.output_names
    unknown = [n for n in wanted if n not in model.output_names]
    if unknown:
        raise BadRequest(f"unknown output(s) {unknown}; this model has {model.output_names}")
    if tensor.datatype == "BYTES":
        outputs = predictor.infer_files(model, _uploads(tensor))
    else:
        outputs = predictor.infer_tensor(model, _array(tensor))
    served_by(model.name, model.version)
    response: dict[str, Any] = {
        "model_name": model.name,
        "model_version": str(model.version),
        "outputs": [_tensor_out(n, outputs[n]) for n in wanted],
        "parameters": {"sha256": model.sha256},
    }
    if body.id is not None:
        response = {"id": body.id, **response}
    return jsonify(response)


def _parse(raw: Any) -> InferRequest:
    if request.mimetype != "application/json" or raw is None:
        raise BadRequest(
            "send an Open Inference Protocol JSON body (Content-Type: application/json)"
        )
    try:
        return InferRequest.model_validate(raw)
    except ValidationError as exc:
        errors = validation_errors(exc)
        raise BadRequest(
            "; ".join(f"{e['loc']}: {e['msg']}" for e in errors[:5]), errors=errors
        ) from None


def _array(tensor: TensorIn) -> np.ndarray:
    dtype = FLOAT_TYPES.get(tensor.datatype)
    if dtype is None:
        raise BadRequest(f"datatype {tensor.datatype} not supported; send FP32 or BYTES")
    try:
        values = np.asarray(tensor.data, dtype=dtype)
    except (TypeError, ValueError):
        raise BadRequest(f"input '{tensor.name}': data is not a numeric array") from None
    if values.size != math.prod(tensor.shape) or any(d < 1 for d in tensor.shape):
        raise BadRequest(
            f"input '{tensor.name}': {values.size} values do not fill shape {tensor.shape}"
        )
    batch = values.reshape(tensor.shape).astype(np.float32, copy=False)
    if not np.isfinite(batch).all():  # NaN/Infinity tokens, or values past FP32's range
        raise BadRequest(f"input '{tensor.name}': data holds values that are not finite FP32")
    return batch


def _uploads(tensor: TensorIn) -> list[Upload]:
    if len(tensor.shape) != 1 or tensor.shape[0] != len(tensor.data) or not tensor.data:
        raise BadRequest("a BYTES input has shape [N] and N base64-encoded scans")
    if not all(isinstance(item, str) for item in tensor.data):
        raise BadRequest("BYTES data must be base64 strings, one per scan")
    names = [f"{tensor.name}[{i}]" for i in range(len(tensor.data))]
    return [Upload(n, b64decode(item, n)) for n, item in zip(names, tensor.data, strict=True)]


def _check_input_name(model: LoadedModel, name: str) -> None:
    if name != model.card.outputs.input:
        raise BadRequest(
            f"unknown input '{name}'; this model's input is '{model.card.outputs.input}'"
        )


def _tensor_out(name: str, values: np.ndarray) -> dict[str, Any]:
    return {
        "name": name,
        "datatype": "FP32",
        "shape": list(values.shape),
        "data": values.astype(np.float32, copy=False).ravel().tolist(),
    }


def _default_version(name: str) -> int:
    """The version the default alias serves; the latest when that alias is not set."""
    s = services()
    try:
        return s.manager.resolve_alias(name, s.settings.default_alias)
    except NotFound:
        versions = s.registry.list_versions(name)
        if not versions:
            raise
        return max(versions)
