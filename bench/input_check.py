"""Benchmark: the per-scan input check (`models.input_profile`) on the shared scans.

Not a test. Profiles PneumoniaMNIST's training split as a job would (`models.data` prepares
the scans; `input_profile.profile` on them), then reports the share of scans flagged
atypical: the validation split (about 0.5 % expected), mild acquisition shifts of it
(`bench/shifts.py`: flagging them is not the aim), and inputs unlike chest X-rays, each made
from the decoded validation scans or drawn, and prepared as the inference service prepares an
upload (`scans.prepare` and `colourfulness` of the decoded image). Another anatomy: the CT and
MR slices that ship inside pydicom (`pydicom.data`), decoded by `models.scans`. Then the
check's own cost: profiling, and scoring one scan.

    python bench/input_check.py [--size 64] [--channels 1] [--data NPZ]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from models import scans
from models.data import Dataset, Split, load_dataset
from models.input_profile import Checker, colourfulness, profile
from models.spec import DatasetSpec

DEFAULT_DATA = (
    Path(__file__).resolve().parents[2] / "shared/data/pneumoniamnist/pneumoniamnist_trainval.npz"
)
Decoded = list[np.ndarray]


def main() -> int:
    args = parse_args()
    data = load(args.data, args.size, args.channels)
    started = time.perf_counter()
    found = profile(data.train, data.val)
    seconds = time.perf_counter() - started
    assert found is not None
    checker = Checker(found)
    print(f"{len(data.train.images)} training scans at {args.size} px, {args.channels} channel(s)")
    print(
        f"profiled in {seconds:.2f} s; limit {found.limit:.3f}; card JSON "
        f"{len(found.model_dump_json())} bytes"
    )
    rows = [("training (in-sample)", checker.scores_of(data.train.images, data.train.colour))]
    rows.append(("validation", checker.scores_of(data.val.images, data.val.colour)))
    rows.append(("held out: 5 folds of train + val", held_out(data.train, data.val)))
    rows += shifted(checker, data.val.images)
    val = [np.asarray(im, np.float32) / 255 for im in np.load(args.data)["val_images"]]
    for name, make in foreign(np.random.default_rng(0)).items():
        rows.append((name, score_decoded(checker, make(val), args.size, args.channels)))
    slices = score_decoded(checker, anatomy(), args.size, args.channels)
    rows.append(("CT and MR slices (pydicom's)", slices))
    print("\n| input | scans | flagged | median score / limit |\n| --- | ---: | ---: | ---: |")
    for name, scores in rows:
        limit = 1.0 if name.startswith("held out") else found.limit
        relative = scores / limit
        print(
            f"| {name} | {len(scores)} | {np.mean(relative > 1):.1%} | {np.median(relative):.2f} |"
        )
    cost(checker, args.size, args.channels)
    return 0


@dataclass
class Scans:
    images: np.ndarray
    colour: np.ndarray | None = None


def load(path: Path, size: int, channels: int) -> Dataset:
    with tempfile.TemporaryDirectory() as tmp:
        spec = DatasetSpec(uri=str(path), format="npz", classes=["normal", "pneumonia"])
        return load_dataset(spec, size=size, channels=channels, cache_dir=Path(tmp))


def held_out(train: Split, val: Split, folds: int = 5) -> np.ndarray:
    """Each scan of train + val scored by a profile of the other folds: the flag rate on
    scans the profile did not see, on ten times the validation split's scans."""
    images = np.concatenate([train.images, val.images])
    colour = np.concatenate([train.colour, val.colour])  # type: ignore[list-item]
    fold = np.random.default_rng(0).permutation(len(images)) % folds
    scores = np.empty(len(images), np.float32)
    for k in range(folds):
        fitted = profile(Scans(images[fold != k], colour[fold != k]))
        assert fitted is not None
        scores[fold == k] = Checker(fitted).scores_of(images[fold == k], colour[fold == k])
        scores[fold == k] /= fitted.limit  # each fold against its own limit
    return scores


def shifted(checker: Checker, images: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """The validation scans under `bench/shifts.py`'s simulated acquisition shifts."""
    from bench.shifts import acquisition_shifts

    return [
        (f"val, shift {name}", checker.scores_of(view, None))
        for name, view in acquisition_shifts(images).items()
    ]


def foreign(rng: np.random.Generator) -> dict[str, Callable[[Decoded], Decoded]]:
    """Inputs unlike the training scans, each from the decoded validation scans or drawn."""
    n = 200
    return {
        "val inverted (MONOCHROME1 misread)": lambda val: [1.0 - im for im in val],
        "val rotated 90 degrees": lambda val: [np.rot90(im).copy() for im in val],
        "val upside down": lambda val: [np.flipud(im).copy() for im in val],
        "val mirrored left-right": lambda val: [np.fliplr(im).copy() for im in val],
        "val cropped to the centre half, zoomed": lambda val: [im[7:21, 7:21] for im in val],
        "val tinted sepia (colour file)": lambda val: [
            np.stack([im, im * 0.8, im * 0.6], -1) for im in val
        ],
        "blank (black, white, gray)": lambda val: [
            np.full((512, 512), v, np.float32) for v in np.linspace(0, 1, n)
        ],
        "uniform noise, 512 px": lambda val: [rng.random((512, 512), np.float32) for _ in range(n)],
        "uniform noise, 28 px": lambda val: [rng.random((28, 28), np.float32) for _ in range(n)],
        "colour photo-like": lambda val: [photo(rng) for _ in range(n)],
        "the photo in grayscale": lambda val: [
            photo(rng) @ scans.preprocess.LUMA for _ in range(n)
        ],
        "scanned text page": lambda val: [document(rng) for _ in range(n)],
    }


def photo(rng: np.random.Generator, size: int = 256) -> np.ndarray:
    """A photo-like colour image: a sky-to-ground gradient and a few coloured blobs."""
    y, x = np.mgrid[0:size, 0:size] / size
    sky, ground = rng.random(3), rng.random(3)
    image = (1 - y)[..., None] * sky + y[..., None] * ground
    for _ in range(rng.integers(3, 8)):
        cy, cx, r = rng.random(), rng.random(), rng.uniform(0.05, 0.25)
        image[(y - cy) ** 2 + (x - cx) ** 2 < r * r] = rng.random(3)
    noisy = image + rng.normal(0, 0.02, image.shape)
    return np.clip(noisy, 0, 1).astype(np.float32)


def document(rng: np.random.Generator, size: int = 512) -> np.ndarray:
    """A scanned page of text: dark word-like bars in lines on an off-white page."""
    page = np.full((size, size), rng.uniform(0.85, 0.98), np.float32)
    for top in range(40, size - 40, 18):
        left = 40
        while left < size - 80:
            width = int(rng.integers(15, 60))
            page[top : top + 9, left : left + width] = rng.uniform(0.05, 0.3)
            left += width + 8
    return page


def anatomy() -> Decoded:
    """CT and MR slices that ship with pydicom, as `models.scans` decodes them."""
    from pydicom.data import get_testdata_file

    found = []
    for name in ("CT_small.dcm", "MR_small.dcm", "liver_1frame.dcm", "JPEG2000.dcm"):
        path = get_testdata_file(name, download=False)
        if path is not None:
            found.append(scans.read_file(Path(str(path))))
    return found


def score_decoded(checker: Checker, images: Decoded, size: int, channels: int) -> np.ndarray:
    """Each decoded image scored as the inference service scores an upload."""
    return np.array(
        [checker.score(scans.prepare(im, size, channels), colourfulness(im)) for im in images]
    )


def cost(checker: Checker, size: int, channels: int) -> None:
    """Microseconds to score one prepared scan (and, for a colour upload, to sample it)."""
    print("\nper scan, one core:")
    rng = np.random.default_rng(1)
    for side in sorted({size, 224}):
        sized = checker
        if side != size:  # a reference at that size, for the cost of a larger input
            fitted = profile(Scans(rng.random((64, channels, side, side), np.float32)))
            assert fitted is not None
            sized = Checker(fitted)
        image = rng.random((channels, side, side), np.float32)
        micros = timed(partial(sized.score, image, 0.0))
        print(f"  score at {side} px: {micros:.0f} us")
    upload = rng.random((512, 512, 3), np.float32)
    micros = timed(partial(colourfulness, upload))
    print(f"  colourfulness of a 512x512 colour upload: {micros:.0f} us")


def timed(call: Callable[[], object], repeats: int = 2000) -> float:
    for _ in range(50):
        call()
    started = time.process_time()
    for _ in range(repeats):
        call()
    return (time.process_time() - started) / repeats * 1e6


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--channels", type=int, choices=(1, 3), default=1)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    return parser.parse_args()


if __name__ == "__main__":
    sys.exit(main())
