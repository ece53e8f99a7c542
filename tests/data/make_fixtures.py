"""Make tests/data/images from the shared PneumoniaMNIST validation split.

Run once (`python tests/data/make_fixtures.py`; it needs DCMTK's command-line tools,
`apt-get install dcmtk`); the outputs are committed. Every file of one
scan decodes to the same [0, 1] image, so the tests can check decoders against each other:

- <stem>.png        8-bit grayscale PNG (the original 28x28 scan)
- <stem>_16.png     16-bit PNG (value * 257)
- <stem>.jpg        JPEG, quality 95 (lossy: close, not equal)
- <stem>_rescale.dcm  DICOM, 16-bit stored = 4*value + 100, RescaleSlope 0.25, Intercept -25,
                      window centre 128 width 256: decodes to value / 255
- <stem>_mono1.dcm  DICOM MONOCHROME1, stored = 255 - value, same window: inverted back on decode
- <stem>_jpeg_lossless.dcm, <stem>_jpeg_ls.dcm  <stem>_rescale.dcm recompressed by DCMTK's
                      `dcmcjpeg` (JPEG Lossless, first-order prediction) and `dcmcjpls` (JPEG-LS
                      lossless): an encoder apart from the decoder under test (GDCM)
- normal_0_jpeg_lossless_sv6.dcm  the same, JPEG Lossless process 14, selection value 6
- normal_0_jpeg_ls_near.dcm  the same, JPEG-LS near-lossless (each stored value within 2)
- normal_0_signed_jpeg_lossless.dcm  normal_0_rescale.dcm with signed stored values
                      (stored - 600, intercept 125, as CT's are signed), through `dcmcjpeg`
- normal_0_jpeg_ls_gdcm_crash.dcm  not made here: a mutation of normal_0_jpeg_ls.dcm that kills
                      a process decoding it with GDCM (SIGABRT), kept from `python
                      bench/dicom_mutations.py tests/data/images/normal_0_jpeg_ls.dcm --plugin
                      gdcm --count 400 --keep /tmp/m` (seed 2, mutation 130; python-gdcm 3.2.6)
- big_<stem>.png    the scan upscaled to 512x512 (bicubic), as scanners send
- no_pixels.dcm, not_an_image.txt, truncated.png: bad inputs
- manifest.json     stem -> {"label": 0|1, "index": i in val split}
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
OUT = HERE / "images"
NPZ = HERE.parents[1].parent / "shared" / "data" / "pneumoniamnist" / "pneumoniamnist_trainval.npz"
PICKS = {"normal_0": 0, "normal_1": 0, "pneumonia_0": 1, "pneumonia_1": 1}


def _image_dataset(
    rows: int, cols: int, *, modality: str, photometric: str, samples: int, bits: int, entropy: str
) -> Any:
    """A secondary-capture dataset with its image pixel module, pixel data not yet set."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=[photometric, entropy])
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = modality
    ds.Rows, ds.Columns = rows, cols
    ds.SamplesPerPixel = samples
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 0
    return ds


def _file_bytes(ds: Any) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def dicom_bytes(
    pixels: np.ndarray,
    *,
    photometric: str,
    slope: float,
    intercept: float,
    center: float | None,
    width: float | None,
    with_pixels: bool = True,
) -> bytes:
    rows, cols = pixels.shape
    ds = _image_dataset(
        rows, cols, modality="CR", photometric=photometric, samples=1, bits=16,
        entropy=str(pixels.sum()),
    )  # fmt: skip
    ds.PatientName = "Test^Fixture"  # synthetic; the services must never log it
    ds.PatientID = "FIXTURE-0001"
    ds.RescaleSlope = slope
    ds.RescaleIntercept = intercept
    if center is not None:
        ds.WindowCenter = center
        ds.WindowWidth = width
    if with_pixels:
        ds.PixelData = pixels.astype("<u2").tobytes()
    return _file_bytes(ds)


def colour_dicom_bytes(
    rgb: np.ndarray,
    *,
    photometric: str = "RGB",
    bits: int = 8,
    syntax: str = "1.2.840.10008.1.2.1",
) -> bytes:
    """A colour secondary capture: `rgb` is (H, W, 3) or (frames, H, W, 3) of `bits`-bit
    samples, stored as `photometric` (RGB, or YBR_FULL converted from it) in the transfer
    syntax `syntax` (RLE Lossless is compressed here; others are native)."""
    from pydicom.pixels import convert_color_space
    from pydicom.uid import UID, RLELossless

    frames = rgb if rgb.ndim == 4 else rgb[None]
    rows, cols = frames.shape[1:3]
    ds = _image_dataset(
        rows, cols, modality="OT", photometric=photometric, samples=3, bits=bits,
        entropy=str(rgb.sum()),
    )  # fmt: skip
    ds.NumberOfFrames = len(frames)
    ds.PlanarConfiguration = 0
    stored = frames
    if photometric == "YBR_FULL":
        stored = np.stack(
            [convert_color_space(f.astype(np.uint8), "RGB", "YBR_FULL") for f in frames]
        )
    ds.PixelData = stored.astype(f"<u{bits // 8}").tobytes()
    if UID(syntax) == RLELossless:
        ds.compress(RLELossless)
    return _file_bytes(ds)


def jpeg_baseline_dicom_bytes(gray: np.ndarray, quality: int = 90) -> tuple[bytes, bytes]:
    """(DICOM, JPEG): 8-bit `gray` (H, W) as a JPEG by Pillow, and that same JPEG stream
    encapsulated in a JPEG Baseline DICOM, windowed to decode to value / 255 as the JPEG does."""
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGBaseline8Bit

    jpeg = io.BytesIO()
    Image.fromarray(gray.astype(np.uint8)).save(jpeg, format="JPEG", quality=quality)
    rows, cols = gray.shape
    ds = _image_dataset(
        rows, cols, modality="OT", photometric="MONOCHROME2", samples=1, bits=8,
        entropy=str(gray.sum()),
    )  # fmt: skip
    ds.WindowCenter, ds.WindowWidth = 128, 256
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.PixelData = encapsulate([jpeg.getvalue()])
    return _file_bytes(ds), jpeg.getvalue()


def jpeg2000_dicom_bytes(gray: np.ndarray) -> tuple[bytes, bytes]:
    """(DICOM, JP2): 8-bit `gray` (H, W) as a lossless JPEG 2000 file by Pillow, JP2 boxes and
    all (as some modalities store it, against the standard's bare codestream), encapsulated in
    a JPEG 2000 Lossless DICOM windowed to decode to value / 255."""
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEG2000Lossless

    jp2 = io.BytesIO()
    Image.fromarray(gray.astype(np.uint8)).save(jp2, format="JPEG2000", irreversible=False)
    rows, cols = gray.shape
    ds = _image_dataset(
        rows, cols, modality="OT", photometric="MONOCHROME2", samples=1, bits=8,
        entropy=str(gray.sum()) + "j2k",
    )  # fmt: skip
    ds.WindowCenter, ds.WindowWidth = 128, 256
    ds.file_meta.TransferSyntaxUID = JPEG2000Lossless
    ds.PixelData = encapsulate([jp2.getvalue()])
    return _file_bytes(ds), jp2.getvalue()


def palette_dicom_bytes(indices: np.ndarray, lut: np.ndarray) -> bytes:
    """A PALETTE COLOR image: 8-bit `indices` (H, W) into `lut`, (256, 3) of 16-bit entries."""
    rows, cols = indices.shape
    ds = _image_dataset(
        rows, cols, modality="OT", photometric="PALETTE COLOR", samples=1, bits=8,
        entropy=str(indices.sum()),
    )  # fmt: skip
    for i, colour in enumerate(("Red", "Green", "Blue")):
        setattr(ds, f"{colour}PaletteColorLookupTableDescriptor", [256, 0, 16])
        setattr(ds, f"{colour}PaletteColorLookupTableData", lut[:, i].astype("<u2").tobytes())
    ds.PixelData = indices.astype(np.uint8).tobytes()
    return _file_bytes(ds)


def with_elements(dicom: bytes, **elements: object) -> bytes:
    """`dicom` with the given elements set to values their VR may forbid (an empty or infinite
    rescale, say), as broken modalities write them; `bytes` go into the file as they are
    (a non-numeric "DS", which pydicom will not take as a value)."""
    import pydicom
    from pydicom.datadict import dictionary_VR, tag_for_keyword
    from pydicom.dataelem import RawDataElement
    from pydicom.tag import Tag

    ds = pydicom.dcmread(io.BytesIO(dicom))
    for keyword, value in elements.items():
        if isinstance(value, bytes):
            number = tag_for_keyword(keyword)
            if number is None:
                raise KeyError(f"no DICOM element is named {keyword}")
            tag = Tag(number)
            ds[tag] = RawDataElement(tag, dictionary_VR(tag), len(value), value, 0, False, True)
        elif keyword in ds:
            ds[keyword].value = value
        else:  # a new element; "US or SS" is settled by the pixels' signedness
            vr = dictionary_VR(tag_for_keyword(keyword))
            if vr == "US or SS":
                vr = "SS" if ds.get("PixelRepresentation", 0) else "US"
            ds.add_new(keyword, vr, value)
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=False)
    return buf.getvalue()


def raw_dataset(dicom: bytes, *, implicit_vr: bool) -> bytes:
    """`dicom` as a bare little-endian data set: no preamble, no "DICM", no file meta, as
    older modalities and some PACS exports write it."""
    import pydicom
    from pydicom.dataset import FileMetaDataset

    ds = pydicom.dcmread(io.BytesIO(dicom))
    ds.preamble = None
    ds.file_meta = FileMetaDataset()
    buf = io.BytesIO()
    pydicom.dcmwrite(
        buf, ds, implicit_vr=implicit_vr, little_endian=True, enforce_file_format=False
    )
    return buf.getvalue()


def dcmtk_recompressed(source: Path, out: Path, tool: str, *options: str) -> None:
    """`source` recompressed by a DCMTK tool: `dcmcjpeg` (by default JPEG Lossless, selection
    value 1) or `dcmcjpls` (by default JPEG-LS lossless), with its command-line `options`."""
    if shutil.which(tool) is None:
        raise SystemExit(f"{tool} not found: install DCMTK (apt-get install dcmtk)")
    subprocess.run([tool, *options, str(source), str(out)], check=True, capture_output=True)


def signed_variant(dicom: bytes, offset: int) -> bytes:
    """`dicom` (unsigned 16-bit, rescaled) stored as signed values `stored - offset`, with the
    intercept moved so that it decodes to the same image."""
    import pydicom

    ds = pydicom.dcmread(io.BytesIO(dicom))
    stored = ds.pixel_array.astype(np.int32) - offset
    ds.PixelRepresentation = 1
    ds.RescaleIntercept = float(ds.RescaleIntercept) + float(ds.RescaleSlope) * offset
    ds.PixelData = stored.astype("<i2").tobytes()
    return _file_bytes(ds)


def png_declaring(width: int, height: int) -> bytes:
    """A PNG of a few bytes whose header declares `width` x `height` 8-bit gray pixels."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    with np.load(NPZ) as data:
        images, labels = data["val_images"], data["val_labels"].ravel()
    manifest = {}
    for stem, label in PICKS.items():
        nth = int(stem.rsplit("_", 1)[1])
        index = int(np.flatnonzero(labels == label)[nth])
        img = images[index]
        manifest[stem] = {"label": label, "index": index}
        Image.fromarray(img).save(OUT / f"{stem}.png")
        Image.fromarray(img.astype(np.uint16) * 257).save(OUT / f"{stem}_16.png")
        Image.fromarray(img).save(OUT / f"{stem}.jpg", quality=95)
        Image.fromarray(img).resize((512, 512), Image.Resampling.BICUBIC).save(
            OUT / f"big_{stem}.png"
        )
        stored = img.astype(np.uint16) * 4 + 100
        (OUT / f"{stem}_rescale.dcm").write_bytes(
            dicom_bytes(
                stored, photometric="MONOCHROME2", slope=0.25, intercept=-25, center=128, width=256
            )
        )
        (OUT / f"{stem}_mono1.dcm").write_bytes(
            dicom_bytes(
                255 - img.astype(np.uint16),
                photometric="MONOCHROME1",
                slope=1,
                intercept=0,
                center=128,
                width=256,
            )
        )
        for suffix, tool in (("jpeg_lossless", "dcmcjpeg"), ("jpeg_ls", "dcmcjpls")):
            dcmtk_recompressed(OUT / f"{stem}_rescale.dcm", OUT / f"{stem}_{suffix}.dcm", tool)
    rescaled = OUT / "normal_0_rescale.dcm"
    dcmtk_recompressed(rescaled, OUT / "normal_0_jpeg_lossless_sv6.dcm", "dcmcjpeg", "+el")
    dcmtk_recompressed(rescaled, OUT / "normal_0_jpeg_ls_near.dcm", "dcmcjpls", "+en", "+md", "2")
    signed = OUT / "normal_0_signed.dcm"
    signed.write_bytes(signed_variant((OUT / "normal_0_rescale.dcm").read_bytes(), 600))
    dcmtk_recompressed(signed, OUT / "normal_0_signed_jpeg_lossless.dcm", "dcmcjpeg")
    signed.unlink()
    first = images[manifest["normal_0"]["index"]].astype(np.uint16)
    (OUT / "no_pixels.dcm").write_bytes(
        dicom_bytes(
            first,
            photometric="MONOCHROME2",
            slope=1,
            intercept=0,
            center=None,
            width=None,
            with_pixels=False,
        )
    )
    (OUT / "not_an_image.txt").write_text("this is not a scan\n")
    (OUT / "truncated.png").write_bytes((OUT / "big_normal_0.png").read_bytes()[:200])
    (OUT / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
