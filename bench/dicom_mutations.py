"""Random mutations of a scan, decoded the way the services decode uploads.

Not a test: a robustness check whose findings are in the README (GDCM), `models.scans.dicom` (the
JPEG 2000 box walk) and docs/benchmarks.md. Each round runs in a child process, which
mutates FILE (bytes changed, cut or inserted) and decodes every mutation with
`models.scans.decode`, counting decodes and refusals (ImageDecodeError; among them, those
where the JPEG Lossless and JPEG-LS helper process crashed or hung and was restarted); any
other exception ends the child with its traceback. The parent reports how the child ended: done,
killed by a signal (a crash), or still busy after --timeout seconds (a hang).

By default FILE is a compressed DICOM and only its first frame is mutated (sometimes Rows or
Columns changed too); `--whole` mutates the whole file instead (a DICOM's header, or a PNG
or JPEG). `--make jpeg|jpeg2000|rle` writes FILE first: a 128x128 crop of a test scan as a
JPEG baseline, JPEG 2000 (JP2 boxes) or RLE DICOM, by the helpers of
`tests/data/make_fixtures.py`. `--plugin` names a pydicom plugin to force (as `gdcm`, where
installed), else the services' own choice (JPEG Lossless and JPEG-LS: GDCM in its helper
process, `models.scans.gdcm_helper`). `--keep PATH` writes each mutation to PATH.<seed> before
decoding it, so the one a crash or hang stopped at is left there.

    python bench/dicom_mutations.py tests/data/images/normal_0_jpeg_ls.dcm --plugin gdcm
    python bench/dicom_mutations.py /tmp/j2k.dcm --make jpeg2000
    python bench/dicom_mutations.py tests/data/images/normal_0_rescale.dcm --whole
"""

from __future__ import annotations

import argparse
import io
import random
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def mutate(frame: bytes, rng: random.Random) -> bytes:
    data = bytearray(frame)
    for _ in range(rng.randint(1, 8)):
        kind, pos = rng.random(), rng.randrange(len(data))
        if kind < 0.6:
            data[pos] = rng.randrange(256)
        elif kind < 0.8:
            del data[pos : pos + rng.randint(1, 16)]
        else:
            data[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
    return bytes(data)


def make(path: Path, kind: str) -> None:
    import importlib

    import numpy as np
    from PIL import Image

    fx = importlib.import_module("tests.data.make_fixtures")  # test helpers, not type-checked

    scan = np.asarray(Image.open(fx.OUT / "big_normal_0.png"))[:128, :128]
    if kind == "jpeg":
        data = fx.jpeg_baseline_dicom_bytes(scan)[0]
    elif kind == "jpeg2000":
        data = fx.jpeg2000_dicom_bytes(scan)[0]
    else:
        data = fx.colour_dicom_bytes(np.stack([scan] * 3, axis=-1), syntax="1.2.840.10008.1.2.5")
    path.write_bytes(data)


def child(path: Path, seed: int, count: int, plugin: str, whole: bool, keep: str) -> None:
    import importlib

    if plugin == "gdcm":  # before models.scans.configure keeps pydicom from finding it
        importlib.import_module("gdcm")
    from models import scans
    from models.scans import dicom

    scans.configure()

    if plugin:  # force it, as if the services trusted it
        dicom.TRUSTED_PLUGINS = (plugin,)
    raw = path.read_bytes()
    rng = random.Random(seed)
    mutations = (mutate(raw, rng) for _ in range(count)) if whole else _frames(raw, rng, count)
    name = path.name if whole else "mutated.dcm"
    decoded = refused = stopped = 0
    for i, data in enumerate(mutations):
        print(i, flush=True)  # the parent reads how far it got
        if keep:  # the mutation about to be decoded: after a crash, the one that did it
            Path(f"{keep}.{seed}").write_bytes(data)
        try:
            scans.decode(data, name)
            decoded += 1
        except scans.ImageDecodeError as exc:
            refused += 1
            stopped += "the decoder process" in exc.reason or "decoding took over" in exc.reason
    print(f"done decoded={decoded} refused={refused} (helper stopped: {stopped})", flush=True)


def _frames(raw: bytes, rng: random.Random, count: int) -> Iterator[bytes]:
    """The DICOM file `raw` with its first frame mutated, and sometimes Rows or Columns."""
    import pydicom
    from pydicom.encaps import encapsulate, get_frame

    frame = bytes(get_frame(pydicom.dcmread(io.BytesIO(raw)).PixelData, 0))
    for _ in range(count):
        ds = pydicom.dcmread(io.BytesIO(raw))
        ds.PixelData = encapsulate([mutate(frame, rng)])
        if rng.random() < 0.3:
            ds.Rows = rng.choice([1, 27, 28, 29, 300])
        if rng.random() < 0.2:
            ds.Columns = rng.choice([1, 27, 28, 29, 300])
        buf = io.BytesIO()
        ds.save_as(buf)
        yield buf.getvalue()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file", type=Path)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--count", type=int, default=1500, help="mutations per seed")
    parser.add_argument("--timeout", type=float, default=300)
    parser.add_argument("--plugin", default="")
    parser.add_argument("--whole", action="store_true", help="mutate the whole file")
    parser.add_argument("--make", choices=["jpeg", "jpeg2000", "rle"])
    parser.add_argument("--keep", default="", help="write each mutation to KEEP.<seed> first")
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        child(args.file, args.child, args.count, args.plugin, args.whole, args.keep)
        return 0
    if args.make:
        make(args.file, args.make)
    for seed in range(1, args.seeds + 1):
        cmd = [sys.executable, __file__, str(args.file), "--child", str(seed),
               "--count", str(args.count), "--plugin", args.plugin, "--keep", args.keep,
               *(["--whole"] if args.whole else [])]  # fmt: skip
        try:
            run = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
            lines, code = run.stdout.split(), run.returncode
        except subprocess.TimeoutExpired as busy:
            out = busy.stdout or b""
            text = out.decode() if isinstance(out, bytes) else out
            print(f"seed {seed}: still busy after {args.timeout:.0f} s on mutation "
                  f"{text.split()[-1] if text.split() else 0}")  # fmt: skip
            continue
        if code < 0:
            print(f"seed {seed}: killed by {signal.Signals(-code).name} on mutation {lines[-1]}")
        else:
            print(f"seed {seed}: exit {code}, {run.stdout.strip().splitlines()[-1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
