"""A job's local paths are made absolute once, where the job is written (models.spec)."""

from __future__ import annotations

from pathlib import Path

import pytest

from models.spec import JobSpec
from models.uri import absolute_uri


def spec(uri: str, **fields: object) -> JobSpec:
    return JobSpec.model_validate({"model_name": "chest", "dataset": {"uri": uri}, **fields})


def test_relative_paths_become_absolute_against_the_current_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    job = spec("data/../data/scans.npz", weights_uri="w/r18.pth")
    job.dataset.val_uri = "val.npz"

    absolute = job.with_absolute_paths()

    assert absolute.dataset.uri == str(tmp_path / "data" / "scans.npz")
    assert absolute.dataset.val_uri == str(tmp_path / "val.npz")
    assert absolute.weights_uri == str(tmp_path / "w" / "r18.pth")
    assert job.dataset.uri == "data/../data/scans.npz"  # a copy: the original is unchanged


@pytest.mark.parametrize("uri", ["s3://bucket/scans/", "/data/scans.npz", "file:///data/scans.npz"])
def test_s3_absolute_and_file_uris_are_left_alone(uri: str) -> None:
    assert absolute_uri(uri, Path("/elsewhere")) == uri
    assert spec(uri).with_absolute_paths().dataset.uri == uri


def test_a_path_no_file_could_have_is_left_to_the_existence_check() -> None:
    """A NUL byte: no file system call is made, so nothing raises here."""
    assert absolute_uri("a\x00b", Path("/base")) == "/base/a\x00b"
    assert spec("x", weights_uri=None).with_absolute_paths().weights_uri is None
