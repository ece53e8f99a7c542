"""Prometheus metrics of the inference service (multiprocess-safe under gunicorn)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

PREDICTIONS = Counter(
    "scantune_inference_requests_total",
    "Prediction requests (v1 predict and v2 infer), by model, version and HTTP status",
    ["model", "version", "status"],
)
PREDICTION_SECONDS = Histogram(
    "scantune_inference_request_seconds",
    "Prediction request latency, decode to response, by model and HTTP status",
    ["model", "status"],
    buckets=(0.002, 0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
IMAGES = Counter("scantune_inference_images_total", "Scans classified", ["model", "version"])
BATCH_SIZE = Histogram(
    "scantune_inference_batch_size",
    "Images per onnxruntime run (micro-batches and multi-file requests)",
    ["model"],
    buckets=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64),
)
LOAD_SECONDS = Histogram(
    "scantune_model_load_seconds",
    "Time to fetch, verify and open a model version",
    ["model"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
LOAD_FAILURES = Counter(
    "scantune_model_load_failures_total", "Model versions that failed to load", ["model", "reason"]
)
LOADED_MODELS = Gauge(
    "scantune_models_loaded",
    "Model versions loaded in memory (summed over workers)",
    multiprocess_mode="livesum",
)
DICOM_DECODER_FAILURES = Counter(
    "scantune_dicom_decoder_failures_total",
    "JPEG Lossless and JPEG-LS decoder processes stopped because they crashed, hung or answered"
    " out of protocol; each cost its scan a 422 (models.scans.helper_pool)",
)
# What a version answers in service, beside what its card's validation said it would
# (`prediction_mix`): a shift warns of another scanner or population before outcomes come.
PREDICTED = Counter(
    "scantune_inference_predicted_total",
    "Scans classified (v1 predict), by model, version and the class answered",
    ["model", "version", "label"],
)
CONFIDENCE = Histogram(
    "scantune_inference_confidence",
    "The answered class's calibrated probability (low: scans unlike the training set)",
    ["model", "version"],
    buckets=(0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99),
)
ATYPICAL = Counter(
    "scantune_inference_atypical_inputs_total",
    "Scans (v1 predict) whose pixels the card's input profile finds unlike the training scans'",
    ["model", "version"],
)
EXPECTED_SHARE = Gauge(
    "scantune_model_expected_share",
    "The share of scans each class would be answered for, as the card's validation says",
    ["model", "version", "label"],
    multiprocess_mode="mostrecent",
)
# A candidate version in shadow (`shadow`): how often it agrees with the serving version.
SHADOW_SCANS = Counter(
    "scantune_inference_shadow_scans_total",
    "Scans the shadow version classified after the serving version answered, by agreement",
    ["model", "version", "shadow_version", "agreed"],
)
SHADOW_SKIPPED = Counter(
    "scantune_inference_shadow_skipped_total",
    "Requests the shadow version did not follow: busy, withdrawn, other_classes, failed",
    ["model", "reason"],
)
