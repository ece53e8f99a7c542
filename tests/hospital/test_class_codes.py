"""Class codes and intended use: from the job spec to the card, private codes by default."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from models.card import PRIVATE_CODING_SCHEME, ClassCode, IntendedUse
from models.intended_use import from_dicom_files
from models.spec import JobSpec
from tests.hospital.conftest import IMAGES
from tests.service.conftest import make_run_dir


def _spec(classes: list[object]) -> JobSpec:
    return JobSpec.model_validate(
        {
            "model_name": "chest",
            "dataset": {
                "uri": "/data/x.npz",
                "classes": classes,
                "intended_use": {"modality": "CR", "body_part": "CHEST"},
            },
        }
    )


def test_coded_and_plain_classes_mix() -> None:
    pneumonia = {"scheme": "SCT", "value": "233604007", "meaning": "Pneumonia"}
    spec = _spec(["normal", {"name": "pneumonia", "code": pneumonia}])
    assert spec.dataset.class_names == ["normal", "pneumonia"]
    assert spec.dataset.class_codes(["normal", "pneumonia"]) == (None, ClassCode(**pneumonia))
    assert spec.dataset.intended_use is not None and spec.dataset.intended_use.modality == "CR"


def test_no_code_means_none_on_the_card() -> None:
    assert _spec(["normal", "pneumonia"]).dataset.class_codes(["normal", "pneumonia"]) is None


def test_a_bad_code_is_refused() -> None:
    with pytest.raises(ValidationError, match="scheme"):
        _spec([{"name": "pneumonia", "code": {"scheme": "", "value": "1", "meaning": "x"}}])


def test_the_card_fills_private_codes(tmp_path: Path) -> None:
    trained_card = make_run_dir(tmp_path)[1]
    sct = ClassCode(scheme="SCT", value="233604007", meaning="Pneumonia")
    card = trained_card.model_copy(update={"class_codes": (None, sct)})
    codes = card.coded_classes()
    assert codes[1] == sct
    assert codes[0].scheme == PRIVATE_CODING_SCHEME and codes[0].value == card.classes[0]
    plain = trained_card.model_copy(update={"class_codes": None})
    assert all(c.scheme == PRIVATE_CODING_SCHEME for c in plain.coded_classes())


def test_intended_use_is_read_from_dicom_training_files(tmp_path: Path) -> None:
    from models.data import load_dataset
    from models.spec import DatasetSpec
    from tests.hospital.conftest import in_study

    for cls in ("normal", "pneumonia"):
        (tmp_path / cls).mkdir()
        for i in range(3):
            scan = in_study(f"{cls}_{i % 2}_mono1.dcm", "1.2.3", BodyPartExamined="CHEST")
            scan.save_as(tmp_path / cls / f"{i}.dcm", enforce_file_format=True)
    (tmp_path / "normal" / "extra.png").write_bytes((IMAGES / "normal_0.png").read_bytes())
    spec = DatasetSpec(uri=str(tmp_path), format="imagefolder", val_fraction=0.34)
    data = load_dataset(spec, size=16, channels=1, cache_dir=tmp_path / "cache")
    assert data.intended_use == IntendedUse(modality="CR", body_part="CHEST")


def test_modalities_of_different_kinds_record_none(tmp_path: Path) -> None:
    from tests.hospital.conftest import in_study

    paths = []
    for i, modality in enumerate(("CR", "DX", "CT")):
        paths.append(tmp_path / f"{i}.dcm")
        in_study("normal_0_mono1.dcm", "1.2.3", modality=modality).save_as(
            paths[-1], enforce_file_format=True
        )
    assert from_dicom_files(paths[:2]) == IntendedUse(modality="CR")  # one kind: X-ray
    assert from_dicom_files(paths) is None
    assert from_dicom_files([IMAGES / "normal_0.png"]) is None
