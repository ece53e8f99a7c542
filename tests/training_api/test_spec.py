"""api_spec/openapi.yaml is a valid OpenAPI 3.1 document that matches the code."""

from __future__ import annotations

import re

import yaml
from flask import Flask

from tests.training_api.conftest import SPEC_PATH
from tests.training_api.spec_schemas import generated_schemas


def test_schemas_taken_from_pydantic_models_are_current() -> None:
    in_file = yaml.safe_load(SPEC_PATH.read_text())["components"]["schemas"]

    stale = {name for name, schema in generated_schemas().items() if in_file.get(name) != schema}

    assert not stale, (
        f"{sorted(stale)} in api_spec/openapi.yaml differ from the pydantic models; run "
        "python -m tests.training_api.spec_schemas --write"
    )


def test_every_route_is_in_the_spec_and_every_spec_path_is_served(app: Flask) -> None:
    paths = yaml.safe_load(SPEC_PATH.read_text())["paths"]
    documented = {
        (path, method.upper())
        for path, item in paths.items()
        for method in item
        if method in {"get", "post", "put", "delete", "patch"}
    }
    # The dashboard's pages, static files and its two same-origin helpers (/ui/api/...) are
    # not part of the API contract; everything else is.
    served = {
        (re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule), method)
        for rule in app.url_map.iter_rules()
        if rule.endpoint != "static" and not rule.rule.startswith("/ui")
        for method in rule.methods or ()
        if method not in {"HEAD", "OPTIONS"}
    }

    assert served == documented
