"""What decoding JPEG Lossless and JPEG-LS DICOM in GDCM's helper process costs.

Not a test. For a 28x28 test scan and a mammogram-sized one (a test scan upscaled to 4096 rows
x 3328 columns of 12-bit values with a little noise, as a CR or mammography unit writes it),
each recompressed by DCMTK (`dcmcjpeg`: JPEG Lossless; `dcmcjpls`: JPEG-LS lossless), prints:

- first scan: `models.scans.decode` in a process whose helper is not running yet, so the
  helper's start (a Python with numpy, pydicom and GDCM) is in it; median of --starts;
- frame by the helper: `models.helper_pool.decode` once the helper runs (the stored values
  of the first frame, no LUTs); median of --runs;
- frame in-process: pydicom's GDCM plugin in this process, as the services never decode
  (valid files only here): the difference is the helper's price per scan;
- whole decode: `models.scans.decode` with the helper running (the frame, then the
  rescale, window and scaling to [0, 1]);
- the helper's resident memory after the big scans (VmRSS and VmHWM);
- side by side: --threads threads each decoding the big JPEG-LS scan --runs times at once
  (`scans.decode`, as a gthread worker's request threads do), with a pool of one helper
  (every thread waits for it, as before the pool) and of --threads helpers: scans per second.

Needs DCMTK's command-line tools (`apt-get install dcmtk`).

    python bench/dicom_helper.py --starts 5 --runs 10
"""

from __future__ import annotations

import argparse
import importlib
import io
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def sample_scans(work: Path) -> dict[str, bytes]:
    import numpy as np
    from PIL import Image

    fx: Any = importlib.import_module("tests.data.make_fixtures")
    rng = np.random.default_rng(0)
    small = fx.OUT / "normal_0_rescale.dcm"
    image = Image.open(fx.OUT / "big_normal_0.png").resize((3328, 4096), Image.Resampling.BICUBIC)
    values = np.asarray(image, dtype=np.float32) * 16 + rng.normal(0, 8, (4096, 3328))
    big = work / "big.dcm"
    stored = np.clip(values, 0, 4095).astype(np.uint16)
    big.write_bytes(
        fx.dicom_bytes(
            stored, photometric="MONOCHROME2", slope=1.0, intercept=0.0, center=2048.0, width=4096.0
        )
    )
    out = {}
    for label, source in (("28x28", small), ("4096x3328", big)):
        for syntax, tool in (("JPEG Lossless", "dcmcjpeg"), ("JPEG-LS", "dcmcjpls")):
            path = work / f"{label}-{tool}.dcm"
            fx.dcmtk_recompressed(source, path, tool)
            out[f"{label} {syntax}"] = path.read_bytes()
    return out


def median_s(run: Callable[[], Any], times: int) -> float:
    seconds = []
    for _ in range(times):
        started = time.perf_counter()
        run()
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds)


def in_process_gdcm(data: bytes) -> Any:
    import pydicom
    from pydicom.pixels import pixel_array

    return pixel_array(pydicom.dcmread(io.BytesIO(data)), index=0, decoding_plugin="gdcm")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--starts", type=int, default=5)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import gdcm  # noqa: F401  (before models.scans.configure keeps pydicom from finding it)

    from models import scans
    from models.scans import helper_pool

    scans.configure()

    with tempfile.TemporaryDirectory(prefix="scantune-helper-") as tmp:
        files = sample_scans(Path(tmp))
    print(f"{'scan':<26} {'bytes':>10} {'first scan':>11} {'frame by the helper':>20} "
          f"{'frame in-process':>17} {'whole decode':>13}")  # fmt: skip
    for label, data in files.items():

        def fresh(data: bytes = data) -> None:
            helper_pool.pool().close()
            scans.decode(data, "scan.dcm")

        first = median_s(fresh, args.starts)
        shape = tuple(in_process_gdcm(data).shape)
        frame = median_s(partial(helper_pool.decode, data, shape, "scan.dcm"), args.runs)
        inline = median_s(partial(in_process_gdcm, data), args.runs)
        whole = median_s(partial(scans.decode, data, "scan.dcm"), args.runs)
        print(f"{label:<26} {len(data):>10,} {first * 1000:>8.0f} ms {frame * 1000:>17.1f} ms"
              f" {inline * 1000:>14.1f} ms {whole * 1000:>10.1f} ms")  # fmt: skip
    (pid,) = helper_pool.pool().pids()
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    memory = {line.split(":")[0]: line.split()[1] for line in status if line.startswith("Vm")}
    print(f"helper pid {pid}: VmRSS {int(memory['VmRSS']) / 1024:.0f} MB, "
          f"VmHWM {int(memory['VmHWM']) / 1024:.0f} MB")  # fmt: skip
    helper_pool.pool().close()
    big = files["4096x3328 JPEG-LS"]
    for size in (1, args.threads):
        helper_pool.pool().resize(size)
        rate = side_by_side(big, args.threads, args.runs)
        print(f"side by side, {args.threads} threads, pool of {size}: {rate:.2f} scans/s")
        helper_pool.pool().close()
    return 0


def side_by_side(data: bytes, threads: int, runs: int) -> float:
    """Scans per second with `threads` threads decoding `data` at once (helpers started first)."""
    import threading

    from models import scans

    start = threading.Barrier(threads + 1)

    def decode_all() -> None:
        scans.decode(data, "warm.dcm")  # each thread's helper, if it gets one, starts here
        start.wait()
        for _ in range(runs):
            scans.decode(data, "scan.dcm")

    workers = [threading.Thread(target=decode_all) for _ in range(threads)]
    for worker in workers:
        worker.start()
    start.wait()
    started = time.perf_counter()
    for worker in workers:
        worker.join()
    return threads * runs / (time.perf_counter() - started)


if __name__ == "__main__":
    sys.exit(main())
