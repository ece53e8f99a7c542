"""Checkpoints copied to the artifact store for runners whose disk dies with them (k8s)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from service.jobs.checkpoints import CheckpointSync
from service.storage import ArtifactStore, open_store


@pytest.fixture(params=["file", pytest.param("s3", marks=pytest.mark.s3)])
def artifacts(request: pytest.FixtureRequest, tmp_path: Path) -> ArtifactStore:
    if request.param == "file":
        return open_store((tmp_path / "artifacts").as_uri())
    bucket = request.getfixturevalue("s3_bucket")
    return open_store(f"s3://{bucket}/reg", endpoint_url=request.getfixturevalue("moto_server"))


def test_push_restore_and_discard(artifacts: ArtifactStore, tmp_path: Path) -> None:
    pod_a = tmp_path / "pod-a"
    (pod_a / "checkpoints").mkdir(parents=True)
    (pod_a / "checkpoints" / "last.pt").write_bytes(b"epoch-1")
    (pod_a / "checkpoints" / "best.pt").write_bytes(b"best-1")
    (pod_a / "checkpoints" / "last.pt.partial").write_bytes(b"half")
    sync = CheckpointSync(artifacts, "job-1", pod_a)
    assert sync.push() == 2
    assert sync.push() == 0  # unchanged files are not sent again
    last = pod_a / "checkpoints" / "last.pt"
    last.write_bytes(b"epoch-2")
    os.utime(last, (last.stat().st_atime, last.stat().st_mtime + 5))
    assert sync.push() == 1
    assert artifacts.list_keys("jobs/job-1/checkpoints") == [
        "jobs/job-1/checkpoints/best.pt",
        "jobs/job-1/checkpoints/last.pt",
    ]

    pod_b = tmp_path / "pod-b"  # the resumed pod starts with an empty disk
    assert CheckpointSync(artifacts, "job-1", pod_b).restore() == 2
    assert (pod_b / "checkpoints" / "last.pt").read_bytes() == b"epoch-2"
    assert CheckpointSync(artifacts, "job-2", tmp_path / "pod-c").restore() == 0
    sync.discard()
    assert artifacts.list_keys("jobs/job-1") == []
