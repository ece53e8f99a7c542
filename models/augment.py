"""Batch augmentation for scans, in torch, on prepared [0, 1] images before normalisation.

Small affine jitter (rotation, translation, scale), brightness and contrast, and an optional
horizontal flip (off by default: laterality matters on chest X-rays). All randomness comes from
the generator passed in, so a seeded run augments identically every time.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from models.spec import AugmentSpec


def _uniform(n: int, low: float, high: float, gen: torch.Generator) -> torch.Tensor:
    return torch.rand(n, generator=gen) * (high - low) + low


def affine_matrices(n: int, spec: AugmentSpec, gen: torch.Generator) -> torch.Tensor:
    """(n, 2, 3) sampling matrices for `affine_grid`: rotation, scale, translation, flip."""
    angle = _uniform(n, -spec.rotate_degrees, spec.rotate_degrees, gen) * (math.pi / 180)
    scale = _uniform(n, spec.scale[0], spec.scale[1], gen)
    shift = _uniform(2 * n, -spec.translate, spec.translate, gen).view(n, 2) * 2
    flip = torch.ones(n)
    if spec.hflip:
        flip = torch.where(torch.rand(n, generator=gen) < 0.5, -1.0, 1.0)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    row0 = torch.stack([cos * flip, -sin, shift[:, 0]], dim=1)
    row1 = torch.stack([sin * flip, cos, shift[:, 1]], dim=1)
    return torch.stack([row0, row1], dim=1)


def augment(batch: torch.Tensor, spec: AugmentSpec, gen: torch.Generator) -> torch.Tensor:
    """Randomly transform a (N, C, H, W) batch in [0, 1]; the result stays in [0, 1]."""
    n = batch.shape[0]
    theta = affine_matrices(n, spec, gen).to(batch.device, batch.dtype)
    grid = F.affine_grid(theta, list(batch.shape), align_corners=False)
    out = F.grid_sample(batch, grid, mode="bilinear", padding_mode="border", align_corners=False)
    if spec.brightness or spec.contrast:
        out = _jitter(out, spec, gen)
    return out.clamp_(0.0, 1.0)


def _jitter(batch: torch.Tensor, spec: AugmentSpec, gen: torch.Generator) -> torch.Tensor:
    n = batch.shape[0]
    bright = _uniform(n, -spec.brightness, spec.brightness, gen).to(batch).view(n, 1, 1, 1)
    contrast = _uniform(n, 1 - spec.contrast, 1 + spec.contrast, gen).to(batch).view(n, 1, 1, 1)
    mean = batch.mean(dim=(1, 2, 3), keepdim=True)
    return (batch - mean) * contrast + mean + bright


def mixup(
    batch: torch.Tensor, alpha: float, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Mixup (Zhang et al., 2018): the batch blended with a shuffled copy of itself by one
    weight drawn from Beta(alpha, alpha). Returns the blend, the partner of each scan (an index
    into the batch) and the weight of the original; the loss is blended by the same weight.

    torch's Beta sampler takes no generator, so the weight comes from numpy seeded by `gen`:
    a seeded run stays reproducible.
    """
    import numpy as np

    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=gen))
    lam = float(np.random.default_rng(seed).beta(alpha, alpha))
    partner = torch.randperm(batch.shape[0], generator=gen).to(batch.device)
    return lam * batch + (1.0 - lam) * batch[partner], partner, lam


def normalize(batch: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """(x - mean) / std per channel: the formula of `models.scans.normalize`, in torch."""
    m = torch.tensor(mean, dtype=torch.float32, device=batch.device).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32, device=batch.device).view(1, -1, 1, 1)
    return (batch - m) / s
