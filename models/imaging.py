"""Decoding and preprocessing of scans, shared by training and inference.

Torch-free (numpy, Pillow, pydicom) so the inference service preprocesses with exactly the code
the trainer used. A decoded scan is a float32 array in [0, 1], shaped (H, W) for grayscale or
(H, W, 3) for colour; `to_model_input` turns it into the (C, size, size) tensor a card describes.
"""

from __future__ import annotations

import io
import math
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
from PIL import ExifTags, Image, ImageOps

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

    from models.card import InputSpec

ImageFormat = Literal["png", "jpeg", "dicom"]

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
        return _decode_dicom(data, name)
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


def load_dicom_reader() -> None:
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


def _decode_dicom(data: bytes, name: str) -> np.ndarray:
    """Grayscale DICOM through its modality and VOI LUTs; colour (RGB, YBR, palette) scaled
    to [0, 1] as (H, W, 3) like a colour PNG. Multi-frame: the first frame, alone."""
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
    if rows * cols > MAX_PIXELS:
        raise ImageDecodeError(name, f"image of {cols}x{rows} is too large")
    _check_decodable(syntax, name)
    with _refused(name, "cannot decode DICOM pixel data"):
        from pydicom.pixels import pixel_array

        # Only the first frame is decoded: a multi-frame file may hold hundreds (and an RLE
        # or JPEG one can expand far past the upload size). YBR colour arrives as RGB.
        pixels = pixel_array(ds, index=0)
        if photometric == "PALETTE COLOR":
            from pydicom.pixels import apply_color_lut

            pixels, samples = apply_color_lut(pixels, ds), 3
            bits = pixels.dtype.itemsize * 8
    if samples == 3 and pixels.ndim == 3 and pixels.shape[-1] == 3 and 1 <= bits <= 32:
        # In place in float32, as for PNG: a float64 copy of a 64 MP RGB scan is 1.5 GB.
        values = pixels.astype(np.float32)
        return np.clip(_scaled(values, 2.0**bits - 1.0), 0.0, 1.0, out=values)
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


def _check_decodable(syntax: object, name: str) -> None:
    """Refuse, naming it, a compressed transfer syntax no installed decoder reads."""
    from pydicom.pixels import get_decoder
    from pydicom.uid import UID

    try:
        if not isinstance(syntax, UID) or not syntax.is_compressed:
            return  # native pixel data (or no file meta): pydicom reads it, or says why not
    except ValueError:
        return  # not a transfer syntax UID at all: decoding the pixel data says so
    try:
        available = get_decoder(syntax).is_available
    except NotImplementedError:  # a UID pydicom has no decoder class for at all
        available = False
    if not available:
        raise ImageDecodeError(
            name,
            f"DICOM transfer syntax '{syntax.name}' cannot be decoded here; send the scan"
            " uncompressed (Explicit VR Little Endian), RLE, JPEG baseline or JPEG 2000",
        )


def _dicom_to_unit(ds: Dataset, pixels: np.ndarray, name: str) -> np.ndarray:
    """Modality LUT (rescale), then the VOI window or LUT, then MONOCHROME1 inversion.

    A rescale or window that is not one finite number, or a LUT that cannot be applied, makes
    the file undecodable: a guessed display of a clinical scan is worse than a refusal.

    The arithmetic is done in place in one float32 array, as for PNG: pydicom's LUT
    functions work in float64, and a temporary per step of a 14 MP mammogram is 110 MB each.
    """
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    rescale = [
        _number(ds, keyword, name, first=False) if keyword in ds else default
        for keyword, default in (("RescaleSlope", 1.0), ("RescaleIntercept", 0.0))
    ]
    center, width = _window(ds, name)
    function = _voi_function(ds, name)
    with _refused(name, "cannot apply the DICOM LUTs"):  # a malformed LUT fails in many ways
        if "ModalityLUTSequence" in ds:
            values = np.asarray(apply_modality_lut(pixels, ds), dtype=np.float32)
        else:
            values = pixels.astype(np.float32)
            slope, intercept = rescale
            if slope != 1.0:
                values *= np.float32(slope)
            if intercept != 0.0:
                values += np.float32(intercept)
        if center is not None and width is not None and _usable(width, function):
            _apply_window(values, center, width, function)
        else:
            if "VOILUTSequence" in ds:  # a LUT is indexed by integers: the nearest one
                indices = np.rint(values).astype(np.int32)
                values = np.asarray(apply_voi_lut(indices, ds), dtype=np.float32)
            low, high = float(values.min()), float(values.max())
            if not (math.isfinite(low) and math.isfinite(high)):
                values.fill(np.nan)  # refused below
            elif high > low:
                values -= np.float32(low)
                values /= np.float32(high - low)
            else:
                values.fill(0.0)
    if not (math.isfinite(float(values.min())) and math.isfinite(float(values.max()))):
        raise ImageDecodeError(name, "the DICOM LUTs give pixel values that are not finite")
    if str(ds.get("PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        np.subtract(np.float32(1.0), values, out=values)
    return values


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
