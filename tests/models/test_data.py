"""Dataset readers: npz, image folders, CSV manifests, S3, and every DataError case."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from models import scans
from models.data import DataError, load_dataset, read_npz
from models.spec import DatasetSpec
from models.uri import sha256_file

STEMS = {"normal": ["normal_0", "normal_1"], "pneumonia": ["pneumonia_0", "pneumonia_1"]}
VARIANTS = [".png", "_16.png", ".jpg", "_rescale.dcm", "_mono1.dcm"]


def _spec(uri: Path | str, fmt: str = "npz", **kw: object) -> DatasetSpec:
    return DatasetSpec.model_validate({"uri": str(uri), "format": fmt, **kw})


def _load(spec: DatasetSpec, size: int = 16, seed: int = 0) -> object:
    return load_dataset(spec, size=size, channels=1, seed=seed, cache_dir=None)


def _problems(spec: DatasetSpec) -> list[str]:
    with pytest.raises(DataError) as info:
        load_dataset(spec, size=16, channels=1)
    return info.value.problems


@pytest.fixture
def image_folder(fixture_images: Path, tmp_path: Path) -> Path:
    """root/<class>/* with every format of each of the four fixture scans."""
    root = tmp_path / "folder"
    for cls, stems in STEMS.items():
        (root / cls).mkdir(parents=True)
        for stem in stems:
            for variant in VARIANTS:
                shutil.copy(fixture_images / f"{stem}{variant}", root / cls / f"{stem}{variant}")
    return root


# --- npz -----------------------------------------------------------------------------------


def test_npz_splits_prepared_like_inference(pneumonia_small_npz: Path) -> None:
    data = _load(_spec(pneumonia_small_npz, classes=["normal", "pneumonia"]), size=32)
    assert data.train.images.shape == (160, 1, 32, 32)
    assert data.class_counts() == {
        "train": {"normal": 80, "pneumonia": 80},
        "val": {"normal": 32, "pneumonia": 32},
    }
    assert data.sha256 == sha256_file(pneumonia_small_npz)
    with np.load(pneumonia_small_npz) as raw:
        expected = scans.prepare(raw["val_images"][5].astype(np.float32) / 255, 32, 1)
    assert np.array_equal(data.val.images[5], expected)


def test_npz_without_val_is_split_stratified_and_seeded(
    tmp_path: Path, pneumonia_arrays: dict
) -> None:
    path = tmp_path / "train_only.npz"
    labels = pneumonia_arrays["train_labels"].ravel()
    pick = np.r_[np.flatnonzero(labels == 0)[:60], np.flatnonzero(labels == 1)[:140]]
    np.savez(path, train_images=pneumonia_arrays["train_images"][pick], train_labels=labels[pick])
    spec = _spec(path, val_fraction=0.2)
    a, b, c = _load(spec, seed=1), _load(spec, seed=1), _load(spec, seed=2)
    assert len(a.val.labels) == pytest.approx(40, abs=2)
    assert set(a.val.labels.tolist()) == {0, 1}
    assert np.bincount(a.val.labels).tolist() == [12, 28]
    assert a.val.names == b.val.names and a.val.names != c.val.names


def test_npz_limit_keeps_both_classes(pneumonia_small_npz: Path) -> None:
    data = _load(_spec(pneumonia_small_npz, limit=40))
    assert np.bincount(data.train.labels).tolist() == [20, 20]


def test_npz_missing_split_arrays(tmp_path: Path) -> None:
    path = tmp_path / "broken.npz"
    np.savez(
        path, train_images=np.zeros((4, 8, 8), np.uint8), val_images=np.zeros((2, 8, 8), np.uint8)
    )
    problems = _problems(_spec(path))
    assert any("broken.npz" in p and "missing split arrays ['train_labels']" in p for p in problems)
    assert any("missing split arrays ['val_labels']" in p for p in problems)


def test_npz_unknown_label(tmp_path: Path) -> None:
    path = tmp_path / "labels.npz"
    labels = np.array([[0], [1], [5], [0]])
    np.savez(path, train_images=np.zeros((4, 8, 8), np.uint8), train_labels=labels)
    problems = _problems(_spec(path, classes=["a", "b"]))
    assert problems == ["labels.npz:train_images[2]: unknown label 5 (classes ['a', 'b'])"]


# --- image folders -------------------------------------------------------------------------


def test_imagefolder_decodes_every_format_alike(image_folder: Path) -> None:
    data = _load(_spec(image_folder, "imagefolder", val_fraction=0.3))
    assert data.classes == ["normal", "pneumonia"]
    both = {
        n: img for s in (data.train, data.val) for n, img in zip(s.names, s.images, strict=True)
    }
    assert len(both) == 20
    for cls, stems in STEMS.items():
        for stem in stems:
            png = both[f"{cls}/{stem}.png"]
            for variant in ("_16.png", "_rescale.dcm", "_mono1.dcm"):
                assert np.abs(both[f"{cls}/{stem}{variant}"] - png).max() < 1e-5, variant
            assert np.abs(both[f"{cls}/{stem}.jpg"] - png).mean() < 0.02


def test_imagefolder_with_train_and_val(image_folder: Path, tmp_path: Path) -> None:
    root = tmp_path / "split"
    shutil.copytree(image_folder, root / "train")
    shutil.copytree(image_folder / "normal", root / "val" / "normal")
    shutil.copytree(image_folder / "pneumonia", root / "val" / "pneumonia")
    data = _load(_spec(root, "imagefolder"))
    assert len(data.train.labels) == 20 and len(data.val.labels) == 20
    assert data.val.names[0].startswith("val/")


def test_imagefolder_reports_every_problem_at_once(
    image_folder: Path, fixture_images: Path
) -> None:
    shutil.copy(fixture_images / "not_an_image.txt", image_folder / "normal" / "notes.txt")
    shutil.copy(fixture_images / "truncated.png", image_folder / "pneumonia" / "cut.png")
    shutil.copy(fixture_images / "no_pixels.dcm", image_folder / "pneumonia" / "empty.dcm")
    (image_folder / "effusion").mkdir()
    problems = _problems(
        _spec(image_folder, "imagefolder", classes=["normal", "pneumonia", "effusion"])
    )
    text = "\n".join(problems)
    assert "normal/notes.txt: unreadable file (not a PNG, JPEG or DICOM file)" in text
    assert "pneumonia/cut.png: unreadable file" in text
    assert "pneumonia/empty.dcm: unreadable file (DICOM file has no pixel data)" in text
    assert "effusion/: empty class" in text
    assert "class 'effusion'" not in text  # reported once, with its folder


def test_imagefolder_unknown_label(image_folder: Path) -> None:
    problems = _problems(_spec(image_folder, "imagefolder", classes=["normal", "covid"]))
    assert any("pneumonia/: unknown label 'pneumonia'" in p for p in problems)


def test_fewer_than_two_classes(image_folder: Path) -> None:
    shutil.rmtree(image_folder / "pneumonia")
    problems = _problems(_spec(image_folder, "imagefolder"))
    assert any("fewer than 2 classes" in p for p in problems)


def test_missing_dataset() -> None:
    problems = _problems(_spec("/nonexistent/data.npz"))
    assert "/nonexistent/data.npz" in problems[0] and "does not exist" in problems[0]


# --- CSV manifests -------------------------------------------------------------------------


def _manifest(folder: Path, rows: list[str]) -> Path:
    path = folder / "manifest.csv"
    path.write_text("\n".join(["path,label,split", *rows]) + "\n")
    return path


def test_csv_manifest_with_splits(image_folder: Path) -> None:
    rows = [f"{c}/{s}.png,{c},train" for c, stems in STEMS.items() for s in stems]
    rows += [f"{c}/{s}_rescale.dcm,{c},val" for c, stems in STEMS.items() for s in stems]
    data = _load(_spec(_manifest(image_folder, rows), "csv"))
    assert data.class_counts() == {
        "train": {"normal": 2, "pneumonia": 2},
        "val": {"normal": 2, "pneumonia": 2},
    }
    assert np.abs(data.train.images - data.val.images).max() < 1e-5  # same scans, PNG vs DICOM


def test_csv_manifest_problems(image_folder: Path) -> None:
    rows = [
        "normal/normal_0.png,normal,train",
        "normal/gone.png,normal,train",
        "pneumonia/pneumonia_0.png,cat,train",
    ]
    rows += ["pneumonia/pneumonia_1.png,pneumonia,test"]
    problems = _problems(
        _spec(_manifest(image_folder, rows), "csv", classes=["normal", "pneumonia"])
    )
    text = "\n".join(problems)
    assert "manifest.csv line 3 (normal/gone.png): missing file" in text
    assert "manifest.csv line 4 (pneumonia/pneumonia_0.png): unknown label 'cat'" in text
    assert "line 5 (pneumonia/pneumonia_1.png): unknown split 'test'" in text
    assert "class 'pneumonia': empty class" in text


def test_csv_without_header(image_folder: Path) -> None:
    path = image_folder / "bad.csv"
    path.write_text("a.png,normal\n")
    assert "needs a header" in _problems(_spec(path, "csv"))[0]


# --- S3 ------------------------------------------------------------------------------------


@pytest.mark.s3
def test_imagefolder_from_s3(
    image_folder: Path, s3_bucket: str, s3_env: dict[str, str], tmp_path: Path
) -> None:
    from models.uri import s3_client

    client = s3_client(s3_env["SCANTUNE_S3_ENDPOINT_URL"])
    for file in image_folder.rglob("*"):
        if file.is_file():
            client.upload_file(
                str(file), s3_bucket, f"sets/xray/{file.relative_to(image_folder).as_posix()}"
            )
    spec = _spec(f"s3://{s3_bucket}/sets/xray", "imagefolder")
    remote = load_dataset(spec, size=16, channels=1, cache_dir=tmp_path / "cache")
    local = _load(_spec(image_folder, "imagefolder"))
    assert remote.sha256 == local.sha256
    assert np.array_equal(remote.train.images, local.train.images)


# --- what a dataset may not hold ---------------------------------------------------------------


NAN = np.full((4, 8, 8), np.nan, np.float32)
ZEROS = np.zeros((4, 8, 8), np.uint8)
LABELS = [0, 1, 0, 1]
ODD_ARRAYS = {
    "nan": (NAN, LABELS, "4 image(s) hold values that are not finite"),
    "0-255 floats": (np.full((4, 8, 8), 200.0, np.float32), LABELS, "outside [0, 1]"),
    "int32": (np.full((4, 8, 8), 200, np.int32), LABELS, "of dtype int32: send uint8"),
    "no pixels": (np.zeros((4, 0, 0), np.uint8), LABELS, "holds no pixels"),
    "half label": (
        ZEROS,
        [0.0, 1.5, 0.0, 1.0],
        "1 label(s) that are not whole numbers (first at: 1)",
    ),
    "nan label": (ZEROS, [0.0, np.nan, 0.0, 1.0], "not whole numbers"),
    "text labels": (ZEROS, ["a", "b", "a", "b"], "labels must be whole numbers"),
    "0-d labels": (ZEROS, 1, "does not give one label per image"),
}


@pytest.mark.parametrize(("images", "labels", "says"), ODD_ARRAYS.values(), ids=ODD_ARRAYS)
def test_npz_arrays_that_would_train_on_something_else_are_refused(
    tmp_path: Path, images: np.ndarray, labels: object, says: str
) -> None:
    path = tmp_path / "odd.npz"
    np.savez(path, train_images=images, train_labels=np.asarray(labels))
    problems = _problems(_spec(path, classes=["a", "b"]))
    assert any(p.startswith("odd.npz: train_") and says in p for p in problems), problems


def test_npz_whole_float_labels_and_unit_floats_are_fine(tmp_path: Path) -> None:
    path = tmp_path / "floats.npz"
    images = np.linspace(0, 1, 8 * 8 * 8, dtype=np.float32).reshape(8, 8, 8)
    np.savez(path, train_images=images, train_labels=np.array([0.0, 1.0] * 4))
    listing = read_npz(path, ["a", "b"])
    assert listing.problems == [] and [it.label for it in listing.train] == [0, 1] * 4
    np.testing.assert_array_equal(listing.train[3].load(), images[3])


def test_csv_rows_may_not_leave_the_manifests_folder_or_lack_fields(
    image_folder: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "secret.png"
    outside.write_bytes((image_folder / "normal" / "normal_0.png").read_bytes())
    rows = [
        "normal/normal_0.png,normal,train",
        "pneumonia/pneumonia_0.png,pneumonia,train",
        f"{outside},normal,train",
        "../secret.png,normal,train",
        "normal/normal_1.png",
    ]
    problems = _problems(
        _spec(_manifest(image_folder, rows), "csv", classes=["normal", "pneumonia"])
    )
    text = "\n".join(problems)
    assert f"line 4 ({outside}): paths must be relative and stay inside" in text
    assert "line 5 (../secret.png): paths must be relative and stay inside" in text
    assert "manifest.csv line 6: fewer fields than the header names" in text


@pytest.mark.s3
@pytest.mark.parametrize("uri_key", ["sets/x", "sets/../../../x"])
def test_s3_keys_that_climb_out_of_the_download_folder_are_refused(
    s3_bucket: str, s3_env: dict[str, str], tmp_path: Path, uri_key: str
) -> None:
    from models.uri import UriError, fetch, s3_client

    client = s3_client(s3_env["SCANTUNE_S3_ENDPOINT_URL"])
    client.put_object(Bucket=s3_bucket, Key=f"{uri_key}/a.png", Body=b"a")
    client.put_object(Bucket=s3_bucket, Key=f"{uri_key}/../../../../escaped.txt", Body=b"evil")
    cache = tmp_path / "deep" / "cache"
    with pytest.raises(UriError, match="climbs out of the download folder"):
        fetch(f"s3://{s3_bucket}/{uri_key}", cache, endpoint_url=s3_env["SCANTUNE_S3_ENDPOINT_URL"])
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []  # nothing written anywhere
