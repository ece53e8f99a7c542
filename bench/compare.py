"""Where the service's distance from the limit comes from: the service against the bare WSGI
classifier (`bench/bare_app.py`) in several gunicorn layouts, interleaved with the limit.

Not a test. The same model, image, limit and load as `bench/inference.py`. Each block runs
the limit, then at concurrency 8 the service in its two layouts (the default, one sync worker
per core; and one gthread worker with batch runners) and the bare classifier in the same two
(one gthread worker with two threads per core; one sync worker per core); then the
single-image all-core reference, then at concurrency 1 the service in both layouts and the
bare classifier in one sync worker with an all-core session. Ratios, CPU per request beyond
the limit's per image and c=1 differences are per block; the summary gives their medians.
First, in this process, it splits the limit's per-image CPU time into decode, float
conversion, resize and normalisation, and the onnxruntime run (interleaved rounds, medians).

    python bench/compare.py --blocks 6 --seconds 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import harness, servers


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=5.0)
    options = parser.parse_args()
    args = servers.service_options(["--seconds", str(options.seconds)])  # the service's defaults
    cores = os.cpu_count() or 1
    png = harness.IMAGE.read_bytes()
    body = harness.multipart_body(png)
    with tempfile.TemporaryDirectory(prefix="scantune-compare-") as tmp:
        work = Path(tmp)
        model_dir, card = harness.build_model(work)
        uri = harness.publish(model_dir, card, work / "artifacts")
        onnx, card_path = (model_dir / "model.onnx").read_bytes(), work / "card.json"
        card_path.write_text(card.to_json())
        split_limit(onnx, card, png)
        service = servers.Server(uri, args, harness.mkdir(work / "metrics"))
        threaded = servers.Server(uri, servers.service_options(["--worker-class", "gthread"]),
                                harness.mkdir(work / "metrics-gthread"))  # fmt: skip
        bare = "bench.bare_app:app"
        at_c8: dict[str, servers.Server] = {
            "service, sync worker per core (default)": service,
            "service, 1 gthread worker, runners": threaded,
            "bare, 1 gthread worker": servers.ReferenceServer(
                bare, model_dir / "model.onnx", card_path,
                ["--workers", "1", "--worker-class", "gthread", "--threads", str(2 * cores)],
            ),
            "bare, sync worker per core": servers.reference("bare", model_dir, card_path, cores),
        }  # fmt: skip
        at_c1: dict[str, servers.Server] = {
            "service, sync worker per core (default)": service,
            "service, 1 gthread worker, runners": threaded,
            "bare, 1 sync worker, all-core session": servers.ReferenceServer(
                bare, model_dir / "model.onnx", card_path, ["--worker-class", "sync"],
                intra_op=cores,
            ),
        }  # fmt: skip
        started = [*at_c8.values(), at_c1["bare, 1 sync worker, all-core session"]]
        try:
            for server in started:
                server.wait_ready()
                harness.load(server.port, body, 4, seconds=2, client=args.client)  # warm-up
            blocks = [
                one_block(at_c8, at_c1, onnx, card, png, body, args, cores)
                for _ in range(options.blocks)
            ]
        finally:
            for server in started:
                server.stop()
    summarise(blocks)
    return 0


def split_limit(onnx: bytes, card: Any, png: bytes, rounds: int = 10, runs: int = 15) -> None:
    """The limit's loop, and each of its steps on its own, in one single-threaded session."""
    import io
    import time

    import numpy as np
    from PIL import Image

    from bench import reference_model
    from models import scans

    session = reference_model.session(onnx, 1)
    image = Image.open(io.BytesIO(png))
    image.load()
    decoded = scans.decode(png, "bench.png")
    batch = scans.to_batch([decoded], card.input)
    steps = {
        "PNG decode (Pillow)": lambda: Image.open(io.BytesIO(png)).load(),
        "to float32 (numpy)": lambda: np.asarray(image, dtype=np.float32) / np.float32(255.0),
        "resize + normalise": lambda: scans.to_batch([decoded], card.input),
        "onnxruntime run": lambda: session.run(None, {card.outputs.input: batch}),
        "the whole loop": lambda: session.run(
            None, {card.outputs.input: scans.to_batch([scans.decode(png, "b")], card.input)}
        ),
    }
    times: dict[str, list[float]] = {label: [] for label in steps}
    for _ in range(rounds):
        for label, step in steps.items():
            step()
            started = time.process_time()
            for _ in range(runs):
                step()
            times[label].append((time.process_time() - started) / runs * 1000)
    whole = statistics.median(times["the whole loop"])
    print("the limit's CPU per image, by step (median):")
    for label, values in times.items():
        median = statistics.median(values)
        print(f"  {label}: {median:.2f} ms ({100 * median / whole:.0f}%)")


def one_block(at_c8: dict[str, servers.Server], at_c1: dict[str, servers.Server], onnx: bytes,
              card: Any, png: bytes, body: bytes, args: argparse.Namespace,
              cores: int) -> dict[str, Any]:  # fmt: skip
    limit = harness.in_process(onnx, card, png, args.seconds, cores, 1)
    c8 = {label: servers.measured(s, body, 8, args) for label, s in at_c8.items()}
    single = harness.in_process(onnx, card, png, args.seconds, 1, cores)
    c1 = {label: servers.measured(s, body, 1, args) for label, s in at_c1.items()}
    row = {
        "ratio": {label: f["rps"] / limit["rps"] for label, f in c8.items()},
        "extra_cpu_ms": {label: f["cpu_ms"] - limit["cpu_ms"] for label, f in c8.items()},
        "c1_delta_ms": {label: f["p50_ms"] - single["p50_ms"] for label, f in c1.items()},
    }
    print(f"limit {limit['rps']:.1f} req/s, {limit['cpu_ms']:.2f} ms CPU per image; "
          f"single p50 {single['p50_ms']:.1f} ms", flush=True)  # fmt: skip
    for label in c8:
        print(f"  c=8 {label}: {row['ratio'][label]:.3f}x, "
              f"CPU {row['extra_cpu_ms'][label]:+.2f} ms", flush=True)  # fmt: skip
    for label in c1:
        print(f"  c=1 {label}: {row['c1_delta_ms'][label]:+.1f} ms", flush=True)
    return row


def summarise(blocks: list[dict[str, Any]]) -> None:
    print(f"\nmedians over {len(blocks)} blocks")
    for label in blocks[0]["ratio"]:
        ratios = [b["ratio"][label] for b in blocks]
        extra = statistics.median(b["extra_cpu_ms"][label] for b in blocks)
        print(f"c=8 {label}: {statistics.median(ratios):.3f}x limit "
              f"({min(ratios):.2f}-{max(ratios):.2f}), CPU per request beyond the limit "
              f"{extra:+.2f} ms")  # fmt: skip
    for label in blocks[0]["c1_delta_ms"]:
        deltas = [b["c1_delta_ms"][label] for b in blocks]
        print(f"c=1 {label}: p50 {statistics.median(deltas):+.1f} ms over the single-image "
              f"run ({min(deltas):+.1f} to {max(deltas):+.1f})")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
