"""What a scan will decode to, checked before it is decoded: the size a compressed frame
declares in its own header, and the refusal of a scan over the limit or the caller's budget.

A DICOM file's Rows and Columns are only a claim: the JPEG or JPEG 2000 frame inside is
decoded at the size it declares itself. An 880 kB upload claiming 8x8 held a 75 MP JPEG and
cost 160 MB before any check saw it. So before a frame is decoded its own header is read:
JPEG's SOF segment (baseline, extended, lossless, JPEG-LS) and JPEG 2000's SIZ segment.
Hand-written because no maintained library reads these headers without decoding: Pillow
opens a bare JPEG lazily (used for PNG and JPEG uploads), but not one inside a DICOM frame
for every codec, and pydicom's own J2K parameter reader walks boxes unsafely (see dicom.py).
"""

from __future__ import annotations

from models.scans.errors import ImageDecodeError
from models.scans.limits import MAX_PIXELS

# SOF0-SOF15 except DHT (C4), JPG (C8) and DAC (CC); SOF55 is JPEG-LS.
_SOF_MARKERS = {*range(0xC0, 0xD0)} - {0xC4, 0xC8, 0xCC} | {0xF7}
_STANDALONE = {0x01, *range(0xD0, 0xD8)}  # TEM, RST0-7: markers without a length
_SOC, _SIZ = b"\xff\x4f", b"\xff\x51"


class OverPixelBudget(ValueError):
    """Raised by a decoder, before it decodes, for a scan larger than the caller's budget
    (not `MAX_PIXELS`): `pixels` is what it would have decoded."""

    def __init__(self, name: str, pixels: int) -> None:
        super().__init__(f"{name}: {pixels} pixels")
        self.name, self.pixels = name, pixels


def check_size(name: str, rows: int, cols: int, budget: int | None) -> None:
    """Refuse, before decoding, a scan over `MAX_PIXELS` (ImageDecodeError) or over the
    caller's remaining `budget` (OverPixelBudget)."""
    if rows * cols > MAX_PIXELS:
        raise ImageDecodeError(name, f"image of {cols}x{rows} is too large")
    if budget is not None and rows * cols > budget:
        raise OverPixelBudget(name, rows * cols)


def frame_size(frame: bytes) -> tuple[int, int] | None:
    """(rows, columns) a JPEG, JPEG-LS or JPEG 2000 frame declares, or None when it is none
    of those or its header cannot be read (the decoder then says why)."""
    if frame.startswith(b"\xff\xd8"):
        return _jpeg_size(frame)
    start = frame.find(_SOC + _SIZ)  # a raw codestream, or one inside JP2 boxes
    if start >= 0 and start < 1 << 20:
        return _j2k_size(frame, start + 2)
    return None


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    offset = 2
    while offset + 4 <= len(data):
        if data[offset] != 0xFF:
            return None
        marker = data[offset + 1]
        if marker == 0xFF:  # fill byte
            offset += 1
            continue
        if marker in _STANDALONE:
            offset += 2
            continue
        length = int.from_bytes(data[offset + 2 : offset + 4], "big")
        if marker in _SOF_MARKERS and offset + 9 <= len(data):
            rows = int.from_bytes(data[offset + 5 : offset + 7], "big")
            cols = int.from_bytes(data[offset + 7 : offset + 9], "big")
            return rows, cols
        if marker == 0xDA or length < 2:  # scan data before any SOF: not a frame we know
            return None
        offset += 2 + length
    return None


def _j2k_size(data: bytes, siz: int) -> tuple[int, int] | None:
    # SIZ: marker, Lsiz (2), Rsiz (2), Xsiz, Ysiz, XOsiz, YOsiz (4 each)
    fields = data[siz + 4 : siz + 4 + 20]
    if len(fields) < 20:
        return None
    xsiz, ysiz, xosiz, yosiz = (int.from_bytes(fields[i : i + 4], "big") for i in (2, 6, 10, 14))
    if xosiz > xsiz or yosiz > ysiz:
        return None
    return ysiz - yosiz, xsiz - xosiz
