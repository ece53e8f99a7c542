"""DICOM scans to float32 arrays in [0, 1], for `models.scans.decode`.

Grayscale goes through the modality LUT (rescale), the VOI window by its VOI LUT Function (or
a VOI LUT) and MONOCHROME1 inversion; colour (RGB, YBR, palette) is scaled by its bit depth.
A value that cannot be used is refused with an ImageDecodeError naming the element, never
its value: a guessed display of a clinical scan is worse than a refusal. The arithmetic is
done in place in one float32 array. pydicom is imported inside the functions, so importing
this module costs nothing until the first DICOM.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

import numpy as np

from models.scans.embedded import check_size, frame_size
from models.scans.errors import ImageDecodeError
from models.scans.gdcm_helper import PLUGIN as HELPER_PLUGIN
from models.scans.gdcm_helper import SYNTAXES as HELPER_SYNTAXES
from models.scans.helper_pool import decode as decode_in_helper

if TYPE_CHECKING:
    from pydicom.dataset import Dataset


def load_reader() -> None:
    """Import pydicom and the parts of it a decode uses now rather than on the first DICOM
    (0.1 to 0.2 s; a server calls this while its models load)."""
    from pydicom.pixels import get_decoder
    from pydicom.uid import ExplicitVRLittleEndian

    get_decoder(ExplicitVRLittleEndian)


@contextmanager
def _refused(name: str, reason: str, *, say_why: bool = True) -> Iterator[None]:
    """Any failure inside becomes an ImageDecodeError giving `reason` (and, with `say_why`,
    the exception's text): pydicom raises many types, some only when an element is read."""
    try:
        yield
    except (MemoryError, ImageDecodeError):
        raise
    except Exception as exc:
        raise ImageDecodeError(name, f"{reason} ({exc})" if say_why else reason) from exc


def decode_dicom(data: bytes, name: str, budget: int | None = None) -> np.ndarray:
    """Grayscale DICOM through its modality and VOI LUTs; colour (RGB, YBR, palette) scaled
    to [0, 1] as (H, W, 3) like a colour PNG. Multi-frame: the first frame, alone. Refused
    before decoding past `MAX_PIXELS` or `budget`, by the header and by the frame's own."""
    import pydicom

    with _refused(name, "cannot parse DICOM"):
        # force: a data set without the preamble has no "DICM" for pydicom to find.
        ds = pydicom.dcmread(io.BytesIO(data), force=True)
        _name_native_syntax(ds)
        has_pixels = "PixelData" in ds
        rows, cols = int(ds.get("Rows") or 0), int(ds.get("Columns") or 0)
        samples = int(ds.get("SamplesPerPixel") or 1)
        photometric = str(ds.get("PhotometricInterpretation") or "").upper()
        bits = int(ds.get("BitsStored") or ds.get("BitsAllocated") or 0)
        syntax = ds.file_meta.get("TransferSyntaxUID")
    if not has_pixels:
        raise ImageDecodeError(name, "DICOM file has no pixel data")
    check_size(name, rows, cols, budget)
    plugin = _decoding_plugin(syntax, name)
    _check_jp2_boxes(ds, syntax, name)
    _check_frame_size(ds, syntax, name, rows, cols)
    with _refused(name, "cannot decode DICOM pixel data"):
        from pydicom.pixels import pixel_array

        # Only the first frame is decoded: a multi-frame file may hold hundreds (and an RLE
        # or JPEG one can expand far past the upload size). YBR colour arrives as RGB.
        if plugin == HELPER_PLUGIN:
            shape = (rows, cols, 3) if samples == 3 else (rows, cols)
            pixels = decode_in_helper(data, shape, name)
        else:
            pixels = pixel_array(ds, index=0, decoding_plugin=plugin)
        if photometric == "PALETTE COLOR":
            from pydicom.pixels import apply_color_lut

            pixels, samples = apply_color_lut(pixels, ds), 3
            bits = pixels.dtype.itemsize * 8
    if samples == 3 and pixels.ndim == 3 and pixels.shape[-1] == 3 and 1 <= bits <= 32:
        # In place in float32, as for PNG: a float64 copy of a 64 MP RGB scan is 1.5 GB.
        values = pixels.astype(np.float32)
        values /= np.float32(2.0**bits - 1.0)
        return np.clip(values, 0.0, 1.0, out=values)
    if samples != 1 or pixels.ndim != 2:
        raise ImageDecodeError(
            name, f"DICOM pixel data of shape {pixels.shape} is not one 2-D scan"
        )
    return _dicom_to_unit(ds, pixels, name)


def _name_native_syntax(ds: Dataset) -> None:
    """A data set read without file meta (no preamble) names no transfer syntax, and pydicom
    will not decode its pixels: it is the native encoding it was read in."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

    meta = getattr(ds, "file_meta", None)
    if meta is not None and "TransferSyntaxUID" in meta:
        return
    implicit, little = ds.original_encoding
    if implicit is None or little is None:
        return  # pydicom could not tell: decoding the pixel data says so
    if meta is None:
        ds.file_meta = meta = FileMetaDataset()
    meta.TransferSyntaxUID = (
        ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian if little
        else ExplicitVRBigEndian
    )  # fmt: skip


# The pydicom decoding plugins a scan may go through in-process: Pillow (JPEG baseline and
# extended, JPEG 2000) and pydicom's own (RLE). Not GDCM or pylibjpeg, even where installed:
# GDCM aborted or crashed the process on random mutations of valid JPEG Lossless and JPEG-LS
# files within 5 to 301 tries (README), and a crafted upload must cost a 422, not a worker.
# Those two syntaxes go to GDCM in a helper process instead (`models.scans.gdcm_helper`).
TRUSTED_PLUGINS: tuple[str, ...] = ("pillow", "pydicom")


def _decoding_plugin(syntax: object, name: str) -> str:
    """The pydicom plugin to decode `syntax` with ("" for native pixel data), or
    `HELPER_PLUGIN` for JPEG Lossless and JPEG-LS, or a refusal naming a compressed
    transfer syntax neither reads (HTJ2K, say), whatever else is installed."""
    from pydicom.pixels import get_decoder
    from pydicom.uid import UID

    try:
        if not isinstance(syntax, UID) or not syntax.is_compressed:
            return ""  # native pixel data (or no file meta): pydicom reads it, or says why not
    except ValueError:
        return ""  # not a transfer syntax UID at all: decoding the pixel data says so
    try:
        available = get_decoder(syntax).available_plugins
    except NotImplementedError:  # a UID pydicom has no decoder class for at all
        available = ()
    for plugin in TRUSTED_PLUGINS:
        if plugin in available:
            return plugin
    if syntax in HELPER_SYNTAXES:
        return HELPER_PLUGIN
    raise ImageDecodeError(
        name,
        f"DICOM transfer syntax '{syntax.name}' cannot be decoded here; send the scan"
        " uncompressed (Explicit VR Little Endian), RLE, JPEG baseline, JPEG 2000, JPEG"
        " Lossless or JPEG-LS",
    )


JP2_SIGNATURE = b"\x00\x00\x00\x0cjP  "  # the first box's length (always 12) and type


def _check_jp2_boxes(ds: Dataset, syntax: object, name: str) -> None:
    """Refuse a JPEG 2000 frame whose JP2 boxes would hang pydicom.

    Before decoding, pydicom 3.0 walks the boxes of a JP2 header (`get_j2k_parameters`) by
    their lengths until the codestream's box, and never moves past a box of length 0 (legal
    only for the last box, so never before the codestream): a 2 kB upload held a worker
    forever (found by `bench/dicom_mutations.py`). This walks them the same way first.
    """
    from pydicom.encaps import get_frame
    from pydicom.uid import JPEG2000TransferSyntaxes

    if syntax not in JPEG2000TransferSyntaxes:
        return
    try:
        frames = int(ds.get("NumberOfFrames") or 1)
        frame = get_frame(ds.PixelData, 0, number_of_frames=frames)
    except Exception as exc:  # so no walk by pydicom of a frame found another way
        raise ImageDecodeError(name, f"cannot decode DICOM pixel data ({exc})") from exc
    if not frame.startswith(JP2_SIGNATURE):
        return
    offset = 12
    while offset < len(frame):
        length = int.from_bytes(frame[offset : offset + 4], "big")
        if frame[offset + 4 : offset + 8] == b"jp2c":
            return
        if length == 0:
            raise ImageDecodeError(
                name, "cannot decode DICOM pixel data (a JPEG 2000 box of length 0 before"
                " the codestream)",
            )  # fmt: skip
        offset += length


def _check_frame_size(ds: Dataset, syntax: object, name: str, rows: int, cols: int) -> None:
    """Refuse a compressed frame that declares another size than Rows x Columns: the codec
    decodes the size the frame declares, whatever the header claims (`models.scans.embedded`).
    """
    from pydicom.encaps import get_frame
    from pydicom.uid import UID

    try:
        if not isinstance(syntax, UID) or not syntax.is_compressed or "PixelData" not in ds:
            return
        frames = int(ds.get("NumberOfFrames") or 1)
        frame = get_frame(ds.PixelData, 0, number_of_frames=frames)
    except Exception:  # no frame to read: decoding says why, and allocates nothing first
        return
    declared = frame_size(frame)
    if declared is not None and declared != (rows, cols):
        raise ImageDecodeError(
            name,
            f"the compressed frame is {declared[1]}x{declared[0]}, not the {cols}x{rows}"
            " the DICOM header gives",
        )


_NOT_FINITE = "the DICOM LUTs give pixel values that are not finite"


def _dicom_to_unit(ds: Dataset, pixels: np.ndarray, name: str) -> np.ndarray:
    """Modality LUT (rescale), then the VOI window or LUT, then MONOCHROME1 inversion.

    A rescale or window that is not one finite number, or a LUT that cannot be applied, makes
    the file undecodable: a guessed display of a clinical scan is worse than a refusal.

    The arithmetic is done in place in one float32 array, as for PNG: pydicom's LUT
    functions work in float64, and a temporary per step of a 14 MP mammogram is 110 MB each.
    """
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    slope, intercept = (
        _number(ds, keyword, name, first=False) if keyword in ds else default
        for keyword, default in (("RescaleSlope", 1.0), ("RescaleIntercept", 0.0))
    )
    center, width = _window(ds, name)
    function = _voi_function(ds, name)
    with _refused(name, "cannot apply the DICOM LUTs"):  # a malformed LUT fails in many ways
        if "ModalityLUTSequence" in ds:
            values = np.asarray(apply_modality_lut(pixels, ds), dtype=np.float32)
        else:
            values = pixels.astype(np.float32)
            if slope != 1.0:
                values *= np.float32(slope)
            if intercept != 0.0:
                values += np.float32(intercept)
        if center is not None and width is not None and _usable(width, function):
            _apply_window(values, center, width, function)
            if not (math.isfinite(float(values.min())) and math.isfinite(float(values.max()))):
                raise ImageDecodeError(name, _NOT_FINITE)
        else:  # the range is checked finite on the way: no second pass over the scan
            if "VOILUTSequence" in ds:  # a LUT is indexed by integers: the nearest one
                indices = np.rint(values).astype(np.int32)
                values = np.asarray(apply_voi_lut(indices, ds), dtype=np.float32)
            _fill_unit_range(values, _scan_pixels(ds, pixels, name), name)
    if str(ds.get("PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        np.subtract(np.float32(1.0), values, out=values)
    return values


def _fill_unit_range(values: np.ndarray, scan: np.ndarray | None, name: str) -> None:
    """Map the range of the scan's own pixels (`scan`: a mask, None for all of them) onto
    [0, 1] in place; padding outside that range is clipped to its nearer end."""
    if scan is not None and not scan.any():
        values.fill(0.0)  # nothing but padding
        return
    low = float(np.min(values, where=scan, initial=np.inf) if scan is not None else values.min())
    high = float(np.max(values, where=scan, initial=-np.inf) if scan is not None else values.max())
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ImageDecodeError(name, _NOT_FINITE)
    if high > low:
        values -= np.float32(low)
        values /= np.float32(high - low)
        if scan is not None:
            np.clip(values, 0.0, 1.0, out=values)
    else:
        values.fill(0.0)


def _scan_pixels(ds: Dataset, pixels: np.ndarray, name: str) -> np.ndarray | None:
    """Where the scan is, as opposed to its padding: Pixel Padding Value, or the range from
    it to Pixel Padding Range Limit (PS3.3 C.7.5.1.1.2), in stored values. A CT's -2000
    outside its field of view, say, which would otherwise take the bottom of the full range
    and squeeze the scan's own values into the top of it. None when the file names no
    padding."""
    if not _given(ds, "PixelPaddingValue", name):
        return None
    value = _number(ds, "PixelPaddingValue", name, first=False)
    if _given(ds, "PixelPaddingRangeLimit", name):
        limit = _number(ds, "PixelPaddingRangeLimit", name, first=False)
        low, high = min(value, limit), max(value, limit)
        return (pixels < low) | (pixels > high)
    return pixels != value


_VOI_FUNCTIONS = ("LINEAR", "LINEAR_EXACT", "SIGMOID")


def _usable(width: float, function: str) -> bool:
    """PS3.3 C.11.2.1.2: LINEAR needs a width of at least 1, the others a positive one."""
    return width >= 1.0 if function == "LINEAR" else width > 0.0


def _apply_window(values: np.ndarray, center: float, width: float, function: str) -> None:
    """The VOI window by its VOI LUT Function (PS3.3 C.11.2.1.2-3), mapped to [0, 1] in place."""
    if function == "SIGMOID":  # 1 / (1 + exp(-4 (x - c) / w))
        values -= np.float32(center)
        values *= np.float32(-4.0 / width)
        with np.errstate(over="ignore"):  # exp overflows to inf: the value is then 0
            np.exp(values, out=values)
        values += np.float32(1.0)
        np.reciprocal(values, out=values)
        return
    if function == "LINEAR_EXACT":  # (x - c) / w + 0.5, clipped
        values -= np.float32(center)
        values /= np.float32(width)
    elif width == 1.0:  # LINEAR's threshold: at or below center - 0.5 is black
        np.greater(values, np.float32(center - 0.5), out=values, casting="unsafe")
        return
    else:  # LINEAR: (x - (c - 0.5)) / (w - 1) + 0.5, clipped
        values -= np.float32(center - 0.5)
        values /= np.float32(width - 1.0)
    values += np.float32(0.5)
    np.clip(values, 0.0, 1.0, out=values)


def _voi_function(ds: Dataset, name: str) -> str:
    """The VOI LUT Function the window is applied with: LINEAR unless the file says otherwise
    (mammography often says SIGMOID). Any other value is refused, never guessed."""
    if not _given(ds, "VOILUTFunction", name):
        return "LINEAR"
    with _refused(name, "cannot read DICOM VOILUTFunction: malformed element", say_why=False):
        function = str(ds.VOILUTFunction).strip().upper()
    if function not in _VOI_FUNCTIONS:
        raise ImageDecodeError(name, "DICOM VOILUTFunction is not LINEAR, LINEAR_EXACT or SIGMOID")
    return function


def _window(ds: Dataset, name: str) -> tuple[float | None, float | None]:
    """The first VOI window (center, width), or (None, None) unless both are given."""
    if not (_given(ds, "WindowCenter", name) and _given(ds, "WindowWidth", name)):
        return None, None
    return (
        _number(ds, "WindowCenter", name, first=True),
        _number(ds, "WindowWidth", name, first=True),
    )


def _given(ds: Dataset, keyword: str, name: str) -> bool:
    """Whether the element is present with a value (an empty one counts as absent)."""
    with _refused(name, f"cannot read DICOM {keyword}: malformed element", say_why=False):
        return keyword in ds and ds[keyword].value not in (None, "", b"")


def _number(ds: Dataset, keyword: str, name: str, *, first: bool) -> float:
    """A numeric element as one finite float; `first` takes the first of several values
    (a window may list several), else several values are refused. Errors name the element,
    never its value."""
    with _refused(name, f"cannot read DICOM {keyword}: malformed element", say_why=False):
        value = ds[keyword].value
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        if not value or (len(value) > 1 and not first):
            raise ImageDecodeError(name, f"DICOM {keyword} has {len(value)} values, not one")
        value = value[0]
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ImageDecodeError(name, f"DICOM {keyword} is not a number") from None
    if not math.isfinite(number):
        raise ImageDecodeError(name, f"DICOM {keyword} is not a finite number")
    return number
