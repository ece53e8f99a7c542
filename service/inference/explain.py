"""Class activation maps as PNG heatmaps at the scan's size."""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image

from service.hospital.attention_map import RAMP


def heatmap_png(cam: np.ndarray, height: int, width: int) -> str:
    """One class's (h, w) map, min-max scaled and resized to (height, width), as a base64
    palette PNG (8 bits a pixel: 64 MB for a 64 MP scan, where RGB from a float resize took
    about 800 MB)."""
    plane = np.asarray(cam, dtype=np.float32)
    low, high = float(plane.min()), float(plane.max())
    unit = (plane - low) / (high - low) if high > low else np.zeros_like(plane)
    levels = Image.fromarray((unit * 255).round().astype(np.uint8), mode="L")
    heatmap = levels.resize((width, height), Image.Resampling.BILINEAR)
    heatmap.putpalette(RAMP.tobytes())  # L -> P: the ramp colours each level
    buffer = io.BytesIO()
    heatmap.save(buffer, format="PNG", compress_level=1)
    return base64.b64encode(buffer.getvalue()).decode("ascii")
