"""/v2: the Open Inference Protocol (KServe V2) REST endpoints, so standard clients work.

`infer` takes the model's input tensor as FP32 (`shape` [N, C, size, size], data flat or
nested, already preprocessed), or as BYTES: N scan files (PNG, JPEG, DICOM) that the service
decodes and preprocesses like /v1. Outputs are the graph's tensors.

The binary tensor data extension, which tritonclient uses by default, is supported: the body
is a JSON header of `Inference-Header-Content-Length` bytes followed by each binary input's
raw little-endian bytes (`parameters.binary_data_size`; a BYTES element is a 4-byte length,
then the file); outputs asked for with `parameters.binary_data` (or the request's
`binary_data_output`) come back the same way.

Errors are the shared problem shape plus the protocol's `error` message member.
"""

from __future__ import annotations

import math
import struct
from typing import Any

import numpy as np
from flask import Blueprint, Response, json, jsonify, request
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from service.auth import require, visible_client
from service.encoding import parse_json
from service.errors import PROBLEM_MEDIA_TYPE, BadRequest, NotFound, validation_errors
from service.inference.context import services, visible_registry
from service.inference.loaded import LoadedModel
from service.inference.prediction_metrics import (
    counted_scans,
    observe_prediction,
    served_by,
    start_prediction,
)
from service.inference.predictor import Selector, check_parameters, count_scans, tensor_scores
from service.inference.uploads import Upload, b64decode
from service.ratelimit import limited
from service.registry import ArtifactCorrupt, Registry

bp = Blueprint("v2", __name__, url_prefix="/v2")
SERVER_NAME = "scantune-inference"
FLOAT_TYPES = {"FP32": np.float32, "FP64": np.float64, "FP16": np.float16}
HEADER_LENGTH = "Inference-Header-Content-Length"
# tritonclient sends no Content-Type at all; the binary extension's body is octet-stream.
BODY_TYPES = {"application/json", "application/octet-stream", ""}


class TensorIn(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: str
    shape: list[int] = Field(min_length=1)
    datatype: str
    data: list[Any] | None = None  # None: the tensor is in the binary part
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
    return jsonify(name=SERVER_NAME, version="2", extensions=["binary_tensor_data"])


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
    registry = visible_registry()
    number = version or _default_version(registry, name)
    card = registry.get_card(name, number)
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
        versions=[str(v) for v in registry.list_versions(name)],
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
    registry = visible_registry()
    number = version or _default_version(registry, name)
    try:
        registry.get_card(name, number)  # 404 when unknown (or not the client's to see)
    except ArtifactCorrupt:
        return jsonify(name=name, ready=False), 503  # present, and cannot be served
    if services().predictor.withdrawals.current(name, number) is not None:
        return jsonify(name=name, ready=False), 503  # withdrawn: infer answers 410 and why
    is_ready = services().manager.cached(name, number) is not None
    return jsonify(name=name, ready=is_ready), 200 if is_ready else 503


@bp.post("/models/<name>/infer")
@require("predict")
@limited("predict")
def infer(name: str) -> Response:
    return _infer(Selector(name))


@bp.post("/models/<name>/versions/<int:version>/infer")
@require("predict")
@limited("predict")
def infer_version(name: str, version: int) -> Response:
    return _infer(Selector(name, version=version))


def _infer(selector: Selector) -> Response:
    body, binary = _read_body()
    tensor = body.inputs[0]
    chunk = _binary_input(tensor, binary)
    predictor = services().predictor
    model = predictor.model(selector, visible_client())
    _check_input_name(model, tensor.name)
    wanted = _wanted_outputs(body, model)
    if tensor.datatype == "BYTES":
        uploads = _uploads(tensor, chunk)
        count = len(uploads)
        counted_scans(count)
        outputs, scores = predictor.infer_files(model, uploads)
    else:
        array = _array(tensor, chunk)
        count = len(array)
        counted_scans(count)
        outputs = predictor.infer_tensor(model, array)
        scores = tensor_scores(model.checker, array, model.card.input)
    served_by(model.name, model.version)
    count_scans(model, count, scores)
    outs = [(name, outputs[name], binary) for name, binary in wanted]
    return _respond(body, model, outs, check_parameters(model.checker, scores))


def _wanted_outputs(body: InferRequest, model: LoadedModel) -> list[tuple[str, bool]]:
    """The outputs to return (all by default), each with whether it goes in binary."""
    all_binary = _flag(body.parameters, "binary_data_output", "parameters", default=False)
    if not body.outputs:
        return [(name, all_binary) for name in model.output_names]
    unknown = [o.name for o in body.outputs if o.name not in model.output_names]
    if unknown:
        raise BadRequest(f"unknown output(s) {unknown}; this model has {model.output_names}")
    return [
        (o.name, _flag(o.parameters, "binary_data", f"outputs[{i}].parameters", default=all_binary))
        for i, o in enumerate(body.outputs)
    ]


def _respond(
    body: InferRequest,
    model: LoadedModel,
    outputs: list[tuple[str, np.ndarray, bool]],
    parameters: dict[str, Any],
) -> Response:
    """JSON, or, when an output goes in binary, the JSON header and then those outputs'
    little-endian FP32 bytes in order."""
    tails = [values.astype("<f4", copy=False).tobytes() if binary else None
             for _, values, binary in outputs]  # fmt: skip
    header: dict[str, Any] = {
        "model_name": model.name,
        "model_version": str(model.version),
        "outputs": [
            _tensor_out(name, values, tail)
            for (name, values, _), tail in zip(outputs, tails, strict=True)
        ],
        "parameters": {"sha256": model.sha256, **parameters},
    }
    if body.id is not None:
        header = {"id": body.id, **header}
    if all(tail is None for tail in tails):
        return jsonify(header)
    head = json.dumps(header).encode()
    return Response(
        b"".join([head, *(tail for tail in tails if tail is not None)]),
        mimetype="application/octet-stream",
        headers={HEADER_LENGTH: str(len(head))},
    )


def _read_body() -> tuple[InferRequest, memoryview]:
    """The JSON request and the binary part after it (empty without the extension)."""
    if request.mimetype not in BODY_TYPES:
        raise BadRequest(
            "send an Open Inference Protocol JSON body (Content-Type: application/json), or a"
            f" JSON header and binary tensor data ({HEADER_LENGTH})"
        )
    raw = memoryview(request.get_data(cache=False))
    declared = request.headers.get(HEADER_LENGTH)
    length = len(raw)
    if declared is not None:
        length = int(declared) if declared.isascii() and declared.isdigit() else 0
        if not 0 < length <= len(raw):
            raise BadRequest(
                f"{HEADER_LENGTH} must be the JSON header's length in bytes: 1 to the body's"
                f" {len(raw)}, not {declared[:20]!r}"
            )
    try:
        document = parse_json(bytes(raw[:length]))
    except ValueError:
        raise BadRequest(
            "send an Open Inference Protocol JSON body (Content-Type: application/json)"
            + (f"; the first {length} bytes ({HEADER_LENGTH}) are not JSON" if declared else "")
        ) from None
    return _validate(document), raw[length:]


def _validate(document: Any) -> InferRequest:
    try:
        return InferRequest.model_validate(document)
    except ValidationError as exc:
        errors = validation_errors(exc)
        raise BadRequest(
            "; ".join(f"{e['loc']}: {e['msg']}" for e in errors[:5]), errors=errors
        ) from None


def _binary_input(tensor: TensorIn, binary: memoryview) -> memoryview | None:
    """The input's bytes from the binary part, or None when its data is in the JSON."""
    size = (tensor.parameters or {}).get("binary_data_size")
    if size is None:
        if tensor.data is None:
            raise BadRequest(
                f"input '{tensor.name}' has neither data nor parameters.binary_data_size"
            )
        if len(binary):
            raise BadRequest(f"{len(binary)} bytes after the JSON header belong to no input")
        return None
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise BadRequest(f"input '{tensor.name}': binary_data_size must be a whole number")
    if size != len(binary):
        raise BadRequest(
            f"input '{tensor.name}': binary_data_size is {size} bytes but {len(binary)} follow"
            " the JSON header"
        )
    return binary


def _flag(parameters: dict[str, Any] | None, key: str, where: str, *, default: bool) -> bool:
    value = (parameters or {}).get(key, default)
    if not isinstance(value, bool):
        raise BadRequest(f"{where}.{key} must be true or false")
    return value


def _array(tensor: TensorIn, chunk: memoryview | None) -> np.ndarray:
    dtype = FLOAT_TYPES.get(tensor.datatype)
    if dtype is None:
        raise BadRequest(f"datatype {tensor.datatype} not supported; send FP32 or BYTES")
    if chunk is not None:
        little = np.dtype(dtype).newbyteorder("<")
        if len(chunk) % little.itemsize:
            raise BadRequest(
                f"input '{tensor.name}': {len(chunk)} bytes are not whole {tensor.datatype} values"
            )
        values = np.frombuffer(chunk, dtype=little)
    else:
        try:
            values = np.asarray(tensor.data, dtype=dtype)
        except (TypeError, ValueError):
            raise BadRequest(f"input '{tensor.name}': data is not a numeric array") from None
    if values.size != math.prod(tensor.shape) or any(d < 1 for d in tensor.shape):
        raise BadRequest(
            f"input '{tensor.name}': {values.size} values do not fill shape {tensor.shape}"
        )
    with np.errstate(over="ignore"):  # past FP32's range: infinite, and refused just below
        batch = values.reshape(tensor.shape).astype(np.float32, copy=False)
    if not np.isfinite(batch).all():  # NaN/Infinity tokens, or values past FP32's range
        raise BadRequest(f"input '{tensor.name}': data holds values that are not finite FP32")
    return batch


def _uploads(tensor: TensorIn, chunk: memoryview | None) -> list[Upload]:
    items = _elements(tensor, chunk) if chunk is not None else tensor.data or []
    if len(tensor.shape) != 1 or tensor.shape[0] != len(items) or not items:
        raise BadRequest("a BYTES input has shape [N] and N scans")
    names = [f"{tensor.name}[{i}]" for i in range(len(items))]
    if chunk is not None:
        return [Upload(n, item) for n, item in zip(names, items, strict=True)]
    if not all(isinstance(item, str) for item in items):
        raise BadRequest("BYTES data must be base64 strings, one per scan")
    return [Upload(n, b64decode(item, n)) for n, item in zip(names, items, strict=True)]


def _elements(tensor: TensorIn, chunk: memoryview) -> list[bytes]:
    """A binary BYTES tensor: each element a 4-byte little-endian length, then its bytes.
    Read no further than the scans a request may hold: 32 MB of empty elements is millions."""
    most = services().settings.max_files
    items: list[bytes] = []
    offset = 0
    while offset < len(chunk):
        if len(items) == most:
            raise BadRequest(f"input '{tensor.name}' holds more than {most} scans; at most {most}")
        if offset + 4 > len(chunk):
            raise BadRequest(f"input '{tensor.name}': element {len(items)} has a cut length")
        (size,) = struct.unpack_from("<I", chunk, offset)
        if offset + 4 + size > len(chunk):
            raise BadRequest(
                f"input '{tensor.name}': element {len(items)} of {size} bytes runs past the data"
            )
        items.append(bytes(chunk[offset + 4 : offset + 4 + size]))
        offset += 4 + size
    return items


def _check_input_name(model: LoadedModel, name: str) -> None:
    if name != model.card.outputs.input:
        raise BadRequest(
            f"unknown input '{name}'; this model's input is '{model.card.outputs.input}'"
        )


def _tensor_out(name: str, values: np.ndarray, binary: bytes | None) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name, "datatype": "FP32", "shape": list(values.shape)}
    if binary is not None:
        return {**out, "parameters": {"binary_data_size": len(binary)}}
    return {**out, "data": values.astype(np.float32, copy=False).ravel().tolist()}


def _default_version(registry: Registry, name: str) -> int:
    """The version the default alias serves; the latest when that alias is not set. Both as
    `registry` (the client's view) shows them: a hidden version is not served to it."""
    s = services()
    try:
        number = s.manager.resolve_alias(name, s.settings.default_alias)
        registry.require_visible(name, number)
        return number
    except NotFound:
        versions = registry.list_versions(name)
        if not versions:
            raise
        return max(versions)
