"""The per-scan input check: how unlike the training scans one scan's pixels are.

A model answers a hand X-ray, a photo, an inverted or a blank image with a confident class
all the same. At training, `profile` summarises the training scans as the trainer prepared
them (`models.scans.prepare`: (C, size, size) in [0, 1], before normalisation) into the
card's `InputProfile`; in service, `Checker.score` puts each scan's prepared image against
it. It is a statistic on pixels, not a guarantee: a scan under the limit may still be one
the model cannot read, and about 1 in 200 scans like the training ones is flagged.

The statistic (version 1), on the scan's gray plane (the mean of its channels), is the
largest of five distances, each divided by its own `QUANTILE` over the training scans:

- layout: the RMS z-score of a 16x16 area-averaged thumbnail, cell by cell, against the
  training thumbnails' mean and std (another exposure, anatomy or framing);
- structure: 1 - the correlation of that thumbnail with the training mean thumbnail, free of
  brightness and contrast (inverted, rotated, upside down; 1 for a uniform image);
- histogram: the RMS z-score of the 16-bin intensity histogram, bin by bin (blank, noise);
- texture: the |z-score| of the log mean difference between neighbouring pixels (noise,
  blank); histogram and texture sample the plane on a grid of at most 64 points a side;
- colour: the mean spread between the colour channels of the decoded scan, sampled on at
  most a 64x64 grid (`colourfulness`; 0 for a grayscale file), so that a colour photo is
  caught even by a model fed grayscale.

The limit is the statistic's `QUANTILE` over the training scans, so about 0.5% of scans like
them are flagged. numpy only: the inference service runs it on the image it already prepared.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import pairwise
from typing import Any, Protocol

import numpy as np

from models.card import InputProfile

PROFILE_VERSION = 1
"""The statistic's definition, recorded in the card: raise it whenever `Checker.score`
would give another value for some scan, so a service never compares a scan with a limit
measured by another statistic (it skips a profile whose version it does not know)."""
THUMBNAIL = 16
BINS = 16
QUANTILE = 0.995
GRID = 64
COMPONENTS = ("layout", "structure", "histogram", "texture", "colour")
# Floors on spreads, so a cell, bin or distance that never varies in training (a black
# border, an empty bin, gray scans' colour) does not flag the slightest change.
MIN_CELL_STD = 0.02
MIN_BIN_STD = 0.005
MIN_TEXTURE_STD = 0.05
MIN_SCALE = {"layout": 0.5, "structure": 0.01, "histogram": 0.5, "texture": 0.5, "colour": 0.03}
TEXTURE_EPS = 1e-3
CHUNK = 512  # scans featurised at once at training


class Scans(Protocol):
    """Prepared scans (N, C, size, size) in [0, 1] and each one's `colourfulness` (None: not
    measured, taken as grayscale), as `models.data.Split` holds them."""

    images: np.ndarray
    colour: np.ndarray | None


def colourfulness(decoded: np.ndarray) -> float:
    """Mean spread (max - min) between the colour channels of a decoded (H, W, 3) scan in
    [0, 1], on a grid of at most `GRID` points a side; 0.0 for a grayscale (H, W) one."""
    if decoded.ndim != 3:
        return 0.0
    step = -(-max(decoded.shape[:2]) // GRID)
    red, green, blue = (decoded[::step, ::step, c] for c in range(3))
    spread = np.maximum(np.maximum(red, green), blue) - np.minimum(np.minimum(red, green), blue)
    return float(spread.mean())


def profile(train: Scans, val: Scans | None = None) -> InputProfile | None:
    """The profile of `train`, with the share of `train` (and `val`) scans it flags; None
    without training scans."""
    if len(train.images) == 0:
        return None
    size = train.images.shape[-1]
    side = min(THUMBNAIL, size)
    thumbs, hists, texture = _in_chunks(train.images, pooling(side, size))
    reference = InputProfile(
        version=PROFILE_VERSION,
        limit=1.0,
        quantile=QUANTILE,
        scales=dict.fromkeys(COMPONENTS, 1.0),
        thumbnail_mean=_rounded(thumbs.mean(axis=0).reshape(side, side)),
        thumbnail_std=_rounded(np.maximum(thumbs.std(axis=0), MIN_CELL_STD).reshape(side, side)),
        histogram_mean=_rounded(hists.mean(axis=0)),
        histogram_std=_rounded(np.maximum(hists.std(axis=0), MIN_BIN_STD)),
        texture_mean=round(float(texture.mean()), 5),
        texture_std=round(max(float(texture.std()), MIN_TEXTURE_STD), 5),
        images=len(train.images),
        flagged_train=0.0,
    )
    raw = _chunked(Checker(reference).distances, train)
    quantiles = np.quantile(raw, QUANTILE, axis=0)
    scales = {
        c: round(max(float(q), MIN_SCALE[c]), 5) for c, q in zip(COMPONENTS, quantiles, strict=True)
    }
    checker = Checker(reference.model_copy(update={"scales": scales}))
    scores = _chunked(checker.scores_of, train)
    # At least 1: a scan is atypical only past some distance's own training quantile (all
    # training scans alike would otherwise give a limit of 0).
    limit = round(max(float(np.quantile(scores, QUANTILE)), 1.0), 5)
    update: dict[str, Any] = {"scales": scales, "limit": limit}
    update["flagged_train"] = float(np.mean(scores > limit))
    if val is not None and len(val.images):
        update["flagged_val"] = float(np.mean(_chunked(checker.scores_of, val) > limit))
    return reference.model_copy(update=update)


def _in_chunks(images: np.ndarray, pool: np.ndarray) -> tuple[np.ndarray, ...]:
    """`_features` of the gray planes of `images`, `CHUNK` scans at a time."""
    parts = []
    for i in range(0, len(images), CHUNK):
        chunk = images[i : i + CHUNK]
        parts.append(_features(chunk[:, 0] if chunk.shape[1] == 1 else chunk.mean(axis=1), pool))
    return tuple(np.concatenate(column) for column in zip(*parts, strict=True))


def _chunked(
    measure: Callable[[np.ndarray, np.ndarray | None], np.ndarray], scans: Scans
) -> np.ndarray:
    colour = scans.colour
    return np.concatenate(
        [
            measure(scans.images[i : i + CHUNK], None if colour is None else colour[i : i + CHUNK])
            for i in range(0, len(scans.images), CHUNK)
        ]
    )


class Checker:
    """A card's profile ready to score scans: its reference as arrays, flattened."""

    def __init__(self, profile: InputProfile) -> None:
        self.profile = profile
        mean = np.asarray(profile.thumbnail_mean, dtype=np.float32)
        self.side = mean.shape[0]
        self.mean = mean.ravel()
        self.inverse_std = 1.0 / np.asarray(profile.thumbnail_std, dtype=np.float32).ravel()
        centred = self.mean - self.mean.mean()
        self.pattern = centred / max(float(np.linalg.norm(centred)), 1e-12)
        self.hist_mean = np.asarray(profile.histogram_mean, dtype=np.float32)
        self.hist_inverse_std = 1.0 / np.asarray(profile.histogram_std, dtype=np.float32)
        self.scales = np.asarray([profile.scales[c] for c in COMPONENTS], dtype=np.float32)
        self._pooling: dict[int, np.ndarray] = {}

    @property
    def limit(self) -> float:
        return self.profile.limit

    def score(self, prepared: np.ndarray, colour: float = 0.0) -> float:
        """The statistic of one prepared (C, size, size) scan with its `colourfulness`."""
        return float(self.scores_of(prepared[None], np.asarray([colour], np.float32))[0])

    def scores_of(self, images: np.ndarray, colour: np.ndarray | None) -> np.ndarray:
        """The statistic of prepared scans (N, C, size, size)."""
        return (self.distances(images, colour) / self.scales).max(axis=1)

    def distances(self, images: np.ndarray, colour: np.ndarray | None) -> np.ndarray:
        """Each scan's five distances (N, 5), before scaling."""
        planes = images[:, 0] if images.shape[1] == 1 else images.mean(axis=1)
        thumbs, hists, texture = _features(planes, self.pooling(planes.shape[-1]))
        z = (thumbs - self.mean) * self.inverse_std
        layout = np.sqrt(np.einsum("nk,nk->n", z, z) / z.shape[1])
        centred = thumbs - thumbs.mean(axis=1, keepdims=True)
        norms = np.sqrt(np.einsum("nk,nk->n", centred, centred))
        correlation = centred @ self.pattern / np.maximum(norms, 1e-6)
        structure = 1.0 - np.where(norms > 1e-6, correlation, 0.0)
        zh = (hists - self.hist_mean) * self.hist_inverse_std
        histogram = np.sqrt(np.einsum("nk,nk->n", zh, zh) / zh.shape[1])
        spread = np.abs(texture - self.profile.texture_mean) / self.profile.texture_std
        shades = np.zeros(len(images), np.float32) if colour is None else colour
        return np.stack([layout, structure, histogram, spread, shades], axis=1)

    def pooling(self, size: int) -> np.ndarray:
        """The (side, size) matrix whose product on both sides area-averages a plane."""
        if size not in self._pooling:
            self._pooling[size] = pooling(self.side, size)
        return self._pooling[size]


def usable(profile: InputProfile | None) -> Checker | None:
    """A checker for the card's profile, or None: no profile, or one of a statistic this
    code does not compute (`PROFILE_VERSION`)."""
    if profile is None or profile.version != PROFILE_VERSION:
        return None
    return Checker(profile)


def pooling(side: int, size: int) -> np.ndarray:
    """Rows averaging `size` pixels into `side` bins (of unequal width where it does not
    divide): P @ plane @ P.T is the plane's area-averaged thumbnail."""
    edges = (np.arange(side + 1) * size) // side
    matrix = np.zeros((side, size), np.float32)
    for row, (start, stop) in enumerate(pairwise(edges)):
        matrix[row, start:stop] = 1.0 / (stop - start)
    return matrix


def _features(planes: np.ndarray, pool: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Thumbnails (N, side * side), histograms (N, BINS) and log texture (N,) of gray planes
    (N, S, S). Histogram and texture sample a plane on a grid of at most `GRID` a side."""
    n, size = len(planes), planes.shape[-1]
    thumbs = (pool @ planes @ pool.T).reshape(n, -1)
    step = -(-size // GRID)
    grid = np.ascontiguousarray(planes[:, ::step, ::step])
    bins = np.clip(grid * BINS, 0, BINS - 0.5).astype(np.intp).reshape(n, -1)
    bins += (np.arange(n) * BINS)[:, None]
    hists = np.bincount(bins.ravel(), minlength=n * BINS).reshape(n, BINS) / bins.shape[1]
    across = np.abs(grid[:, :, 1:] - grid[:, :, :-1]).reshape(n, -1).mean(axis=1)
    down = np.abs(grid[:, 1:] - grid[:, :-1]).reshape(n, -1).mean(axis=1)
    return thumbs, hists, np.log((across + down) / 2 + TEXTURE_EPS)


def _rounded(values: np.ndarray) -> tuple:  # type: ignore[type-arg]
    if values.ndim > 1:
        return tuple(_rounded(v) for v in values)
    return tuple(round(float(v), 5) for v in values)
