"""The torch-free decoding and preprocessing both services rely on, on real scans."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import ExifTags, Image

from models import scans
from models.card import InputSpec


@pytest.fixture(scope="module")
def manifest(fixture_images: Path) -> dict[str, dict[str, int]]:
    return json.loads((fixture_images / "manifest.json").read_text())


def _val_image(pneumonia_npz: Path, index: int) -> np.ndarray:
    with np.load(pneumonia_npz) as data:
        return data["val_images"][index]


@pytest.mark.parametrize("stem", ["normal_0", "pneumonia_1"])
def test_png_decodes_to_the_original_pixels(fixture_images, manifest, pneumonia_npz, stem):
    original = _val_image(pneumonia_npz, manifest[stem]["index"])
    decoded = scans.read_file(fixture_images / f"{stem}.png")
    assert decoded.dtype == np.float32 and decoded.shape == (28, 28)
    np.testing.assert_array_equal(decoded, original / np.float32(255))


@pytest.mark.parametrize(
    "suffix",
    [
        "_16.png",
        "_rescale.dcm",
        "_mono1.dcm",
        "_jpeg_lossless.dcm",
        "_jpeg_lossless_sv6.dcm",
        "_jpeg_ls.dcm",
        "_signed_jpeg_lossless.dcm",
    ],
)
def test_lossless_variants_decode_identically(fixture_images, suffix):
    reference = scans.read_file(fixture_images / "normal_0.png")
    np.testing.assert_allclose(
        scans.read_file(fixture_images / f"normal_0{suffix}"), reference, atol=1e-6
    )


@pytest.mark.parametrize(
    ("suffix", "syntax"),
    [
        ("_jpeg_lossless.dcm", "1.2.840.10008.1.2.4.70"),  # JPEG Lossless, selection value 1
        ("_jpeg_lossless_sv6.dcm", "1.2.840.10008.1.2.4.57"),  # any selection value
        ("_jpeg_ls.dcm", "1.2.840.10008.1.2.4.80"),  # JPEG-LS lossless
        ("_jpeg_ls_near.dcm", "1.2.840.10008.1.2.4.81"),  # JPEG-LS near-lossless
        ("_signed_jpeg_lossless.dcm", "1.2.840.10008.1.2.4.70"),
    ],
)
def test_jpeg_lossless_and_jpeg_ls_fixtures_are_compressed_as_named(fixture_images, suffix, syntax):
    """The equality above means something only if these files really hold compressed pixels
    (DCMTK's: another encoder than the decoder under test) and the signed one signed values."""
    import pydicom

    ds = pydicom.dcmread(fixture_images / f"normal_0{suffix}")
    assert ds.file_meta.TransferSyntaxUID == syntax
    assert ds["PixelData"].is_undefined_length  # encapsulated fragments, not native pixels
    assert ds.PixelRepresentation == (1 if "signed" in suffix else 0)


def test_a_near_lossless_jpeg_ls_dicom_is_within_its_deviation(fixture_images):
    """Encoded with each stored value within 2 of the original; the rescale slope is 1/4 and
    the window maps 255 values onto [0, 1], so each pixel is within 0.5 / 255, and not all
    equal (else the file would not be lossy)."""
    reference = scans.read_file(fixture_images / "normal_0.png")
    decoded = scans.read_file(fixture_images / "normal_0_jpeg_ls_near.dcm")
    difference = np.abs(decoded - reference)
    assert difference.max() <= 0.5 / 255 + 1e-6 and difference.max() > 0


def test_a_syntax_no_decoder_here_reads_is_refused_naming_it(fixture_images):
    """HTJ2K, say: only pylibjpeg-openjpeg reads it, which the services do not trust."""
    import pydicom
    from pydicom.uid import HTJ2KLossless

    ds = pydicom.dcmread(fixture_images / "normal_0_jpeg_ls.dcm")
    ds.file_meta.TransferSyntaxUID = HTJ2KLossless
    buf = io.BytesIO()
    ds.save_as(buf)
    with pytest.raises(scans.ImageDecodeError) as info:
        scans.decode(buf.getvalue(), "scan.dcm")
    assert "'High-Throughput JPEG 2000 Image Compression (Lossless Only)'" in info.value.reason
    assert "cannot be decoded here" in info.value.reason


def test_gdcm_never_decodes_in_the_services_own_process(monkeypatch, fixture_images):
    """GDCM crashes on some corrupt files, so it decodes JPEG Lossless only in the helper
    process; installed beside the services, it must not take JPEG baseline from Pillow
    either (it comes first in pydicom's order)."""
    from pydicom.pixels import get_decoder
    from pydicom.uid import JPEGBaseline8Bit, JPEGLosslessSV1

    from models.scans import dicom, gdcm_helper

    called = []
    for syntax in (JPEGLosslessSV1, JPEGBaseline8Bit):
        decoder = get_decoder(syntax)
        monkeypatch.setitem(decoder._available, "gdcm", lambda *a, **k: called.append(a))
    reference = scans.read_file(fixture_images / "normal_0.png")
    decoded = scans.read_file(fixture_images / "normal_0_jpeg_lossless.dcm")
    np.testing.assert_allclose(decoded, reference, atol=1e-6)
    assert dicom._decoding_plugin(JPEGLosslessSV1, "scan.dcm") == gdcm_helper.PLUGIN
    assert dicom._decoding_plugin(JPEGBaseline8Bit, "scan.dcm") == "pillow"
    assert called == []


def test_a_jpeg2000_dicom_with_jp2_boxes_decodes_like_the_png(scan):
    from tests.data.make_fixtures import jpeg2000_dicom_bytes

    dicom, jp2 = jpeg2000_dicom_bytes(scan)
    assert jp2.startswith(b"\x00\x00\x00\x0cjP  ")  # the JP2 signature box, then others
    np.testing.assert_allclose(scans.decode(dicom, "scan.dcm"), scan / np.float32(255), atol=1e-6)


@pytest.mark.timeout(20)
def test_a_jp2_box_of_length_zero_is_refused_not_walked_forever(scan):
    """pydicom 3.0 loops forever on it (a 2 kB upload held a worker): a 422 instead."""
    import pydicom
    from pydicom.encaps import encapsulate

    from tests.data.make_fixtures import jpeg2000_dicom_bytes

    dicom, jp2 = jpeg2000_dicom_bytes(scan)
    header = jp2.index(b"jp2h") - 4  # the header box, after the signature and file type
    broken = jp2[:header] + bytes(4) + jp2[header + 4 :]
    ds = pydicom.dcmread(io.BytesIO(dicom))
    ds.PixelData = encapsulate([broken])
    buf = io.BytesIO()
    ds.save_as(buf)
    with pytest.raises(scans.ImageDecodeError, match="box of length 0"):
        scans.decode(buf.getvalue(), "scan.dcm")


def test_a_jpeg_baseline_dicom_is_still_decoded_by_pillow(monkeypatch, scan):
    """Through Pillow, named (pydicom would pick GDCM first where installed): the same
    pixels as the JPEG file."""
    import pydicom.pixels

    from tests.data.make_fixtures import jpeg_baseline_dicom_bytes

    chosen = []
    real = pydicom.pixels.pixel_array

    def spy(*args: object, **kwargs: object) -> np.ndarray:
        chosen.append(kwargs.get("decoding_plugin"))
        return real(*args, **kwargs)

    monkeypatch.setattr(pydicom.pixels, "pixel_array", spy)
    dicom, jpeg = jpeg_baseline_dicom_bytes(scan)
    decoded = scans.decode(dicom, "scan.dcm")
    assert chosen == ["pillow"]
    np.testing.assert_allclose(decoded, scans.decode(jpeg, "scan.jpg"), atol=1e-6)


def test_jpeg_is_close_to_the_png(fixture_images):
    reference = scans.read_file(fixture_images / "pneumonia_0.png")
    assert np.abs(scans.read_file(fixture_images / "pneumonia_0.jpg") - reference).max() < 0.05


def _with_orientation(pixels: np.ndarray, orientation: int, fmt: str) -> bytes:
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = orientation
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format=fmt, exif=exif.tobytes(), quality=95)
    return buf.getvalue()


# What a viewer shows for each EXIF orientation of the stored pixels (EXIF 2.32, 4.6.4 A).
UPRIGHT = {
    1: lambda a: a,
    2: np.fliplr,
    3: lambda a: np.rot90(a, 2),
    4: np.flipud,
    5: lambda a: a.T,
    6: lambda a: np.rot90(a, -1),
    7: lambda a: np.rot90(a, 2).T,
    8: lambda a: np.rot90(a, 1),
}


@pytest.mark.parametrize("orientation", sorted(UPRIGHT))
def test_a_scan_stored_rotated_is_decoded_as_a_viewer_shows_it(fixture_images, orientation):
    """A phone's photo of a film carries its rotation in EXIF: the model must see the scan the
    way the clinician does, and the explain heatmap's size follows."""
    stored = np.asarray(Image.open(fixture_images / "pneumonia_0.png"))[:, :20]  # not square
    decoded = scans.decode(_with_orientation(stored, orientation, "PNG"), "photo.png")
    np.testing.assert_array_equal(decoded, UPRIGHT[orientation](stored) / np.float32(255))


def test_a_jpeg_stored_rotated_is_turned_too(fixture_images):
    stored = np.asarray(Image.open(fixture_images / "pneumonia_0.png"))[:, :20]
    decoded = scans.decode(_with_orientation(stored, 6, "JPEG"), "photo.jpg")
    assert decoded.shape == (20, 28)
    assert np.abs(decoded - np.rot90(stored, -1) / 255.0).max() < 0.05


def test_dicom_without_window_uses_full_range_and_monochrome1_inverts():
    from tests.data.make_fixtures import dicom_bytes

    ramp = np.arange(16, dtype=np.uint16).reshape(4, 4) * 100
    plain = scans.decode(
        dicom_bytes(ramp, photometric="MONOCHROME2", slope=2, intercept=-7, center=None, width=None)
    )
    assert plain.min() == 0.0 and plain.max() == 1.0
    np.testing.assert_allclose(plain, ramp / 1500.0, atol=1e-6)
    inverted = scans.decode(
        dicom_bytes(ramp, photometric="MONOCHROME1", slope=1, intercept=0, center=None, width=None)
    )
    np.testing.assert_allclose(inverted, 1.0 - ramp / 1500.0, atol=1e-6)


def _padded(scan: np.ndarray, border: np.ndarray | int, **elements: object) -> bytes:
    """A MONOCHROME2 DICOM without a window: `scan` inside a 3-pixel frame of `border`."""
    from tests.data.make_fixtures import dicom_bytes, with_elements

    framed = np.zeros((scan.shape[0] + 6, scan.shape[1] + 6), dtype=np.uint16)
    framed[:] = border
    framed[3:-3, 3:-3] = scan
    plain = dicom_bytes(
        framed, photometric="MONOCHROME2", slope=1, intercept=-1024, center=None, width=None
    )
    return with_elements(plain, **elements) if elements else plain


@pytest.mark.parametrize(
    ("border", "elements"),
    [
        (0, {"PixelPaddingValue": 0}),  # a frame below the scan's values
        (4000, {"PixelPaddingValue": 4000}),  # above them
        (  # a range of values, given from either end
            np.arange(13 * 14, dtype=np.uint16).reshape(13, 14) % 40,
            {"PixelPaddingValue": 39, "PixelPaddingRangeLimit": 0},
        ),
    ],
    ids=["below", "above", "range"],
)
def test_padding_around_a_scan_takes_no_part_in_its_full_range(pneumonia_npz, border, elements):
    """A scan inside padding (a CT's field of view, a shuttered X-ray) decodes as the scan
    alone would, the padding clipped to black or white: the padding used to set the range
    and squeeze the scan's own values into part of it."""
    from tests.data.make_fixtures import dicom_bytes

    scan = _val_image(pneumonia_npz, 0)[:7, :8].astype(np.uint16) * 10 + 500  # 500..3050
    alone = scans.decode(
        dicom_bytes(
            scan, photometric="MONOCHROME2", slope=1, intercept=-1024, center=None, width=None
        )
    )
    framed = scans.decode(_padded(scan, border, **elements))
    np.testing.assert_allclose(framed[3:-3, 3:-3], alone, atol=1e-6)
    frame = framed.copy()
    frame[3:-3, 3:-3] = np.nan
    expected = 1.0 if np.all(np.asarray(border) >= 4000) else 0.0
    assert np.all(frame[~np.isnan(frame)] == expected)


def test_a_dicom_of_nothing_but_padding_is_black_and_bad_padding_is_refused():
    blank = scans.decode(_padded(np.full((4, 4), 7, np.uint16), 7, PixelPaddingValue=7))
    assert blank.shape == (10, 10) and not blank.any()
    with pytest.raises(scans.ImageDecodeError) as info:
        scans.decode(_padded(np.ones((4, 4), np.uint16), 0, PixelPaddingValue=[0, 1]), "p.dcm")
    assert info.value.reason == "DICOM PixelPaddingValue has 2 values, not one"


def test_window_clips_outside_values():
    from tests.data.make_fixtures import dicom_bytes

    values = np.array([[0, 900, 1000, 1100, 3000]], dtype=np.uint16)
    out = scans.decode(
        dicom_bytes(
            values, photometric="MONOCHROME2", slope=1, intercept=0, center=1000.5, width=201
        )
    )
    np.testing.assert_allclose(out[0], [0.0, 0.0, 0.5, 1.0, 1.0], atol=1e-6)


def test_a_window_of_width_one_thresholds_as_the_standard_says():
    """PS3.3 C.11.2.1.2.1: width 1 maps values at or below center - 0.5 to black, the rest to
    white (it used to divide by zero, and a pixel at the threshold made the scan refused)."""
    from tests.data.make_fixtures import dicom_bytes

    values = np.arange(10, dtype=np.uint16).reshape(2, 5)
    out = scans.decode(
        dicom_bytes(values, photometric="MONOCHROME2", slope=1, intercept=0, center=4.5, width=1)
    )
    np.testing.assert_array_equal(out, (values > 4).astype(np.float32))


@pytest.mark.parametrize("photometric", ["MONOCHROME1", "MONOCHROME2"])
@pytest.mark.parametrize(("slope", "intercept"), [(1, 0), (0.5, -1024), (2.5, 17)])
@pytest.mark.parametrize(("center", "width"), [(None, None), (40, 400), (-600, 1500), (100, 2)])
def test_grayscale_dicom_matches_the_standard_computed_in_float64(
    photometric, slope, intercept, center, width
):
    """The decoder works in float32 in place (memory); it must give the float64 formula's
    values: rescale, then the linear window (or the full range), then MONOCHROME1 inverted."""
    from tests.data.make_fixtures import dicom_bytes

    stored = np.random.default_rng(7).integers(0, 4096, (40, 30))
    out = scans.decode(
        dicom_bytes(
            stored, photometric=photometric, slope=slope, intercept=intercept, center=center,
            width=width,
        )
    )  # fmt: skip
    values = stored * float(slope) + float(intercept)
    if center is None:
        unit = (values - values.min()) / (values.max() - values.min())
    else:
        unit = ((values - (center - 0.5)) / (width - 1.0) + 0.5).clip(0.0, 1.0)
    if photometric == "MONOCHROME1":
        unit = 1.0 - unit
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, unit, rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("no_pixels.dcm", "no pixel data"),
        ("not_an_image.txt", "not a PNG, JPEG or DICOM"),
        ("truncated.png", "cannot decode"),
    ],
)
def test_bad_files_name_the_file_and_the_reason(fixture_images, name, reason):
    with pytest.raises(scans.ImageDecodeError) as info:
        scans.read_file(fixture_images / name)
    assert info.value.name.endswith(name) and reason in info.value.reason


@pytest.mark.parametrize(
    ("width", "height"),
    [(10_000, 7_000), (100_000, 100_000), (1, 1_000_000_000)],  # ours, then Pillow's own limit
)
def test_a_png_declaring_too_many_pixels_is_refused_before_it_is_decoded(width, height):
    from tests.data.make_fixtures import png_declaring

    with pytest.raises(scans.ImageDecodeError, match="too large") as info:
        scans.decode(png_declaring(width, height), "bomb.png")
    assert info.value.name == "bomb.png"


def _dicom(**elements: object) -> bytes:
    from tests.data.make_fixtures import dicom_bytes, with_elements

    ramp = np.arange(16, dtype=np.uint16).reshape(4, 4) * 100
    plain = dicom_bytes(
        ramp, photometric="MONOCHROME2", slope=1, intercept=0, center=700, width=801
    )
    return with_elements(plain, **elements) if elements else plain


@pytest.mark.parametrize(
    ("elements", "reason"),
    [
        ({"RescaleSlope": "nan"}, "RescaleSlope is not a finite number"),
        ({"RescaleSlope": "1e400"}, "RescaleSlope is not a finite number"),
        ({"RescaleIntercept": "-inf"}, "RescaleIntercept is not a finite number"),
        ({"RescaleSlope": b"abc "}, "RescaleSlope is not a number"),
        ({"RescaleSlope": ""}, "RescaleSlope is not a number"),
        ({"RescaleIntercept": ["1", "2"]}, "RescaleIntercept has 2 values, not one"),
        ({"WindowCenter": "nan"}, "WindowCenter is not a finite number"),
        ({"WindowWidth": "inf"}, "WindowWidth is not a finite number"),
        ({"WindowWidth": b"wide"}, "WindowWidth is not a number"),
        ({"Rows": None}, "cannot decode DICOM pixel data"),
        ({"Rows": 9_000, "Columns": 9_000}, "9000x9000 is too large"),
    ],
    ids=lambda v: str(v) if isinstance(v, dict) else None,
)
def test_a_dicom_with_unusable_pixel_module_values_is_refused_naming_the_element(elements, reason):
    with pytest.raises(scans.ImageDecodeError) as info:
        scans.decode(_dicom(**elements), "scan.dcm")
    assert info.value.name == "scan.dcm" and reason in info.value.reason, info.value.reason


def test_a_dicom_whose_header_is_corrupt_is_refused_not_crashed():
    ds_vr = b"\x28\x00\x50\x10DS"  # (0028,1050) WindowCenter, explicit VR "DS"
    data = _dicom()
    assert data.count(ds_vr) == 1
    with pytest.raises(scans.ImageDecodeError, match="cannot read DICOM WindowCenter") as info:
        scans.decode(data.replace(ds_vr, b"\x28\x00\x50\x10Dg"), "scan.dcm")
    assert info.value.name == "scan.dcm"


def test_a_dicom_whose_transfer_syntax_uid_is_no_transfer_syntax_is_refused():
    import pydicom

    ds = pydicom.dcmread(io.BytesIO(_dicom()))
    ds.file_meta.TransferSyntaxUID = pydicom.uid.UID("1.2.3.4")
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=False)
    with pytest.raises(scans.ImageDecodeError, match="cannot decode DICOM pixel data"):
        scans.decode(buf.getvalue(), "scan.dcm")


@pytest.mark.parametrize(
    ("function", "center", "width", "formula"),
    [
        ("SIGMOID", 2000.0, 1500.0, lambda x, c, w: 1.0 / (1.0 + np.exp(-4.0 * (x - c) / w))),
        ("LINEAR_EXACT", 2000.0, 1500.0, lambda x, c, w: ((x - c) / w + 0.5).clip(0.0, 1.0)),
        ("LINEAR_EXACT", 100.0, 0.5, lambda x, c, w: ((x - c) / w + 0.5).clip(0.0, 1.0)),
        ("linear", 2000.0, 1500.0,
         lambda x, c, w: ((x - (c - 0.5)) / (w - 1.0) + 0.5).clip(0.0, 1.0)),
    ],
)  # fmt: skip
def test_the_window_follows_the_files_voi_lut_function(function, center, width, formula):
    """Mammograms often say SIGMOID; the window used to be applied as LINEAR whatever the
    file said, and LINEAR_EXACT's widths under 1 were ignored."""
    from tests.data.make_fixtures import with_elements

    stored = np.random.default_rng(3).integers(0, 4096, (40, 30))
    stored[0, :3] = [0, 100, 4095]
    plain = _dicom_of(stored, center=center, width=width)
    out = scans.decode(with_elements(plain, VOILUTFunction=function), "mg.dcm")
    np.testing.assert_allclose(out, formula(stored.astype(np.float64), center, width), atol=1e-6)


def test_an_unknown_voi_lut_function_is_refused_naming_the_element():
    from tests.data.make_fixtures import with_elements

    plain = _dicom_of(np.arange(16).reshape(4, 4), center=8.0, width=4.0)
    with pytest.raises(scans.ImageDecodeError, match="VOILUTFunction is not LINEAR"):
        scans.decode(with_elements(plain, VOILUTFunction="GAMMA"), "mg.dcm")


def _dicom_of(stored: np.ndarray, *, center: float, width: float) -> bytes:
    """A MONOCHROME2 DICOM of `stored` with a VOILUTFunction element (LINEAR) to change."""
    import pydicom

    from tests.data.make_fixtures import dicom_bytes

    plain = dicom_bytes(
        stored, photometric="MONOCHROME2", slope=1, intercept=0, center=center, width=width
    )
    ds = pydicom.dcmread(io.BytesIO(plain))
    ds.VOILUTFunction = "LINEAR"
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=False)
    return buf.getvalue()


def _with_lut(dicom: bytes, sequence: str, lut: np.ndarray, **removed: object) -> bytes:
    """`dicom` with a one-item Modality or VOI LUT Sequence mapping 0..len(lut)-1 (16-bit)."""
    import pydicom
    from pydicom.dataset import Dataset

    ds = pydicom.dcmread(io.BytesIO(dicom))
    for keyword in removed:
        del ds[keyword]
    item = Dataset()
    item.LUTDescriptor = [len(lut), 0, 16]
    item.add_new("LUTData", "US", [int(v) for v in lut])
    setattr(ds, sequence, [item])
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=False)
    return buf.getvalue()


@pytest.mark.parametrize("sequence", ["ModalityLUTSequence", "VOILUTSequence"])
def test_a_lut_sequence_maps_the_values_before_the_full_range_is_taken(sequence):
    """Scanners that ship a LUT instead of a rescale or a window: the stored values (after the
    rescale, for a VOI LUT) index the LUT, and its output fills [0, 1]."""
    from tests.data.make_fixtures import dicom_bytes

    stored = np.arange(12, dtype=np.uint16).reshape(3, 4) * 5
    lut = (np.arange(128) ** 2) % 5000  # not linear: a LUT ignored would show
    slope = 1.9 if sequence == "VOILUTSequence" else 1  # the VOI LUT's input is rounded
    plain = dicom_bytes(
        stored, photometric="MONOCHROME2", slope=slope, intercept=0, center=None, width=None
    )
    removed = {"RescaleSlope": None, "RescaleIntercept": None}
    data = _with_lut(plain, sequence, lut, **(removed if sequence == "ModalityLUTSequence" else {}))
    mapped = lut[np.rint(stored * slope).astype(int)].astype(np.float64)
    expected = (mapped - mapped.min()) / (mapped.max() - mapped.min())
    np.testing.assert_allclose(scans.decode(data), expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("implicit_vr", [True, False])
@pytest.mark.parametrize("fixture", ["normal_0_rescale.dcm", "pneumonia_1_mono1.dcm"])
def test_a_dicom_data_set_without_preamble_decodes_like_the_part10_file(
    fixture_images, fixture, implicit_vr
):
    """Older modalities and PACS exports write the bare data set: no preamble, no "DICM", no
    file meta. It used to be refused as 'not a PNG, JPEG or DICOM file'."""
    from tests.data.make_fixtures import raw_dataset

    part10 = (fixture_images / fixture).read_bytes()
    raw = raw_dataset(part10, implicit_vr=implicit_vr)
    assert b"DICM" not in raw[:200] and raw[:2] == b"\x08\x00"
    assert scans.detect_format(raw) == "dicom"
    np.testing.assert_array_equal(scans.decode(raw, "bare.dcm"), scans.decode(part10))


@pytest.mark.parametrize(
    "data",
    [
        b"\x08\x00\x05\x00CS\x0a\x00ISO_IR 100" + b"\x00" * 20,  # header only
        b"\x08\x00\x05\x00\x10\x00\x00\x00" + b"\x00" * 8,  # length past the end
    ],
)
def test_bytes_that_only_start_like_a_bare_data_set_are_refused_cleanly(data):
    with pytest.raises(scans.ImageDecodeError):
        scans.decode(data, "odd.dcm")


def test_an_empty_or_half_given_window_is_no_window():
    full_range = scans.decode(_dicom(WindowCenter=None, WindowWidth=None))
    assert full_range.min() == 0.0 and full_range.max() == 1.0
    np.testing.assert_array_equal(scans.decode(_dicom(WindowCenter="")), full_range)
    np.testing.assert_array_equal(scans.decode(_dicom(WindowWidth=None)), full_range)
    windowed = scans.decode(_dicom())
    assert not np.array_equal(windowed, full_range)


@pytest.fixture(scope="module")
def scan(fixture_images: Path) -> np.ndarray:
    """A real 8-bit chest X-ray (28 x 28), as stored."""
    return np.asarray(Image.open(fixture_images / "normal_0.png"))


@pytest.mark.parametrize(
    ("photometric", "bits", "syntax", "tolerance"),
    [
        ("RGB", 8, "1.2.840.10008.1.2.1", 0.0),
        ("RGB", 16, "1.2.840.10008.1.2.1", 0.0),
        ("RGB", 8, "1.2.840.10008.1.2.5", 0.0),  # RLE Lossless
        ("YBR_FULL", 8, "1.2.840.10008.1.2.1", 2 / 255),  # YBR -> RGB rounds
    ],
)
def test_a_colour_dicom_decodes_like_a_colour_png(scan, photometric, bits, syntax, tolerance):
    from tests.data.make_fixtures import colour_dicom_bytes

    tint = np.stack([scan, scan // 2, 255 - scan], axis=-1).astype(np.uint16)
    stored = tint * 257 if bits == 16 else tint
    decoded = scans.decode(
        colour_dicom_bytes(stored, photometric=photometric, bits=bits, syntax=syntax)
    )
    png = io.BytesIO()
    Image.fromarray(tint.astype(np.uint8)).save(png, format="PNG")
    assert decoded.shape == (28, 28, 3) and decoded.dtype == np.float32
    np.testing.assert_allclose(decoded, scans.decode(png.getvalue()), atol=tolerance + 1e-7)


def test_a_gray_scan_stored_as_rgb_dicom_feeds_the_model_as_the_gray_one(scan):
    from tests.data.make_fixtures import colour_dicom_bytes

    rgb = scans.decode(colour_dicom_bytes(np.stack([scan] * 3, axis=-1)))
    np.testing.assert_allclose(
        scans.prepare(rgb, 16, 1), scans.prepare(scan / np.float32(255), 16, 1), atol=1e-6
    )


def test_a_multi_frame_colour_dicom_gives_its_first_frame(scan):
    from tests.data.make_fixtures import colour_dicom_bytes

    first = np.stack([scan] * 3, axis=-1)
    decoded = scans.decode(colour_dicom_bytes(np.stack([first, 255 - first])))
    np.testing.assert_array_equal(decoded, first / np.float32(255))


def test_a_palette_colour_dicom_is_looked_up_not_read_as_intensities(scan):
    from tests.data.make_fixtures import palette_dicom_bytes

    ramp = np.arange(256, dtype=np.uint16) * 257
    lut = np.stack([65535 - ramp, ramp, np.full(256, 32896, np.uint16)], axis=-1)
    decoded = scans.decode(palette_dicom_bytes(scan, lut))
    assert decoded.shape == (28, 28, 3)
    np.testing.assert_allclose(decoded, lut[scan] / 65535.0, atol=1e-7)


def test_a_compressed_dicom_without_a_decoder_names_its_transfer_syntax():
    import pydicom
    from pydicom.encaps import encapsulate
    from pydicom.pixels import get_decoder
    from pydicom.uid import HTJ2KLossless

    # High-Throughput JPEG 2000: only pylibjpeg-openjpeg reads it, and it is not installed.
    assert not get_decoder(HTJ2KLossless).is_available
    ds = pydicom.dcmread(io.BytesIO(_dicom()))
    ds.file_meta.TransferSyntaxUID = HTJ2KLossless
    ds.PixelData = encapsulate([b"\xff\x4f\xff\x51" + bytes(60)])
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    with pytest.raises(scans.ImageDecodeError) as info:
        scans.decode(buf.getvalue(), "scan.dcm")
    assert (
        "'High-Throughput JPEG 2000 Image Compression (Lossless Only)' cannot be decoded"
        in info.value.reason
    )


def test_missing_file_is_a_decode_error(tmp_path):
    with pytest.raises(scans.ImageDecodeError, match="cannot read"):
        scans.read_file(tmp_path / "absent.png")


def test_rgb_becomes_luminance_or_stays_three_channels():
    rgb = np.zeros((8, 8, 3), dtype=np.uint8)
    rgb[..., 0] = 255
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    decoded = scans.decode(buf.getvalue())
    assert decoded.shape == (8, 8, 3)
    gray = scans.prepare(decoded, 4, 1)
    assert gray.shape == (1, 4, 4)
    np.testing.assert_allclose(gray, 0.299, atol=1e-6)
    assert scans.prepare(decoded, 4, 3).shape == (3, 4, 4)


def test_model_input_resizes_and_normalises(fixture_images):
    spec = InputSpec(size=64, channels=3, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.5))
    image = scans.read_file(fixture_images / "big_normal_0.png")
    x = scans.to_model_input(image, spec)
    assert x.shape == (3, 64, 64) and x.dtype == np.float32
    unnormalised = (
        x * np.array(spec.std, dtype=np.float32)[:, None, None]
        + np.array(spec.mean, dtype=np.float32)[:, None, None]
    )
    np.testing.assert_allclose(unnormalised[0], unnormalised[1], atol=1e-5)  # gray replicated
    # Downscaling 512 -> 64 averages: the mean brightness is kept.
    assert abs(float(unnormalised[0].mean()) - float(image.mean())) < 0.01
    batch = scans.to_batch([image, image], spec)
    assert batch.shape == (2, 3, 64, 64)
    np.testing.assert_array_equal(batch[1], x)


def test_format_detection():
    assert scans.detect_format(b"\x89PNG\r\n\x1a\n....") == "png"
    assert scans.detect_format(b"\xff\xd8\xff\xe0") == "jpeg"
    assert scans.detect_format(b"\0" * 128 + b"DICM") == "dicom"
    assert scans.detect_format(b"GIF89a") is None


def test_only_the_first_frame_of_a_multi_frame_dicom_is_decoded():
    """RLE of 64 mostly black 512 x 512 RGB frames: under 1 MB on the wire, 50 MB decoded.
    Decoding them all to keep the first peaked at 64 MB, ten times one frame in float64."""
    import tracemalloc

    from tests.data.make_fixtures import colour_dicom_bytes

    frames = np.zeros((64, 512, 512, 3), np.uint8)
    frames[0, :, :256] = 255
    data = colour_dicom_bytes(frames, syntax="1.2.840.10008.1.2.5")
    tracemalloc.start()
    try:
        decoded = scans.decode(data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    np.testing.assert_array_equal(decoded, frames[0] / np.float32(255))
    one_frame_float64 = 512 * 512 * 3 * 8
    assert peak < 3 * one_frame_float64, f"peak {peak / 1e6:.1f} MB"
