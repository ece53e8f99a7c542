"""What giving onnxruntime's CPU arena memory back after a big run costs, and saves.

Not a test. `SCANTUNE_ORT_ARENA_KEEP_BATCH` makes a run of more images than it gives the
memory it took from the session's CPU arena back when it ends (the run option
`memory.enable_memory_arena_shrinkage`), so one many-file request does not leave a worker
larger for good. The next such run takes that memory from the system again. For the
benchmark's EfficientNet-Lite0 (224 px, one channel) on a single-threaded session built as
the service builds it (`service.inference.sessions.create_session`), in two fresh processes
(the arena kept, the arena given back), for each batch size: the CPU per image of a run of
that batch, each right after a batch-1 run (the steady state of a busy worker), median of
--rounds; and the process's RSS after them all.

    python bench/arena.py --batches 2 8 32 --rounds 10
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

CHILD = """
import json, os, statistics, sys, time
sys.path.insert(0, {repo!r})
import numpy as np, onnxruntime as ort
from service.config import InferenceSettings
from service.inference.sessions import create_session
session = create_session(open({onnx!r}, "rb").read(), InferenceSettings(), 1)
name = session.get_inputs()[0].name
options = ort.RunOptions()
if {give_back}:
    options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
out = {{}}
for batch in {batches}:
    images = np.zeros((batch, 1, 224, 224), np.float32)
    for _ in range(2):
        session.run(None, {{name: images}}, options)
    seconds = []
    for _ in range({rounds}):
        session.run(None, {{name: images[:1]}})
        started = time.process_time()
        session.run(None, {{name: images}}, options)
        seconds.append(time.process_time() - started)
    out[batch] = statistics.median(seconds) * 1000 / batch
from bench.harness import rss_mb
print(json.dumps({{"ms_per_image": out, "rss_mb": rss_mb(os.getpid())}}))
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[2, 8, 32])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=2, help="process pairs, alternated")
    args = parser.parse_args()

    from bench import harness

    with tempfile.TemporaryDirectory(prefix="scantune-arena-") as tmp:
        model_dir, _ = harness.build_model(Path(tmp))
        for _ in range(args.repeat):
            for give_back in (False, True):
                code = CHILD.format(
                    repo=str(Path(__file__).resolve().parent.parent),
                    onnx=str(model_dir / "model.onnx"), give_back=give_back,
                    batches=args.batches, rounds=args.rounds,
                )  # fmt: skip
                done = subprocess.run(
                    [sys.executable, "-c", code], capture_output=True, text=True, check=True
                )
                result = json.loads(done.stdout.strip().splitlines()[-1])
                per_image = " ".join(
                    f"batch {b}: {ms:.2f}" for b, ms in result["ms_per_image"].items()
                )
                kind = "given back" if give_back else "kept      "
                print(f"arena {kind}  ms/image {per_image}; RSS after {result['rss_mb']:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
