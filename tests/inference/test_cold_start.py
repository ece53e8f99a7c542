"""Cold start: a worker starts loading its models before it imports Flask and the views.

onnxruntime builds a session without holding the GIL, so the model loads while the web side
is still importing; that only works while `service.inference` and the model manager stay
importable without Flask.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def run_fresh(script: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run `script` in a fresh interpreter from the repository root; it must succeed."""
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result


def test_the_model_manager_imports_without_flask(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import sys
        import service.inference
        import service.inference.manager
        print("imported:", sorted(m for m in ("flask", "werkzeug") if m in sys.modules))
        """
    )
    result = run_fresh(script, {"SCANTUNE_ARTIFACT_URI": f"file://{tmp_path}"})
    assert result.stdout.strip() == "imported: []"


BEFORE_FORK = textwrap.dedent(
    """
    import json, os, sys, threading
    from service.inference import gunicorn_conf  # what `scantune serve inference` loads
    from service.config import InferenceSettings
    from service.inference import before_fork
    before_fork(InferenceSettings())
    found = {
        "modules": sorted(m for m in ("flask", "service.inference.v1", "service.inference.v2",
                                      "service.inference.predictor", "boto3", "onnxruntime",
                                      "torch") if m in sys.modules),
        "python_threads": threading.active_count(),
        "image_plugins": sorted(m.rsplit(".", 1)[1] for m in sys.modules
                                if m in ("PIL.PngImagePlugin", "PIL.JpegImagePlugin")),
        "hooks": sorted(h for h in ("on_starting", "pre_fork", "post_fork", "pre_request",
                                    "post_request", "child_exit") if hasattr(gunicorn_conf, h)),
    }
    if "boto3" in sys.modules:
        import boto3
        session = boto3.DEFAULT_SESSION._session
        cached = session.get_component("data_loader")._cache  # botocore's per-loader cache
        found["s3_description_loaded"] = any(
            str(key[1]).startswith("s3/") and str(key[1]).endswith("/service-2") for key in cached
        )
        found["credentials_looked_up"] = session._credentials is not None
    print(json.dumps(found))
    """
)


def run_before_fork(artifact_uri: str) -> dict[str, object]:
    env = {"SCANTUNE_ARTIFACT_URI": artifact_uri,
           "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"}  # fmt: skip
    found: dict[str, object] = json.loads(run_fresh(BEFORE_FORK, env).stdout)
    return found


def test_gunicorns_master_imports_the_web_side_once_for_all_workers(tmp_path: Path) -> None:
    found = run_before_fork(f"file://{tmp_path}")
    web = ["flask", "service.inference.predictor", "service.inference.v1", "service.inference.v2"]
    assert found["modules"] == web  # not boto3 (a local store), onnxruntime nor torch
    assert found["python_threads"] == 1  # nothing started that a fork would lose
    assert found["image_plugins"] == ["JpegImagePlugin", "PngImagePlugin"]
    assert found["hooks"] == sorted(
        ["on_starting", "pre_fork", "post_fork", "pre_request", "post_request", "child_exit"]
    )


def test_with_an_s3_store_the_master_also_loads_boto3_but_makes_no_client() -> None:
    found = run_before_fork("s3://bucket/artifacts")
    assert "boto3" in found["modules"] and "onnxruntime" not in found["modules"]
    assert found["s3_description_loaded"] is True
    assert found["credentials_looked_up"] is False  # each worker resolves its own
    assert found["python_threads"] == 1


def test_a_worker_reads_dicom_from_its_start_not_from_its_first_dicom_scan(
    tmp_path: Path,
) -> None:
    """The first DICOM scan of a worker took 150 ms (pydicom's import) against 15 ms for the
    next: the app factory imports the reader while the preloaded models build."""
    script = textwrap.dedent(
        """
        import sys
        from service.inference import create_app
        before = "pydicom" in sys.modules
        app = create_app()
        print(before, "pydicom" in sys.modules, "torch" in sys.modules)
        app.extensions["scantune"].manager.stop()
        """
    )
    result = run_fresh(script, {"SCANTUNE_ARTIFACT_URI": f"file://{tmp_path}"})
    assert result.stdout.split() == ["False", "True", "False"]
