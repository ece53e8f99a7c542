"""Cold start and memory of the inference service with and without the master's imports.

Not a test. Under `scantune serve inference`, gunicorn's master imports the web side (and
boto3 for an S3 store) before it forks (`service.inference.gunicorn_conf`); with
`--config python:service.cores` alone, every worker imports them itself. This starts the
service's own gunicorn command both ways, interleaved, from a local artifact folder and from
S3 (moto's server on loopback), and prints the time from process start to /readyz 200 with
the model preloaded. Then, from the local folder, after 3 s of load at concurrency 8, the
memory of the master and of each worker from /proc/PID/smaps_rollup: RSS, PSS (shared pages
split between the processes that share them) and private dirty pages.

    python bench/cold_start.py --starts 15
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import inference as bench

CONFIGS = {
    "workers import (service.cores only)": "python:service.cores",
    "master imports first (default)": "python:service.inference.gunicorn_conf",
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--starts", type=int, default=15, help="per configuration and store")
    options = parser.parse_args()
    args = bench.parse_args([])  # the service's defaults
    body = bench.multipart_body(bench.IMAGE.read_bytes())
    with tempfile.TemporaryDirectory(prefix="scantune-cold-") as tmp:
        work = Path(tmp)
        model_dir, card = bench.build_model(work)
        local = bench.publish(model_dir, card, work / "artifacts")
        with bench.s3_store(model_dir, card) as (s3_uri, s3_env):
            stores = {"local folder": (local, {}), "S3 on moto": (s3_uri, s3_env)}
            for store, (uri, env) in stores.items():
                seconds: dict[str, list[float]] = {label: [] for label in CONFIGS}
                for i in range(options.starts):
                    for label, config in CONFIGS.items():
                        metrics = bench._mkdir(work / f"metrics-{store[:5]}-{i}-{config[7:]}")
                        server = bench.Server(uri, args, metrics, "gunicorn", env, config)
                        try:
                            seconds[label].append(server.wait_ready())
                        finally:
                            server.stop()
                print(f"cold start to ready, {store}, {options.starts} starts each:")
                for label, values in seconds.items():
                    print(f"  {label}: median {statistics.median(values):.3f} s "
                          f"(range {min(values):.3f}-{max(values):.3f})")  # fmt: skip
        print("memory after 3 s at c=8, local folder (MB):")
        for label, config in CONFIGS.items():
            server = bench.Server(local, args, bench._mkdir(work / f"metrics-mem-{config[7:]}"),
                                  "gunicorn", None, config)  # fmt: skip
            try:
                server.wait_ready()
                bench.load(server.port, body, 8, seconds=3, client=args.client)
                master = smaps(server.proc.pid)
                workers = [smaps(pid) for pid in server.worker_pids()]
            finally:
                server.stop()
            total = master["Pss"] + sum(w["Pss"] for w in workers)
            print(f"  {label}: master {fmt(master)}; workers "
                  f"{'; '.join(fmt(w) for w in workers)}; PSS of all {total:.0f}")  # fmt: skip
    return 0


def smaps(pid: int) -> dict[str, float]:
    fields = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, _, value = line.partition(":")
        fields[key] = int(value.split()[0]) / 1024
    return fields


def fmt(fields: dict[str, float]) -> str:
    return (f"RSS {fields['Rss']:.0f} PSS {fields['Pss']:.0f} "
            f"private dirty {fields['Private_Dirty']:.0f}")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
