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

KEYS = {
    "ops": ["series:read"],
    "operator": ["series:read", "admin"],
    "ci": ["read"],
    "fetcher": ["series:retrieve"],
}


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
    assert _run(node, "ops", "retrieve", "1.2.3", "--source", "pacs") == 5
    assert "lacks the scope 'series:retrieve'" in capsys.readouterr().err
    assert _run(node, "fetcher", "retrieve", "1.2.3", "--source", "pacs") == 5
    assert "no source named 'pacs'; the sources: none is configured" in capsys.readouterr().err
    assert _run(node, "fetcher", "retrieve", "--accession", "A1", "--source", "pacs") == 5
    assert "no source named 'pacs'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:  # a study or an accession number, not both
        _run(node, "fetcher", "retrieve", "1.2.3", "--accession", "A1", "--source", "pacs")
    assert exited.value.code == 2 and "not allowed with" in capsys.readouterr().err


def test_the_cli_knows_the_node_s_states() -> None:
    assert get_args(State) == STATES


def test_show_gives_each_delivery_its_outcome(capsys: pytest.CaptureFixture[str]) -> None:
    from service.commands.series import _print

    done = {"destination": "PACS@h:104", "state": "done", "attempts": 1, "last_error": "stale",
            "next_attempt_at": None, "delivered_at": "2026-12-06T12:00:00+00:00"}  # fmt: skip
    pending = {**done, "destination": "mllp://e:6661/RIS", "state": "pending", "attempts": 2,
               "last_error": "HL7 ACK AE", "next_attempt_at": "2026-12-06T12:05:00+00:00",
               "delivered_at": None}  # fmt: skip
    series = {"id": 7, "state": "delivering", "last_error": None, "deliveries": [done, pending]}
    assert _print(series, raw=False) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[:2] == ["series        7", "state         delivering"]
    assert "PACS@h:104: done, 1 failed tries, delivered at 2026-12-06T12:00:00+00:00" in lines[2]
    assert lines[3].endswith("pending, 2 failed tries, next at 2026-12-06T12:05:00+00:00")
    assert lines[4].strip() == "last error: HL7 ACK AE" and len(lines) == 5


def test_recall_and_follow_it(node: str, capsys: pytest.CaptureFixture[str]) -> None:
    asked = ("recall", "--model", "chest-xray", "--version", "3", "--reason", "misses effusions")
    assert _run(node, "ops", *asked) == 5  # admin only
    assert "lacks the scope 'admin'" in capsys.readouterr().err
    assert _run(node, "operator", *asked) == 0
    shown = capsys.readouterr().out
    assert shown.startswith("recall 1: chest-xray v3 (new)")
    assert "reason: misses effusions  (by operator)" in shown
    assert _run(node, "operator", *asked[:-1], "another reason", "--json") == 0
    again = json.loads(capsys.readouterr().out)
    assert again["id"] == 1 and again["reason"] == "misses effusions"  # the first recall
    assert _run(node, "ops", "recalls") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["ID", "MODEL", "STATE"]
    assert lines[1].split()[:5] == ["1", "chest-xray", "v3", "new", "0"]
    assert _run(node, "ops", "recalls", "2") == 5
    assert "no recall 2" in capsys.readouterr().err
    assert _run(node, "ops", "recall-retry", "1") == 5  # admin only
    assert "lacks the scope 'admin'" in capsys.readouterr().err
    assert _run(node, "operator", "recall-retry", "1") == 5  # nothing was refused
    assert "recall 1 has no refused withdrawal to send again" in capsys.readouterr().err


def test_lift_a_recall(node: str, capsys: pytest.CaptureFixture[str]) -> None:
    asked = ("recall", "--model", "chest-xray", "--version", "3", "--reason", "misses effusions")
    assert _run(node, "operator", *asked) == 0
    capsys.readouterr()
    lift = ("recall-lift", "1", "--reason", "recalled by mistake")
    assert _run(node, "ops", *lift) == 5  # admin only
    assert "lacks the scope 'admin'" in capsys.readouterr().err
    assert _run(node, "operator", *lift) == 0
    shown = capsys.readouterr().out.splitlines()
    assert shown[0] == "recall 1: chest-xray v3 (lifted)"
    assert shown[2].startswith("  lifted 20") and shown[2].endswith(
        " by operator: recalled by mistake"
    )
    assert _run(node, "operator", *lift) == 5
    assert "recall 1 was lifted already" in capsys.readouterr().err
    assert _run(node, "operator", "recall-lift", "2", "--reason", "x") == 5
    assert "no recall 2" in capsys.readouterr().err
    assert _run(node, "ops", "recalls") == 0
    listed = capsys.readouterr().out.splitlines()
    assert listed[1].split()[:4] == ["1", "chest-xray", "v3", "lifted"]
    assert _run(node, "operator", *asked[:-1], "unsafe after all", "--json") == 0
    again = json.loads(capsys.readouterr().out)  # recalled again: made anew
    assert (again["id"], again["state"], again["reason"]) == (1, "new", "unsafe after all")
    assert again["lifted_at"] is None


def test_a_recall_lists_what_a_person_must_withdraw(capsys: pytest.CaptureFixture[str]) -> None:
    from service.commands.recalls import _print_one

    counts = {"pending": 1, "done": 3, "rejected": 0, "expired": 0, "not_kept": 1}
    recall = {
        "id": 4, "model": "chest-xray", "version": 2, "state": "applied", "reason": "unsafe",
        "requested_by": "safety", "series": 4, "stopped": 2, "withdrawals": counts,
        "open": [
            {"series_id": 9, "destination": "PACS@h:104", "state": "not_kept",
             "reason": "unsafe", "last_error": None, "next_attempt_at": None},
            {"series_id": 7, "destination": "mllp://ris:2575/RIS", "state": "pending",
             "reason": "unsafe", "last_error": "MLLP failed (ConnectionRefusedError)",
             "next_attempt_at": "2025-03-04T10:05:00+00:00"},
            {"series_id": 3, "destination": "PACS@h:104", "state": "rejected",
             "reason": "misses effusions", "last_error": None},  # before a lift, from a node before
        ],
    }  # fmt: skip
    assert _print_one(recall, raw=False) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[2] == "  series recalled: 4; deliveries stopped: 2"
    assert out[3] == "  withdrawals: 1 pending, 3 done, 1 not kept"
    assert out[4] == "  - series 9 at PACS@h:104: not_kept"
    assert out[5] == (
        "  - series 7 at mllp://ris:2575/RIS: pending: MLLP failed (ConnectionRefusedError),"
        " next at 2025-03-04T10:05:00+00:00"
    )
    assert out[6] == "  - series 3 at PACS@h:104: rejected (recalled for: misses effusions)"


def test_purge_a_study_and_follow_it(node: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(node, "ops", "list", "--json") == 0
    study = json.loads(capsys.readouterr().out)["items"][0]["study_instance_uid"]
    asked = ("purge", study, "--reason", "the wrong patient")
    assert _run(node, "ops", *asked) == 5  # admin only
    assert "lacks the scope 'admin'" in capsys.readouterr().err
    assert _run(node, "operator", *asked) == 0
    shown = capsys.readouterr().out
    assert shown.splitlines() == [
        "purge 1 (new): the wrong patient  (by operator)",
        "  blocks the study: 0 instance(s) sent again dropped; scantune series purge-release 1"
        " --reason ... lets it in again",
        "  the node applies it within a moment: scantune series purges 1",
    ]
    assert _run(node, "operator", "purge", "1.2.x", "--reason", "typo") == 5
    assert "study_instance_uid" in capsys.readouterr().err
    assert _run(node, "ops", "purges") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:2] == ["ID", "STATE"] and lines[1].split()[:2] == ["1", "new"]
    assert lines[0].split()[6:8] == ["BLOCK", "DROPPED"]  # "ASKED (UTC)": two words
    assert lines[1].split()[6:8] == ["blocked", "0"]
    assert _run(node, "ops", "purges", "1", "--json") == 0
    view = json.loads(capsys.readouterr().out)
    assert view["state"] == "new" and study not in json.dumps(view) and view["blocked"]
    assert _run(node, "ops", "purges", "2") == 5
    assert "no purge 2" in capsys.readouterr().err


def test_purge_without_a_block_and_release_one(
    node: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _run(node, "ops", "list", "--json") == 0
    first, second = (s["study_instance_uid"] for s in json.loads(capsys.readouterr().out)["items"])
    assert _run(node, "operator", "purge", first, "--reason", "declined", "--no-block") == 0
    assert capsys.readouterr().out.splitlines()[1] == (
        "  blocks nothing (--no-block): the study sent again comes in as a new arrival"
    )
    assert _run(node, "operator", "purge", second, "--reason", "wrong patient") == 0
    capsys.readouterr()
    assert _run(node, "ops", "purge-release", "2", "--reason", "in error") == 5  # admin only
    assert "lacks the scope 'admin'" in capsys.readouterr().err
    assert _run(node, "operator", "purge-release", "2", "--reason", "in error") == 0
    line = capsys.readouterr().out.splitlines()[1]
    assert line.startswith("  released 20") and line.endswith(
        " by operator: in error (0 instance(s) dropped before)"
    )
    assert _run(node, "operator", "purge-release", "2", "--reason", "again") == 5
    assert "purge 2 blocks nothing" in capsys.readouterr().err
    assert _run(node, "operator", "purge-release", "1", "--reason", "x") == 5  # never blocked
    capsys.readouterr()
    assert _run(node, "ops", "purges") == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[1:]]
    assert [(row[0], row[6]) for row in rows] == [("2", "released"), ("1", "none")]
    # one study's purges, found by its UID: an admin's question (was it blocked?)
    assert _run(node, "ops", "purges", "--study", second) == 5
    assert "needs the admin scope" in capsys.readouterr().err
    assert _run(node, "operator", "purges", "--study", second) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[1:]]
    assert [(row[0], row[6]) for row in rows] == [("2", "released")]
    assert _run(node, "operator", "purges", "--study", "1.2.3.999") == 0
    assert capsys.readouterr().out.splitlines()[1:] == []


def test_a_purge_lists_where_the_study_went_before_it(capsys: pytest.CaptureFixture[str]) -> None:
    from service.commands.purges import _print_one

    purge = {
        "id": 3, "state": "done", "reason": "declined AI processing", "requested_by": "safety",
        "series": 2, "series_stopped": 1, "deliveries_stopped": 1, "instances_deleted": 4,
        "results_deleted": 1, "outcomes_deleted": 2, "outcomes_retracting": 1,
        "exam_reports_deleted": 1, "orders_forgotten": 1, "retrievals_forgotten": 0,
        "blocked": True, "released_at": None, "released_by": None, "released_reason": None,
        "dropped_after": {"count": 5, "last_at": "2026-12-07T09:00:00+00:00"},
        "delivered": [
            {"destination": "PACS@h:104", "results": 1, "first_at": "2026-12-06T12:00:00+00:00",
             "last_at": "2026-12-06T12:00:00+00:00"},
        ],
    }  # fmt: skip
    assert _print_one(purge, raw=False) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1] == (
        "  blocks the study: 5 instance(s) sent again dropped, the last 2026-12-07T09:00:00+00:00;"
        " scantune series purge-release 3 --reason ... lets it in again"
    )
    assert out[2] == "  series: 2 (1 stopped before classification); deliveries stopped: 1"
    assert out[3].startswith("  deleted: 4 instance file(s), 1 result(s), 2 outcome(s), ")
    assert out[3].endswith("; 1 outcome(s) reported before put in line to be retracted at the"
                           " training service")  # fmt: skip
    assert "remove them there" in out[5]
    assert out[6] == "  - PACS@h:104: 1 result(s), 2026-12-06T12:00:00+00:00"
