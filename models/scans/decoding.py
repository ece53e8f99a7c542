"""Which decoder a file goes to, by its bytes: PNG and JPEG (`pil`), DICOM (`dicom`)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np

from models.scans.errors import ImageDecodeError
from models.scans.pil import decode_pil

ImageFormat = Literal["png", "jpeg", "dicom"]

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"


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


def decode(data: bytes, name: str = "<upload>", budget: int | None = None) -> np.ndarray:
    """Decode PNG (8/16-bit), JPEG or DICOM bytes to a float32 array in [0, 1].

    `budget`: pixels the caller can still afford; a scan that would decode to more is refused
    with OverPixelBudget before it is decoded (by the size the codec itself will produce)."""
    fmt = detect_format(data)
    if fmt is None:
        raise ImageDecodeError(name, "not a PNG, JPEG or DICOM file")
    if fmt == "dicom":
        from models.scans.dicom import decode_dicom  # pydicom loads on the first DICOM

        return decode_dicom(data, name, budget)
    return decode_pil(data, name, budget)


def read_file(path: str | Path) -> np.ndarray:
    """Decode the scan stored at `path`."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ImageDecodeError(str(path), f"cannot read file ({exc.strerror})") from exc
    return decode(data, str(path))
