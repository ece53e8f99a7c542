"""Decoding and preprocessing of scans, shared by training and inference.

Torch-free (numpy, Pillow; pydicom in `models.dicom`) so the inference service preprocesses
with exactly the code the trainer used. A decoded scan is a float32 array in [0, 1], shaped
(H, W) for grayscale or (H, W, 3) for colour; `to_model_input` turns it into the
(C, size, size) tensor a card describes.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
from PIL import ExifTags, Image, ImageOps

if TYPE_CHECKING:
    from models.card import InputSpec

ImageFormat = Literal["png", "jpeg", "dicom"]

PREPROCESSING_VERSION = 1
"""What this module turns a file into, as a number a model card records (`InputSpec.
preprocessing_version`) and the inference service compares with its own: raise it whenever
`decode` or `to_model_input` gives different values for some file than before, so a model
trained on the old values is reported as seeing other input than it learned from.

- none recorded: cards written before the number was (any decoder up to 2026-11-29);
- 1: EXIF orientation applied to PNG and JPEG; a DICOM window by its VOI LUT Function
  (LINEAR, LINEAR_EXACT, SIGMOID); a VOI LUT indexed by the rounded value; pixel padding
  left out of a DICOM's full range.
"""

MAX_PIXELS = 64_000_000
"""Largest scan accepted (pixels); bigger files are refused rather than exhausting memory."""

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R 601-2, as Pillow's "L"


class ImageDecodeError(ValueError):
    """A file is not a decodable scan; says which file and why."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"{name}: {reason}")
        self.name = name
        self.reason = reason


def detect_format(data: bytes) -> ImageFormat | None:
    """The format from the file's magic bytes, or None when it is none we read."""
    if data.startswith(_PNG_MAGIC):
        return "png"
    if data.startswith(_JPEG_MAGIC):
        return "jpeg"
    if len(data) >= 132 and data[128:132] == b"DICM":
        return "dicom"
    if _is_raw_dicom(data):
        return "dicom"
    return None


def _is_raw_dicom(data: bytes) -> bool:
    """A DICOM data set written without the Part 10 preamble and "DICM" (older modalities,
    some PACS exports, a network payload saved as is): its first element is in group 0002
    (file meta) or 0008 (identification), little endian, with an explicit VR or an implicit
    4-byte length that fits in the file."""
    if len(data) < 8 or data[:2] not in (b"\x02\x00", b"\x08\x00"):
        return False
    vr = data[4:6]
    if vr.isalpha() and vr.isupper():
        return True
    return 8 + int.from_bytes(data[4:8], "little") <= len(data)


def decode(data: bytes, name: str = "<upload>") -> np.ndarray:
    """Decode PNG (8/16-bit), JPEG or DICOM bytes to a float32 array in [0, 1]."""
    fmt = detect_format(data)
    if fmt is None:
        raise ImageDecodeError(name, "not a PNG, JPEG or DICOM file")
    if fmt == "dicom":
        from models import dicom  # pydicom loads on the first DICOM, not with this module

        return dicom.decode(data, name)
    return _decode_pil(data, name)


def read_file(path: str | Path) -> np.ndarray:
    """Decode the scan stored at `path`."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ImageDecodeError(str(path), f"cannot read file ({exc.strerror})") from exc
    return decode(data, str(path))


def _decode_pil(data: bytes, name: str) -> np.ndarray:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            if image.width * image.height > MAX_PIXELS:
                raise ImageDecodeError(name, f"image of {image.width}x{image.height} is too large")
            image.load()
    except ImageDecodeError:
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


def to_channels(image: np.ndarray, channels: int) -> np.ndarray:
    """(H, W) or (H, W, 3) in [0, 1] to (channels, H, W): luminance for 1, replicated gray for 3."""
    if image.ndim == 3:
        if channels == 3:
            return np.ascontiguousarray(image.transpose(2, 0, 1))
        return (image @ _LUMA)[None].astype(np.float32)
    plane = image[None]
    return np.repeat(plane, 3, axis=0) if channels == 3 else plane


def resize(image: np.ndarray, size: int) -> np.ndarray:
    """Resize to size x size with Pillow's antialiased bilinear filter, per channel, in float32."""
    if image.shape[:2] == (size, size):
        return image.astype(np.float32, copy=False)
    if image.ndim == 2:
        return _resize_plane(image, size)
    return np.stack([_resize_plane(image[..., c], size) for c in range(image.shape[2])], axis=-1)


def _resize_plane(plane: np.ndarray, size: int) -> np.ndarray:
    resized = Image.fromarray(np.ascontiguousarray(plane, dtype=np.float32), mode="F").resize(
        (size, size), Image.Resampling.BILINEAR
    )
    return np.asarray(resized, dtype=np.float32)


def prepare(image: np.ndarray, size: int, channels: int) -> np.ndarray:
    """Resize and set channels: (channels, size, size) in [0, 1], before normalisation.

    Training caches this form and augments it; inference normalises it straight away.
    """
    if image.ndim == 3 and channels == 1:
        image = (image @ _LUMA).astype(np.float32)
    return to_channels(resize(image, size), channels)


def normalize(chw: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """(x - mean) / std per channel, float32."""
    m = np.asarray(mean, dtype=np.float32).reshape(-1, 1, 1)
    s = np.asarray(std, dtype=np.float32).reshape(-1, 1, 1)
    return ((chw - m) / s).astype(np.float32, copy=False)


def to_model_input(image: np.ndarray, spec: InputSpec) -> np.ndarray:
    """A decoded scan to the (C, size, size) float32 input the card's network expects."""
    return normalize(prepare(image, spec.size, spec.channels), spec.mean, spec.std)


def to_batch(images: Sequence[np.ndarray], spec: InputSpec) -> np.ndarray:
    """Decoded scans to one contiguous (N, C, size, size) batch."""
    out = np.empty((len(images), spec.channels, spec.size, spec.size), dtype=np.float32)
    for i, image in enumerate(images):
        out[i] = to_model_input(image, spec)
    return out
