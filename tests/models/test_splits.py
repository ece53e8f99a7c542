"""Splits that keep each patient's scans on one side: the deal of whole patients (classes
kept about even), the validation split and `limit` of a CSV manifest's `patient` column or
the DICOM files' Patient ID, folds of pooled data, a split given with a patient on both sides
counted, and the card saying how the job split its data."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest

from models.crossval import pooled
from models.data import DataError, Dataset, load_dataset
from models.spec import DatasetSpec
from models.splits import folds, group_folds, holdout, same_groups, stratified_folds

SOURCES = ("normal_0.png", "normal_1.png", "pneumonia_0.png", "pneumonia_1.png")


def patients(n: int, scans: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """`n` patients of `scans` scans each, a third of them sick (all their scans)."""
    rng = np.random.default_rng(seed)
    sick = rng.random(n) < 1 / 3
    groups = np.repeat(np.arange(n), scans)
    return np.repeat(sick.astype(np.int64), scans), groups


def test_whole_patients_go_to_one_fold_and_the_classes_stay_even() -> None:
    labels, groups = patients(60, 4)
    dealt = group_folds(labels, groups, 5, seed=0)
    for group in np.unique(groups):
        assert len(set(dealt[groups == group].tolist())) == 1  # never split
    shares = [labels[dealt == f].mean() for f in range(5)]
    assert max(shares) - min(shares) < 0.1  # each fold about a third sick
    assert sorted(np.bincount(dealt).tolist()) == [48] * 5  # 12 patients each
    assert np.array_equal(dealt, group_folds(labels, groups, 5, seed=0))  # seeded
    assert not np.array_equal(dealt, group_folds(labels, groups, 5, seed=1))
    assert np.array_equal(folds(labels, None, 5, 3), stratified_folds(labels, 5, 3))


def test_a_holdout_of_whole_patients_keeps_every_class_on_both_sides() -> None:
    labels, groups = patients(40, 3, seed=2)
    kept, held = holdout(labels, groups, 0.2, seed=0)
    assert same_groups(groups[kept], groups[held]) == 0
    assert set(labels[held].tolist()) == set(labels[kept].tolist()) == {0, 1}
    assert 0.1 < len(held) / len(labels) < 0.3
    kept, held = holdout(labels, groups, 0.9, seed=0)  # `limit`: keep a tenth
    assert 0.05 < len(kept) / len(labels) < 0.15 and same_groups(groups[kept], groups[held]) == 0
    # One patient holds every sick scan: no deal of whole patients can show both classes on
    # both sides, so the split is scan by scan, and that patient is on both sides.
    lone = np.zeros(30, dtype=np.int64)
    lone[:5] = 1
    one = np.concatenate([np.zeros(5, dtype=np.int64), np.arange(1, 26)])
    kept, held = holdout(lone, one, 0.2, seed=0)
    assert set(lone[held].tolist()) == {0, 1} and same_groups(one[kept], one[held]) == 1


def manifest(root: Path, fixture_images: Path, rows: list[tuple[str, str, str]]) -> Path:
    """A CSV manifest of copies of the fixture scans: (file, label, patient) rows."""
    root.mkdir(parents=True, exist_ok=True)
    for i, (name, _, _) in enumerate(rows):
        shutil.copy(fixture_images / SOURCES[i % len(SOURCES)], root / name)
    lines = ["path,label,patient", *(",".join(row) for row in rows)]
    (root / "manifest.csv").write_text("\n".join(lines) + "\n")
    return root / "manifest.csv"


def patient_rows(n: int, scans: int) -> list[tuple[str, str, str]]:
    return [
        (f"p{p}_{s}.png", "pneumonia" if p % 3 == 0 else "normal", f"MRN-{p:04d}")
        for p in range(n)
        for s in range(scans)
    ]


def load(uri: Path, **spec: Any) -> Dataset:
    found = DatasetSpec.model_validate({"uri": str(uri), "format": spec.pop("format", "csv"),
                                        **spec})  # fmt: skip
    return load_dataset(found, size=16, channels=1, seed=0)


def test_a_manifests_patients_are_never_on_both_sides(fixture_images: Path, tmp_path: Path) -> None:
    data = load(manifest(tmp_path / "d", fixture_images, patient_rows(24, 3)), val_fraction=0.25)
    assert (data.split_by, data.patients, data.patients_in_both) == ("patient", 24, 0)
    assert data.train.groups is not None and data.val.groups is not None
    assert same_groups(data.train.groups, data.val.groups) == 0
    assert len(data.val.labels) % 3 == 0 and set(data.val.labels.tolist()) == {0, 1}
    both = pooled(data)  # cross-validation and search deal whole patients too
    dealt = folds(both.labels, both.groups, 3, seed=0)
    for group in np.unique(both.groups):
        assert len(set(dealt[both.groups == group].tolist())) == 1
    limited = load(manifest(tmp_path / "d", fixture_images, patient_rows(24, 3)), limit=30)
    assert limited.train.groups is not None and len(limited.train.labels) % 3 == 0
    assert 20 <= len(limited.train.labels) <= 40  # about the limit, in whole patients
    by_scan = load(tmp_path / "d" / "manifest.csv", split_by="scan")
    assert (by_scan.split_by, by_scan.patients, by_scan.train.groups) == ("scan", None, None)
    assert "MRN" not in repr(data.train.names) + repr(data.val.names)


def test_a_split_given_with_a_patient_on_both_sides_is_counted(
    fixture_images: Path, tmp_path: Path
) -> None:
    rows = patient_rows(8, 2)
    path = manifest(tmp_path / "d", fixture_images, rows)
    text = ["path,label,patient,split"] + [
        f"{name},{label},{patient},{'val' if i in (1, 3, 4, 9) else 'train'}"
        for i, (name, label, patient) in enumerate(rows)
    ]  # one scan each of patients 0, 1, 2 and 4 in val, their other in train
    path.write_text("\n".join(text) + "\n")
    data = load(path)
    assert (data.split_by, data.patients, data.patients_in_both) == ("patient", 8, 4)


def test_dicom_files_name_their_patients(fixture_images: Path, tmp_path: Path) -> None:
    root = tmp_path / "folder"
    for p in range(12):
        label = "pneumonia" if p % 3 == 0 else "normal"
        (root / label).mkdir(parents=True, exist_ok=True)
        for s in range(2):
            ds = pydicom.dcmread(fixture_images / f"{label}_0_rescale.dcm")
            ds.PatientID = f"MRN-{p:04d}"
            ds.save_as(root / label / f"p{p}_{s}.dcm")
    data = load(root, format="imagefolder", val_fraction=0.25)
    assert (data.split_by, data.patients, data.patients_in_both) == ("patient", 12, 0)
    assert data.train.groups is not None and data.val.groups is not None
    assert same_groups(data.train.groups, data.val.groups) == 0
    png = load(manifest(tmp_path / "png", fixture_images, [
        (f"s{i}.png", ("normal", "pneumonia")[i % 2], "") for i in range(8)
    ]))  # fmt: skip  # no patient named anywhere: scan by scan
    assert (png.split_by, png.patients, png.train.groups) == ("scan", None, None)


def test_the_card_schema_reads_older_cards_without_the_split() -> None:
    from models.card import DatasetInfo

    older = DatasetInfo.model_validate({"uri": "/d.npz", "format": "npz", "sha256": "0" * 64})
    assert (older.split_by, older.patients, older.patients_in_both) == (None, None, None)
    with pytest.raises(ValueError, match="split_by"):
        DatasetInfo.model_validate({**older.model_dump(), "split_by": "study"})


def test_an_npz_names_its_patients_in_patients_arrays(
    pneumonia_small_npz: Path, tmp_path: Path
) -> None:
    """`train_patients` (whole numbers or text) names each scan's patient: the validation split
    deals whole patients, as a manifest's column does; an array of another shape is refused."""
    with np.load(pneumonia_small_npz) as found:
        arrays = {k: found[k] for k in found.files if k.startswith("train_")}
    count = len(arrays["train_labels"])
    by_label = np.argsort(arrays["train_labels"].ravel(), kind="stable")
    ids = np.empty(count, dtype="<U12")
    ids[by_label] = [f"MRN-{i // 4:04d}" for i in range(count)]  # 4 scans each, one class
    path = tmp_path / "patients.npz"
    np.savez(path, **arrays, train_patients=ids)
    data = load(path, format="npz", val_fraction=0.25)
    assert (data.split_by, data.patients, data.patients_in_both) == ("patient", count // 4, 0)
    assert data.train.groups is not None and data.val.groups is not None
    assert len(data.val.labels) % 4 == 0 and set(data.val.labels.tolist()) == {0, 1}
    numbered = tmp_path / "numbered.npz"
    np.savez(numbered, **arrays, train_patients=np.arange(count) // 2)
    assert load(numbered, format="npz", val_fraction=0.25).patients == count // 2
    assert load(path, format="npz", split_by="scan").train.groups is None
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, **arrays, train_patients=np.zeros(count - 1, dtype=np.int64))
    with pytest.raises(DataError, match=r"train_patients of shape \(\d+,\) does not name one"):
        load(wrong, format="npz")
    floats = tmp_path / "floats.npz"
    np.savez(floats, **arrays, train_patients=np.zeros(count))
    with pytest.raises(DataError, match="patient IDs must be whole numbers or text"):
        load(floats, format="npz")
