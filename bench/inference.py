"""Inference benchmark: raw onnxruntime in-process (the limit) versus the service over HTTP.

Not a test. One model (EfficientNet-Lite0 at 224 px, 1 channel, exported by the trainer's
exporter: ImageNet-pretrained backbone, untrained 2-class head) and the same 512x512 PNG for
every request. Measures:

- the limit: decode + preprocess + onnxruntime run in as many single-threaded processes as
  there are cores, summed (req/s);
- an in-process single-image run using all cores (p50), the reference for concurrency 1;
- the service under gunicorn over loopback HTTP at concurrency 1, 8, 32: req/s, p50, p99,
  and its CPU time per request at each concurrency (all gunicorn processes, from /proc);
- two references at concurrency 8, so every run shows what a framework and gunicorn alone
  reach: the one the issue names, a minimal Flask classifier (`bench/minimal_app.py`, one sync
  worker per core), and a framework-free one, a bare WSGI classifier (`bench/bare_app.py`,
  in the service's layout, one sync worker per core; `bench/compare.py` measures both in
  other layouts);
- cold start (process start to /readyz 200 with the model preloaded), from a local artifact
  folder and, with --s3-cold-starts, from S3 (moto's server on loopback, which shares the
  cores and serves the 14 MB model slower than S3 would);
- resident memory per worker, sampled over --memory-requests requests (flat or not).

The load generator is wrk (a C client in its own process, so the service's share of the
cores is not spent on the client; the limit has no client at all); without wrk on PATH, or
with --client python, closed-loop Python threads on keep-alive connections instead.

The machine's speed drifts by tens of percent over minutes (shared virtual CPUs), so each
figure is compared only with its reference measured right before it: every block runs the
limit then the service at concurrency 8 and 32, then the single-image run then the service at
concurrency 1, for --seconds each; ratios and differences are per block, then the median.

    python bench/inference.py --blocks 6 --seconds 6 --memory-requests 10000 --out bench.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import (
    CONTENT_TYPE,
    IMAGE,
    build_model,
    in_process,
    load,
    loadavg,
    mkdir,
    multipart_body,
    publish,
    rss_mb,
)
from bench.servers import (
    REFERENCES,
    ReferenceServer,
    Server,
    add_service_options,
    cold_start,
    measured,
    reference,
    s3_store,
)


def main() -> int:
    args = parse_args()
    cores = os.cpu_count() or 1
    results: dict[str, Any] = {"cores": cores, "config": vars(args) | {"out": str(args.out)}}
    png = IMAGE.read_bytes()
    body = png if args.raw else multipart_body(png)
    content_type = "image/png" if args.raw else CONTENT_TYPE
    with tempfile.TemporaryDirectory(prefix="scantune-bench-") as tmp:
        work = Path(tmp)
        model_dir, card = build_model(work)
        uri = publish(model_dir, card, work / "artifacts")
        onnx = (model_dir / "model.onnx").read_bytes()
        results["loadavg_start"] = loadavg()
        for entry in ("gunicorn", "scantune"):
            results[f"cold_start_{entry}_s"] = [
                cold_start(uri, args, work / f"metrics-{entry}{i}", entry)
                for i in range(args.cold_starts)
            ]
        if args.s3_cold_starts:
            results["cold_start_s3_s"] = s3_cold_starts(model_dir, card, args, work)
        refs: dict[str, ReferenceServer] = {}
        if args.references:
            card_path = work / "card.json"
            card_path.write_text(card.to_json())
            refs = {label: reference(label, model_dir, card_path, cores) for label in REFERENCES}
        server = Server(uri, args, mkdir(work / "metrics"))
        try:
            server.wait_ready()
            load(server.port, body, 4, seconds=2, client=args.client, content_type=content_type)
            for ref in refs.values():
                ref.wait_ready()
                load(ref.port, body, 4, seconds=2, client=args.client, content_type=content_type)
            results["blocks"] = [
                one_block(server, refs, onnx, card, png, body, args, cores)
                for _ in range(args.blocks)
            ]
            if args.memory_requests:
                results["memory"] = memory_run(server, body, args)
        finally:
            server.stop()
            for ref in refs.values():
                ref.stop()
        results["loadavg_end"] = loadavg()
    summarise(results)
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_service_options(parser)
    parser.add_argument("--blocks", type=int, default=6, help="interleaved measurement blocks")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[8, 32],
                        help="compared with the limit (concurrency 1 always runs)")  # fmt: skip
    parser.add_argument("--cold-starts", type=int, default=5)
    parser.add_argument("--s3-cold-starts", type=int, default=0,
                        help="cold starts from S3 on moto's server (a dev dependency)")  # fmt: skip
    parser.add_argument("--memory-requests", type=int, default=10_000)
    parser.add_argument(
        "--raw", action="store_true", help="send the PNG as a raw image/png body, not multipart"
    )
    parser.add_argument("--no-references", dest="references", action="store_false",
                        help="skip the minimal Flask and bare WSGI references")  # fmt: skip
    parser.add_argument("--out", type=Path, help="write the figures as JSON here")
    return parser.parse_args(argv)


def content_type_of(args: argparse.Namespace) -> str:
    return "image/png" if args.raw else CONTENT_TYPE


def s3_cold_starts(model_dir: Path, card: Any, args: argparse.Namespace, work: Path) -> list[float]:
    """Cold starts of `scantune serve inference` from an S3 store on moto."""
    with s3_store(model_dir, card) as (uri, env):
        return [
            cold_start(uri, args, work / f"metrics-s3-{i}", "scantune", env)
            for i in range(args.s3_cold_starts)
        ]


def one_block(server: Server, refs: dict[str, ReferenceServer], onnx: bytes, card: Any,
              png: bytes, body: bytes, args: argparse.Namespace,
              cores: int) -> dict[str, Any]:  # fmt: skip
    """Each service figure right after its in-process reference (the same machine speed)."""
    row: dict[str, Any] = {"loadavg": loadavg()}
    row["limit"] = in_process(onnx, card, png, args.seconds, cores, 1)
    row["http"] = [measured(server, body, c, args) for c in args.concurrency]
    for label, ref in refs.items():
        row[f"{label}_c8"] = measured(ref, body, 8, args)
    row["single_all_cores"] = in_process(onnx, card, png, args.seconds, 1, cores)
    row["http_c1"] = measured(server, body, 1, args)
    print(json.dumps(row), flush=True)
    return row


def memory_run(server: Server, body: bytes, args: argparse.Namespace) -> dict[str, Any]:
    """RSS of every worker at the start and after each tenth of --memory-requests (concurrency
    8; each tenth is timed from the rate of the one before, as wrk runs for a time)."""
    pids = server.worker_pids()
    samples = [[round(rss_mb(p), 1) for p in pids]]
    step = max(1, args.memory_requests // 10)
    rate = load(server.port, body, 8, seconds=2, client=args.client,
                content_type=content_type_of(args))["rps"]  # fmt: skip
    done = failures = 0
    while done < args.memory_requests:
        figures = load(server.port, body, 8, seconds=step / rate, requests=step,
                       client=args.client, content_type=content_type_of(args))  # fmt: skip
        done += int(figures["requests"])
        failures += int(figures["failures"])
        rate = figures["rps"]
        samples.append([round(rss_mb(p), 1) for p in pids])
    return {"requests": done, "failures": failures, "rss_mb_per_worker": samples}


def summarise(results: dict[str, Any]) -> None:
    print(f"\ncores {results['cores']}, load average {results['loadavg_start']} -> "
          f"{results['loadavg_end']}, client {results['config']['client']}")  # fmt: skip
    for i, row in enumerate(results["blocks"]):
        limit, single = row["limit"]["rps"], row["single_all_cores"]["p50_ms"]
        print(f"block {i + 1} (load {row['loadavg']}): limit {limit:.1f} req/s, "
              f"single image all cores p50 {single:.1f} ms")  # fmt: skip
        print(f"  limit CPU {row['limit']['cpu_ms']:.2f} ms per image")
        rows = [("HTTP", row["http_c1"]), *(("HTTP", h) for h in row["http"])]
        rows += [(label, row[f"{label}_c8"]) for label in REFERENCES if f"{label}_c8" in row]
        for label, h in rows:
            versus = (f"{h['p50_ms'] - single:+.1f} ms vs single" if h["concurrency"] == 1
                      else f"{h['rps'] / limit:.2f}x limit")  # fmt: skip
            print(f"  {label} c={h['concurrency']:>2}: {h['rps']:6.1f} req/s ({versus}), "
                  f"p50 {h['p50_ms']:.1f} ms, p99 {h['p99_ms']:.1f} ms, "
                  f"CPU {h['cpu_ms']:.2f} ms/request, failures {h['failures']}")  # fmt: skip
    for c in results["config"]["concurrency"]:
        ratios = [h["rps"] / r["limit"]["rps"] for r in results["blocks"] for h in r["http"]
                  if h["concurrency"] == c]  # fmt: skip
        print(f"c={c}: median {statistics.median(ratios):.2f}x limit "
              f"(range {min(ratios):.2f}-{max(ratios):.2f})")  # fmt: skip
    for label, title in REFERENCES.items():
        ratios = [r[f"{label}_c8"]["rps"] / r["limit"]["rps"] for r in results["blocks"]
                  if f"{label}_c8" in r]  # fmt: skip
        if ratios:
            print(f"{title} c=8: median {statistics.median(ratios):.2f}x limit "
                  f"(range {min(ratios):.2f}-{max(ratios):.2f})")  # fmt: skip
    first = results["config"]["concurrency"][0]
    extra = [r["http"][0]["cpu_ms"] - r["limit"]["cpu_ms"] for r in results["blocks"]]
    print(f"service CPU per request beyond the limit's per image, c={first}: "
          f"median {statistics.median(extra):+.2f} ms")  # fmt: skip
    deltas = [r["http_c1"]["p50_ms"] - r["single_all_cores"]["p50_ms"] for r in results["blocks"]]
    print(f"c=1 p50 minus single-image all-core p50: median {statistics.median(deltas):+.1f} ms "
          f"(range {min(deltas):+.1f} to {max(deltas):+.1f})")  # fmt: skip
    for entry in ("gunicorn", "scantune", "s3"):
        if f"cold_start_{entry}_s" in results:
            figures = [round(x, 3) for x in results[f"cold_start_{entry}_s"]]
            label = "scantune from S3 on moto" if entry == "s3" else entry
            print(f"cold start to ready, {label} (s):", figures)
    memory = results.get("memory")
    if memory:
        print(f"RSS per worker over {memory['requests']} requests "
              f"({memory['failures']} failed), MB:", memory["rss_mb_per_worker"])  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
