"""JobService as the training API calls it: validation, idempotency, listing, cancel."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from models.spec import JobSpec
from service.config import TrainingSettings
from service.errors import Conflict, NotFound, ServiceUnavailable, Unprocessable
from service.jobs.database import make_engine
from service.jobs.service import JobService
from service.jobs.state import IllegalTransition

ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|\+00:00)$")


@pytest.fixture
def idle_service(
    settings_env: Callable[..., TrainingSettings], db_url: str
) -> Iterator[JobService]:
    """A JobService whose supervisor is not started: submitted jobs stay queued."""
    service = JobService.from_settings(settings_env(database_url=db_url))
    yield service
    service.stop()


def test_missing_dataset_is_unprocessable_naming_the_field(
    idle_service: JobService, make_spec: Callable[..., JobSpec], tmp_path: Path
) -> None:
    spec = make_spec(
        dataset={"uri": str(tmp_path / "nope.npz")}, weights_uri=f"file://{tmp_path}/w.pth"
    )
    with pytest.raises(Unprocessable) as info:
        idle_service.submit(spec)
    assert info.value.status == 422
    assert [e["loc"] for e in info.value.errors or []] == ["body/dataset/uri", "body/weights_uri"]
    assert "nope.npz does not exist" in info.value.detail
    assert idle_service.job_counts()["queued"] == 0


def test_submit_get_and_view_shape(
    idle_service: JobService, make_spec: Callable[..., JobSpec]
) -> None:
    view = idle_service.submit(make_spec(), actor="ci-bot")
    body = idle_service.get(view.id).model_dump(mode="json")
    assert body["status"] == "queued" and body["created_by"] == "ci-bot"
    assert body["progress"] == 0.0 and body["attempts"] == 0 and body["epochs"] == 1
    assert body["error"] is None and body["artifacts"] is None and body["webhook"] is None
    assert ISO_UTC.match(body["created_at"]), body["created_at"]
    assert body["spec"]["model_name"] == "chest-xray"
    with pytest.raises(NotFound) as info:
        idle_service.get("0000")
    assert info.value.status == 404


def test_idempotent_submit(
    idle_service: JobService, make_spec: Callable[..., JobSpec], tmp_path: Path
) -> None:
    data = tmp_path / "data.npz"
    data.write_bytes(b"x")
    spec = make_spec(dataset={"uri": str(data)})
    first = idle_service.submit(spec, idempotency_key="abc")
    data.unlink()  # a retry must not fail because the data has moved on since
    assert idle_service.submit(spec, idempotency_key="abc").id == first.id
    with pytest.raises(Conflict):
        idle_service.submit(make_spec(epochs=3), idempotency_key="abc")


def test_list_pages_and_filters(
    idle_service: JobService, make_spec: Callable[..., JobSpec]
) -> None:
    ids = [idle_service.submit(make_spec(seed=i)).id for i in range(5)]
    idle_service.cancel(ids[0], actor="a")
    first, cursor = idle_service.list(limit=2)
    second, cursor2 = idle_service.list(limit=2, cursor=cursor)
    third, end = idle_service.list(limit=2, cursor=cursor2)
    assert [v.id for v in first + second + third] == ids[::-1] and end is None
    cancelled, _ = idle_service.list(status="cancelled")
    assert [v.id for v in cancelled] == [ids[0]]
    assert idle_service.list(model_name="other")[0] == []


def test_cancel_queued_then_again_is_409(
    idle_service: JobService, make_spec: Callable[..., JobSpec]
) -> None:
    job = idle_service.submit(make_spec())
    view = idle_service.cancel(job.id, actor="alice")
    assert view.status == "cancelled" and view.finished_at is not None
    assert view.error is not None and view.error.reason == "cancelled"
    with pytest.raises(IllegalTransition) as info:
        idle_service.cancel(job.id, actor="alice")
    assert info.value.status == 409
    assert idle_service.job_counts() == {
        "queued": 0,
        "running": 0,
        "succeeded": 0,
        "failed": 0,
        "cancelled": 1,
    }


def test_logs_and_readiness(idle_service: JobService, make_spec: Callable[..., JobSpec]) -> None:
    job = idle_service.submit(make_spec())
    assert idle_service.logs(job.id) == ""
    idle_service.check()


def test_readiness_fails_when_the_database_is_gone(
    settings_env: Callable[..., TrainingSettings],
) -> None:
    service = JobService.from_settings(settings_env())
    service.store.engine.dispose()
    service.store.engine = make_engine("postgresql+psycopg://nobody@127.0.0.1:1/none")
    with pytest.raises(ServiceUnavailable):
        service.check()
    service.stop()


@pytest.mark.s3
def test_s3_dataset_must_exist(
    settings_env: Callable[..., TrainingSettings],
    make_spec: Callable[..., JobSpec],
    s3_bucket: str,
    s3_env: dict[str, str],
) -> None:
    from models.uri import s3_client

    s3_client(s3_env["SCANTUNE_S3_ENDPOINT_URL"]).put_object(
        Bucket=s3_bucket, Key="sets/a/train.npz", Body=b"x"
    )
    prefixes = [f"s3://{s3_bucket}/sets/", "s3://no-such-bucket-here/"]
    service = JobService.from_settings(settings_env(s3_data_prefixes=prefixes))
    try:
        assert service.submit(make_spec(dataset={"uri": f"s3://{s3_bucket}/sets/a/train.npz"}))
        assert service.submit(make_spec(dataset={"uri": f"s3://{s3_bucket}/sets/a/"}))
        for missing in (
            f"s3://{s3_bucket}/sets/b.npz",
            f"s3://{s3_bucket}/sets/a/train",
            "s3://no-such-bucket-here/sets/a/train.npz",
        ):
            with pytest.raises(Unprocessable, match=r"dataset\.uri"):
                service.submit(make_spec(dataset={"uri": missing}))
    finally:
        service.stop()


def test_failure_reasons_and_details() -> None:
    from models.data import DataError
    from service.jobs.failures import PublishFailed, failure_reason, short_detail
    from service.storage import StoreError

    assert failure_reason(DataError(["a.npz: unreadable"])) == "data_error"
    assert failure_reason(PublishFailed("StoreError: denied")) == "publish_failed"
    assert failure_reason(StoreError("x")) == "store_error"
    assert failure_reason(KeyError("x")) == "runner_crashed"
    detail = short_detail(RuntimeError("first line\n  second line\n" + "x" * 1000))
    assert detail.startswith("RuntimeError: first line second line") and len(detail) == 400
    assert (
        short_detail(PublishFailed("StoreError: denied")) == "publishing failed: StoreError: denied"
    )
