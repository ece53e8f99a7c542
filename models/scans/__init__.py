"""Scans: decoding files (PNG, JPEG, DICOM) to float32 arrays in [0, 1], and preprocessing
them into the tensor a model card describes; shared by training and inference, torch-free.

    errors        ImageDecodeError, the one error every decoder raises (a leaf)
    limits        what a scan may cost to decode, checked before decoding (a leaf)
    embedded      the size a compressed frame declares itself (JPEG SOF, JPEG 2000 SIZ)
    decoding      which decoder a file goes to, by its bytes
    pil           PNG and JPEG, with Pillow
    dicom         DICOM: modality and VOI LUTs, colour, the trusted in-process codecs
    helper_pool   the worker's side of the sandboxed GDCM decoder (JPEG Lossless, JPEG-LS)
    gdcm_helper   the helper process itself; syscalls: the seccomp filter it seals itself with
    preprocess    resizing, channels, normalisation

A process that decodes DICOM calls `configure` once, before it decodes (the inference app
factory, the training data loader); nothing is started or changed at import.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from models.scans.decoding import ImageFormat, decode, detect_format, read_file
from models.scans.embedded import OverPixelBudget
from models.scans.errors import ImageDecodeError
from models.scans.limits import MAX_PIXELS
from models.scans.preprocess import (
    PREPROCESSING_VERSION,
    normalize,
    prepare,
    resize,
    to_batch,
    to_channels,
    to_model_input,
)

__all__ = [
    "MAX_PIXELS",
    "PREPROCESSING_VERSION",
    "ImageDecodeError",
    "ImageFormat",
    "OverPixelBudget",
    "configure",
    "decode",
    "detect_format",
    "load_dicom_reader",
    "normalize",
    "prepare",
    "read_file",
    "resize",
    "to_batch",
    "to_channels",
    "to_model_input",
]


def configure(*, decoders: int = 1, on_broken: Callable[[], None] | None = None) -> None:
    """Set up this process's scan decoding: at most `decoders` GDCM helper processes, and
    `on_broken` called each time one crashes, hangs or answers out of protocol (a metric).

    It also keeps GDCM out of this process. GDCM decodes only in its helper; pydicom imports
    it wherever it is installed, to list it among its plugins: 21 MB and 0.1-0.2 s in every
    process that reads DICOM, for a library that must never run in it. So pydicom, imported
    after this, finds none (`models.scans.dicom.TRUSTED_PLUGINS` would not use it anyway).
    """
    if "pydicom" not in sys.modules:
        sys.modules.setdefault("gdcm", None)  # type: ignore[arg-type]
    from models.scans.helper_pool import configure as configure_helpers

    configure_helpers(decoders, on_broken)


def load_dicom_reader() -> None:
    """Import pydicom and the parts of it a decode uses now rather than on the first DICOM
    (0.1 to 0.2 s; a server calls this while its models load)."""
    from models.scans.dicom import load_reader

    load_reader()
