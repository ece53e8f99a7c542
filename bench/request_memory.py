"""Peak memory of one predict request with many large scans, and of one explain heatmap.

Not a test. Each figure comes from a fresh Python process that imports only the inference
service (no torch). The peak is VmHWM after resetting it to the RSS just before the step
(`/proc/self/clear_refs`; ru_maxrss would carry the parent's peak across exec):

- predict: the app factory over a local artifact folder holding the benchmark's
  EfficientNet-Lite0, ready, then one `POST /v1/models/bench-lite0:predict` carrying N copies
  of a black SIDE x SIDE 8-bit PNG (tens of kB each: the cost is in decoding, not upload).
  Prints the rise of peak RSS over the RSS before the request, the rise the worker keeps
  once the request is answered (onnxruntime's arena, Python's heap), and the request's time.
- predict DICOM: the same with one 16-bit grayscale DICOM of --dicom-shape (rows x columns;
  default a mammogram's 4096 x 3328, 27 MB uncompressed, under the 32 MB upload limit), a
  random ramp with a rescale slope and intercept and a VOI window, as a scanner writes it.
- heatmap: `service.inference.explain.heatmap_png` of a random 7 x 7 CAM at SIDE x SIDE:
  time, peak RSS rise, and the base64 length.

    python bench/request_memory.py --files 1 8 --side 4000 --heatmap-sides 2000 4000 8000
    python bench/request_memory.py --files 1 8 16 64 --side 512 --dicom-shape 0 0 --heatmap-sides
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

REPO = Path(__file__).resolve().parent.parent

MEASURE = """
def status_mb(field):
    with open("/proc/self/status") as status:
        return next(int(l.split()[1]) for l in status if l.startswith(field)) / 1024
with open("/proc/self/clear_refs", "w") as refs:
    refs.write("5")  # reset the peak (VmHWM) to the RSS now
before = status_mb("VmRSS")
"""
"""Child code that starts the measured step: `before` is the RSS, and the peak from here on is
read as status_mb("VmHWM")."""

PREDICT_CHILD = """
import io, json, os, sys, time
sys.path.insert(0, {repo!r})
import numpy as np
from PIL import Image
n, rows, cols, kind = {files}, {rows}, {cols}, {kind!r}
if kind == "png":
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((rows, cols), np.uint8)).save(buffer, format="PNG", optimize=True)
    scan, suffix = buffer.getvalue(), "png"
else:
    from tests.data.make_fixtures import dicom_bytes
    ramp = np.add.outer(np.arange(rows), np.arange(cols)) % 4096
    scan, suffix = dicom_bytes(ramp, photometric="MONOCHROME1", slope=0.5, intercept=-100.0,
                               center=800.0, width=1600.0), "dcm"
    del ramp
from service.inference import create_app
app = create_app()
client = app.test_client()
while client.get("/readyz").status_code != 200:
    time.sleep(0.05)
{measure}
started = time.perf_counter()
files = [(io.BytesIO(scan), f"{{i}}.{{suffix}}") for i in range(n)]
response = client.post("/v1/models/{model}:predict", data={{"file": files}})
seconds = time.perf_counter() - started
status = response.status_code
peak = status_mb("VmHWM")
del files, response
print(json.dumps({{"status": status, "scan_bytes": len(scan), "rss_before_mb": before,
                  "peak_rise_mb": peak - before, "kept_mb": status_mb("VmRSS") - before,
                  "seconds": seconds}}))
"""

HEATMAP_CHILD = """
import json, sys, time
sys.path.insert(0, {repo!r})
import numpy as np
from service.inference.explain import heatmap_png
cam = np.random.default_rng(0).random((7, 7)).astype(np.float32)
heatmap_png(cam, 8, 8)
{measure}
started = time.perf_counter()
encoded = heatmap_png(cam, {side}, {side})
seconds = time.perf_counter() - started
peak = status_mb("VmHWM")
print(json.dumps(
    {{"seconds": seconds, "peak_rise_mb": peak - before, "base64_mb": len(encoded) / 1e6}}
))
"""


def child(code: str, env: dict[str, str]) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def spread(runs: list[dict[str, float]]) -> str:
    rises = ", ".join(f"{r['peak_rise_mb']:.0f}" for r in runs)
    times = ", ".join(f"{r['seconds']:.2f}" for r in runs)
    return f"peak rise {rises} MB, {times} s"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--side", type=int, default=4000)
    parser.add_argument(
        "--dicom-shape",
        type=int,
        nargs=2,
        default=[4096, 3328],
        metavar=("ROWS", "COLUMNS"),
        help="0 0 skips the DICOM request",
    )
    parser.add_argument("--heatmap-sides", type=int, nargs="*", default=[2000, 4000, 8000])
    parser.add_argument("--repeat", type=int, default=3)
    options = parser.parse_args()

    from bench import harness
    from service.registry import Registry
    from service.storage import open_store

    with tempfile.TemporaryDirectory(prefix="scantune-bench-") as tmp:
        work = Path(tmp)
        model_dir, card = harness.build_model(work)
        artifacts = (work / "artifacts").as_uri()
        registry = Registry(open_store(artifacts))
        registry.publish(harness.MODEL, 1, model_dir, card)
        registry.set_alias(harness.MODEL, "production", 1, actor="bench")
        env = {
            "PATH": "/usr/bin:/bin",
            "SCANTUNE_ARTIFACT_URI": artifacts,
            "SCANTUNE_AUTH_DISABLED": "true",
            "SCANTUNE_LOG_LEVEL": "WARNING",
            "SCANTUNE_PRELOAD_MODELS": json.dumps([harness.MODEL]),
        }
        requests = [(files, options.side, options.side, "png") for files in options.files]
        if all(options.dicom_shape):
            requests.append((1, *options.dicom_shape, "dicom"))
        for files, rows, cols, kind in requests:
            code = PREDICT_CHILD.format(
                repo=str(REPO), files=files, rows=rows, cols=cols, kind=kind, model=harness.MODEL,
                measure=MEASURE,
            )  # fmt: skip
            runs = [child(code, env) for _ in range(options.repeat)]
            kept = ", ".join(f"{r['kept_mb']:.0f}" for r in runs)
            print(
                f"predict {files} x {cols}x{rows} {kind.upper()} ({runs[0]['scan_bytes']} B"
                f" each), status {runs[0]['status']}: RSS before {runs[0]['rss_before_mb']:.0f} MB,"
                f" {spread(runs)}, kept {kept} MB"
            )
        for side in options.heatmap_sides:
            code = HEATMAP_CHILD.format(repo=str(REPO), side=side, measure=MEASURE)
            runs = [child(code, env) for _ in range(options.repeat)]
            print(f"heatmap {side}x{side}: {spread(runs)}, base64 {runs[0]['base64_mb']:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
