"""Benchmark: what a larger input or a larger backbone costs, per training step and per image.

Not a test. Issue 21 asks what each input resolution costs (the 28 px scans upsampled to 64,
96, 128, 224) and which packaged backbones are worth their time. For each backbone and size
this times one optimizer step of the default batch (64 scans, every layer training, AdamW)
and onnxruntime's per-image latency of the exported model (batch 32), median of a few runs,
and projects the default job's wall time on the full shared set by scaling its measured time
(`--job-s`, docs/benchmarks.md: 224 s for efficientnet_lite0 at 64 px) by the step-time ratio.

    python bench/resolution_cost.py [--models efficientnet_lite0,...] [--sizes 64,96,128,224]
        [--job-s 224]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from bench.onnx_cost import exported_session, ms_per_image
from models.finetune import build_model
from models.spec import JobSpec


def spec_for(base_model: str, size: int) -> JobSpec:
    return JobSpec.model_validate(
        {
            "model_name": "bench-cost",
            "base_model": base_model,
            "image_size": size,
            "dataset": {"uri": "unused.npz", "format": "npz", "classes": ["a", "b"]},
        }
    )


def step_seconds(spec: JobSpec, repeats: int) -> float:
    model = build_model(spec, 2).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.rand(spec.recipe.batch_size, 1, spec.image_size, spec.image_size)
    y = torch.randint(0, 2, (spec.recipe.batch_size,))
    times = []
    for i in range(repeats + 2):
        start = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if i >= 2:  # the first steps allocate
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def image_ms(spec: JobSpec, repeats: int) -> float:
    session, _ = exported_session(build_model(spec, 2).eval(), spec.image_size, 1)
    return ms_per_image(session, 32, spec.image_size, 1, repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="efficientnet_lite0,efficientnet_lite1")
    parser.add_argument("--sizes", default="64,96,128,224")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--job-s", type=float, default=224.0, help="the first row's job time")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    base = None
    for name in args.models.split(","):
        for size in (int(s) for s in args.sizes.split(",")):
            spec = spec_for(name, size)
            step = step_seconds(spec, args.repeats)
            base = base or step
            row = {
                "model": name,
                "size": size,
                "step_s": round(step, 3),
                "step_vs_first": round(step / base, 2),
                "full_job_min": round(args.job_s * step / base / 60, 1),
                "onnx_ms_per_image": round(image_ms(spec, 3 * args.repeats), 2),
            }
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
