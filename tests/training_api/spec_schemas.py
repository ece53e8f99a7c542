"""The schemas api_spec/openapi.yaml takes from the pydantic models, so the two cannot drift.

`python -m tests.training_api.spec_schemas --write` rewrites the generated tail of the spec;
test_spec.py fails when the file and the models disagree.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic.json_schema import models_json_schema

SPEC = Path(__file__).resolve().parents[2] / "api_spec" / "openapi.yaml"
MARKER = "    # --- generated from the pydantic models below this line ---\n"
REFRESH = "    # Refresh with: python -m tests.training_api.spec_schemas --write\n"
REF = "#/components/schemas/{model}"
JOB_STATUSES = ["queued", "running", "succeeded", "failed", "cancelled"]


def generated_schemas() -> dict[str, Any]:
    """Component schemas for the request (JobSpec), the job (JobView), a dry run (JobCheck)
    and the card."""
    from models.backbones import BACKBONES
    from models.card import ModelCard
    from models.spec import JobSpec
    from service.jobs.schemas import JobCheck, JobView
    from service.jobs.state import Phase, Status

    _, top = models_json_schema(
        [(JobSpec, "validation"), (JobView, "serialization"), (ModelCard, "serialization"),
         (JobCheck, "serialization")],
        ref_template=REF,
    )  # fmt: skip
    schemas: dict[str, Any] = top["$defs"]
    # The validator checks names against the backbone registry; say so in the contract.
    for name in ("JobSpec", "JobSpec-Input"):
        if name in schemas:
            schemas[name]["properties"]["base_model"]["enum"] = sorted(BACKBONES)
    # JobView keeps plain strings and dicts; the contract names the values they hold.
    job = schemas["JobView"]["properties"]
    job["status"] = {"$ref": REF.format(model="JobStatus")}
    job["phase"] = {"anyOf": [{"enum": [p.value for p in Phase]}, {"type": "null"}]}
    job["spec"] = {"$ref": REF.format(model="JobSpec")}
    schemas["JobCheck"]["properties"]["spec"] = {"$ref": REF.format(model="JobSpec")}
    assert [s.value for s in Status] == JOB_STATUSES, "JobStatus in the spec is out of date"
    return schemas


def render(schemas: dict[str, Any]) -> str:
    text = yaml.safe_dump(schemas, sort_keys=True, width=100, allow_unicode=True)
    return "".join(f"    {line}\n" for line in text.splitlines())


def write() -> None:
    head = SPEC.read_text().split(MARKER)[0]
    SPEC.write_text(head + MARKER + REFRESH + render(generated_schemas()))


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit("usage: python -m tests.training_api.spec_schemas --write")
    write()
