"""`scantune series`: the node's series from the shell, against the node's app over HTTP."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import get_args

import pytest

from service.cli import main
from service.commands.series import STATES
from service.dicom_node.operations import State
from tests.dicom_node.parts import node_over_http

KEYS = {"ops": ["series:read"], "operator": ["series:read", "admin"], "ci": ["read"]}


@pytest.fixture
def node(tmp_path: Path) -> Iterator[str]:
    with node_over_http(tmp_path, KEYS, studies=2) as url:
        yield url


def _run(node: str, key: str, *argv: str) -> int:
    return main(["series", *argv, "--url", node, "--api-key", f"{key}-secret"])


def test_list_show_and_send_now(node: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(node, "ops", "list", "--json") == 0
    items = json.loads(capsys.readouterr().out)["items"]
    assert [s["state"] for s in items] == ["receiving", "receiving"]
    assert _run(node, "ops", "list", "--limit", "1") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["ID", "STATE", "MODEL"]
    assert lines[1].split()[:4] == [str(items[0]["id"]), "receiving", "chest-xray", "2"]
    assert "more: the API's next_cursor is" in lines[-1]
    study = items[1]["study_instance_uid"]
    assert _run(node, "ops", "list", "--study", study, "--json") == 0
    assert [s["id"] for s in json.loads(capsys.readouterr().out)["items"]] == [items[1]["id"]]
    assert _run(node, "ops", "show", str(items[1]["id"])) == 0
    shown = capsys.readouterr().out
    assert f"study         {study}" in shown and "instances     2" in shown
    assert _run(node, "operator", "send-now", str(items[1]["id"])) == 0
    assert "state         receiving" in capsys.readouterr().out


def test_refusals_say_what_to_do(node: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(node, "ops", "send-now", "1") == 5  # admin only
    assert "lacks the scope 'admin'" in capsys.readouterr().err
    assert _run(node, "ci", "list") == 5  # a client's read key sees no series
    err = capsys.readouterr().err
    assert "series:read" in err and "ask for a key that has it" in err
    assert _run(node, "ops", "show", "999") == 5
    assert "no series 999" in capsys.readouterr().err
    assert main(["series", "list", "--url", "http://127.0.0.1:9"]) == 5
    assert "cannot reach the DICOM node API" in capsys.readouterr().err


def test_the_cli_knows_the_node_s_states() -> None:
    assert get_args(State) == STATES
