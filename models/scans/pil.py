"""PNG and JPEG scans to float32 arrays in [0, 1], with Pillow."""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import ExifTags, Image, ImageOps

from models.scans.embedded import OverPixelBudget, check_size
from models.scans.errors import ImageDecodeError
from models.scans.limits import MAX_PIXELS


def decode_pil(data: bytes, name: str, budget: int | None = None) -> np.ndarray:
    """Decode PNG (8/16-bit) or JPEG bytes, upright by their EXIF orientation; refused before
    decoding when the size the file declares is over `MAX_PIXELS` or `budget`."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            check_size(name, image.height, image.width, budget)
            image.load()
    except (ImageDecodeError, OverPixelBudget):
        raise
    except Image.DecompressionBombError:  # Pillow's own limit, far above ours: refused on open
        raise ImageDecodeError(name, f"image of over {MAX_PIXELS} pixels is too large") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombWarning) as exc:
        raise ImageDecodeError(name, f"cannot decode image ({exc})") from exc
    return _pil_to_float(_upright(image))


def _upright(image: Image.Image) -> Image.Image:
    """The image the way a viewer shows it: a JPEG or PNG whose EXIF orientation says it was
    stored rotated or mirrored (a phone's photo of a film) is turned to match. Unreadable
    EXIF is ignored, as viewers do: the pixels are used as stored."""
    try:
        orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
    except Exception:  # Pillow parses EXIF leniently; anything it still cannot, no rotation
        return image
    if orientation not in range(2, 9):
        return image
    return ImageOps.exif_transpose(image)


def _pil_to_float(image: Image.Image) -> np.ndarray:
    mode = image.mode
    # Each result is made in place in one float32 array: a 64 MP scan is 256 MB of it, and a
    # temporary per operation would double the peak.
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit PNGs open as I;16 (or I); full scale is the 16-bit range.
        values = np.array(image, dtype=np.float32)
        return _scaled(np.clip(values, 0, 65535, out=values), 65535.0)
    if mode == "F":
        values = np.array(image, dtype=np.float32)
        return np.clip(values, 0.0, 1.0, out=values)
    if mode in ("1", "L", "LA", "P", "PA") and _is_gray_palette(image):
        image = image.convert("L")
    elif mode != "L":
        image = image.convert("RGB")
    return _scaled(np.array(image, dtype=np.float32), 255.0)


def _scaled(values: np.ndarray, full_scale: float) -> np.ndarray:
    values /= np.float32(full_scale)
    return values


def _is_gray_palette(image: Image.Image) -> bool:
    if image.mode not in ("P", "PA"):
        return True
    palette = image.getpalette() or []
    triples = np.asarray(palette[: len(palette) - len(palette) % 3]).reshape(-1, 3)
    return bool(np.all(triples == triples[:, :1]))
