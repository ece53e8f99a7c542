"""`scantune series recall|recalls|recall-retry|recall-lift`: recall a model version's results
at the DICOM node (each one delivered withdrawn from where it went, the rest never sent), and
follow what became of the withdrawals: those a person must act on are listed first, and those
a destination refused can be sent again once it is mended. A recall made in error, or of a
version put back in service, is lifted: the version's later results go out again (what the
recall withdrew stays withdrawn)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from service.commands.client import ApiClient, printed_raw

OK = 0


def register(sub: Any, add: Callable[..., argparse.ArgumentParser]) -> None:
    recall = add(
        sub, "recall", "recall a version's results: stop those not sent, withdraw those"
        " delivered (IOCM rejection note, HL7 correction, FHIR entered-in-error; admin)",
        run_recall,
    )  # fmt: skip
    recall.add_argument("--model", required=True)
    recall.add_argument("--version", type=int, required=True)
    recall.add_argument(
        "--reason", required=True, help="told to each destination (no patient data)"
    )
    shown = add(
        sub, "recalls", "the recalls, or one with its withdrawals not done (scope series:read)",
        run_recalls,
    )  # fmt: skip
    shown.add_argument("id", type=int, nargs="?", help="one recall, with what is left")
    again = add(
        sub, "recall-retry", "send a recall's refused withdrawals again, once their"
        " destination is mended (admin)", run_retry,
    )  # fmt: skip
    again.add_argument("id", type=int)
    lift = add(
        sub, "recall-lift", "lift a recall: the version's later results go out again; its"
        " series stay recalled and its withdrawals go on (admin)", run_lift,
    )  # fmt: skip
    lift.add_argument("id", type=int)
    lift.add_argument("--reason", required=True, help="why it is lifted (audited)")


def run_recall(args: argparse.Namespace, api: ApiClient) -> int:
    asked = {"model": args.model, "version": args.version, "reason": args.reason}
    body = api.json("POST", "/v1/recalls", json=asked)
    return _print_one(body, args.json)


def run_retry(args: argparse.Namespace, api: ApiClient) -> int:
    return _print_one(api.json("POST", f"/v1/recalls/{args.id}/retry"), args.json)


def run_lift(args: argparse.Namespace, api: ApiClient) -> int:
    body = api.json("POST", f"/v1/recalls/{args.id}/lift", json={"reason": args.reason})
    return _print_one(body, args.json)


def run_recalls(args: argparse.Namespace, api: ApiClient) -> int:
    if args.id is not None:
        return _print_one(api.json("GET", f"/v1/recalls/{args.id}"), args.json)
    body = api.json("GET", "/v1/recalls")
    if printed_raw(body, args.json):
        return OK
    print(f"{'ID':>4}  {'MODEL':24}  {'STATE':8}  {'SERIES':>6}  {'STOPPED':>7}  WITHDRAWALS")
    for r in body["items"]:
        model = f"{r['model']} v{r['version']}"
        print(
            f"{r['id']:>4}  {model:24}  {r['state']:8}  {r['series']:>6}  {r['stopped']:>7}"
            f"  {_counts(r['withdrawals'])}"
        )
    return OK


def _print_one(recall: dict[str, Any], raw: bool) -> int:
    if printed_raw(recall, raw):
        return OK
    print(f"recall {recall['id']}: {recall['model']} v{recall['version']} ({recall['state']})")
    print(f"  reason: {recall['reason']}  (by {recall['requested_by']})")
    if recall.get("lifted_at"):
        print(f"  lifted {recall['lifted_at']} by {recall['lifted_by']}: {recall['lift_reason']}")
    print(f"  series recalled: {recall['series']}; deliveries stopped: {recall['stopped']}")
    print(f"  withdrawals: {_counts(recall['withdrawals'])}")
    for w in recall.get("open") or []:
        error = f": {w['last_error']}" if w["last_error"] else ""
        # pending: when it is tried next, as a series' deliveries say (a node before: none)
        due = f", next at {w['next_attempt_at']}" if w.get("next_attempt_at") else ""
        # one made before the recall was lifted and made anew goes with the reason of then
        reason = w.get("reason", recall["reason"])  # a node of the release before: none
        earlier = f" (recalled for: {reason})" if reason != recall["reason"] else ""
        where = f"series {w['series_id']} at {w['destination']}"
        print(f"  - {where}: {w['state']}{error}{due}{earlier}")
    return OK


def _counts(states: dict[str, int]) -> str:
    return ", ".join(f"{n} {state.replace('_', ' ')}" for state, n in states.items() if n) or "-"
