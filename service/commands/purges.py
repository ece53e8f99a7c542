"""`scantune series purge|purges|purge-release`: forget a study sent to the DICOM node by
mistake (nothing of it goes out after the node applies the purge, and the node keeps nothing
of it; unless `--no-block`, its instances sent again are dropped), see what each purge did,
above all the results delivered before it, by destination (the node cannot take those back,
a person removes them where they went), and release the block of a study purged in error.
The study is never shown back."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from service.commands.client import ApiClient, printed_raw

OK = 0


def register(sub: Any, add: Callable[..., argparse.ArgumentParser]) -> None:
    purge = add(
        sub, "purge", "forget a study sent by mistake: its results not sent are stopped, its"
        " files, outcomes and orders deleted (admin, audited)", run_purge,
    )  # fmt: skip
    purge.add_argument("study", metavar="STUDY_UID", help="the Study Instance UID")
    purge.add_argument("--reason", required=True, help="why (audited: no patient data)")
    purge.add_argument(
        "--no-block", dest="block", action="store_false",
        help="do not block the study: its instances sent again come in as a new arrival",
    )  # fmt: skip
    shown = add(
        sub, "purges", "the purges, or one, with what each did and where the study's results"
        " went before it (scope series:read)", run_purges,
    )  # fmt: skip
    shown.add_argument("id", type=int, nargs="?", help="one purge")
    shown.add_argument(
        "--study", metavar="STUDY_UID", help="only this study's purges (admin): is it blocked?"
    )
    release = add(
        sub, "purge-release", "end the block of a study purged in error: its instances come"
        " in again (admin, audited)", run_release,
    )  # fmt: skip
    release.add_argument("id", type=int)
    release.add_argument("--reason", required=True, help="why the block ends (audited)")


def run_purge(args: argparse.Namespace, api: ApiClient) -> int:
    asked = {"study_instance_uid": args.study, "reason": args.reason, "block": args.block}
    return _print_one(api.json("POST", "/v1/purges", json=asked), args.json)


def run_release(args: argparse.Namespace, api: ApiClient) -> int:
    body = api.json("POST", f"/v1/purges/{args.id}/release", json={"reason": args.reason})
    return _print_one(body, args.json)


def run_purges(args: argparse.Namespace, api: ApiClient) -> int:
    if args.id is not None:
        return _print_one(api.json("GET", f"/v1/purges/{args.id}"), args.json)
    body = api.json(
        "GET", "/v1/purges", params={"study_instance_uid": args.study} if args.study else {}
    )
    if printed_raw(body, args.json):
        return OK
    print(
        f"{'ID':>4}  {'STATE':5}  {'ASKED (UTC)':19}  {'SERIES':>6}  {'STOPPED':>7}"
        f"  {'BLOCK':8}  {'DROPPED':>7}  SENT BEFORE"
    )
    for p in body["items"]:
        asked = (p["created_at"] or "")[:19].replace("T", " ")
        went = ", ".join(f"{d['destination']} ({d['results']})" for d in p["delivered"]) or "-"
        print(
            f"{p['id']:>4}  {p['state']:5}  {asked:19}  {p['series']:>6}"
            f"  {p['deliveries_stopped']:>7}  {_block(p):8}  {p['dropped_after']['count']:>7}"
            f"  {went}"
        )
    return OK


def _block(purge: dict[str, Any]) -> str:
    """blocked, released, or none (made with --no-block)."""
    return "blocked" if purge["blocked"] else "released" if purge["released_at"] else "none"


def _print_one(purge: dict[str, Any], raw: bool) -> int:
    if printed_raw(purge, raw):
        return OK
    print(
        f"purge {purge['id']} ({purge['state']}): {purge['reason']}  (by {purge['requested_by']})"
    )
    _print_block(purge)
    if purge["state"] == "new":
        print(f"  the node applies it within a moment: scantune series purges {purge['id']}")
        return OK
    print(
        f"  series: {purge['series']} ({purge['series_stopped']} stopped before classification);"
        f" deliveries stopped: {purge['deliveries_stopped']}"
    )
    print(
        f"  deleted: {purge['instances_deleted']} instance file(s), {purge['results_deleted']}"
        f" result(s), {purge['outcomes_deleted']} outcome(s),"
        f" {purge['exam_reports_deleted']} exam report(s); {purge['outcomes_retracting']}"
        " outcome(s) reported before put in line to be retracted at the training service"
    )
    print(
        f"  forgotten by {purge['orders_forgotten']} order(s) and"
        f" {purge['retrievals_forgotten']} retrieval(s)"
    )
    if purge["delivered"]:
        print("  delivered before the purge (the node cannot take these back: remove them there):")
    for d in purge["delivered"]:
        when = (
            d["first_at"] if d["first_at"] == d["last_at"] else f"{d['first_at']} to {d['last_at']}"
        )
        print(f"  - {d['destination']}: {d['results']} result(s), {when}")
    return OK


def _print_block(purge: dict[str, Any]) -> None:
    dropped = purge["dropped_after"]
    since = f", the last {dropped['last_at']}" if dropped["last_at"] else ""
    if purge["blocked"]:
        release = f"scantune series purge-release {purge['id']} --reason ... lets it in again"
        print(f"  blocks the study: {dropped['count']} instance(s) sent again dropped{since};"
              f" {release}")  # fmt: skip
    elif purge["released_at"]:
        why = f"{purge['released_reason']} ({dropped['count']} instance(s) dropped before)"
        print(f"  released {purge['released_at']} by {purge['released_by']}: {why}")
    else:
        print("  blocks nothing (--no-block): the study sent again comes in as a new arrival")
