"""`scantune series list|show|send-now|retrieve|refetch|retrieval|retrievals|cancel-retrieval|
orders|outcomes|reports|recall|recalls|purge|purges|purge-release`, over the node's API: what
the DICOM node did with each series it received (its classification, each delivery of its
result and the last errors), having it fetch a study from a PACS (waiting, or in the
background) and what became of those fetches, the RIS's orders, the outcomes its reports
confirmed, recalls (`service.commands.recalls`) and purges of a study sent by mistake
(`service.commands.purges`)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from service.commands import purges, recalls
from service.commands.client import (
    HTTP_ERROR,
    ApiClient,
    add_connection_args,
    guarded,
    printed_raw,
)

OK, USAGE = 0, 2  # USAGE: argparse's own code for bad arguments, and a series not to refetch
STATES = (
    "receiving",
    "classifying",
    "delivering",
    "done",
    "rejected",
    "unrouted",
    "failed",
    "expired",
    "recalled",
    "purged",
)
FETCH_STATES = ("running", "cancelling", "done", "not_found", "failed", "cancelled")


def register(subparsers: Any) -> None:
    series = subparsers.add_parser(
        "series", help="the DICOM node's series: classification and deliveries"
    )
    sub = series.add_subparsers(dest="series_command", required=True, metavar="ACTION")
    listing = _add(sub, "list", "series newest first (scope series:read)", run_list)
    listing.add_argument("--state", choices=STATES, help="only series in this state")
    listing.add_argument("--study", metavar="UID", help="only the series of this study")
    listing.add_argument("--model", help="only the series routed to this model")
    listing.add_argument(
        "--version", type=int, help="only those this version of --model classified (a recall)"
    )
    listing.add_argument("--limit", type=int, default=50, help="how many (default 50, most 200)")
    show = _add(sub, "show", "one series with its deliveries (scope series:read)", run_show)
    show.add_argument("id", type=int)
    send = _add(
        sub, "send-now", "try its pending work now, not after the back-off (admin)", run_send
    )
    send.add_argument("id", type=int)
    fetch = _add(
        sub, "retrieve", "have the node fetch a study from a PACS (scope series:retrieve)",
        run_retrieve, timeout=300.0,  # the answer waits for the PACS to send the whole study
    )  # fmt: skip
    orders = _add(sub, "orders", "the RIS's orders, newest first (scope series:read)", run_orders)
    orders.add_argument("--limit", type=int, default=50, help="how many (default 50, most 200)")
    reports = _add(
        sub, "outcomes", "scans whose confirmed outcome the RIS's reports give, newest first"
        " (scope series:read)", run_outcomes,
    )  # fmt: skip
    reports.add_argument(
        "--state", choices=("waiting", "pending", "sent", "refused", "retracting", "retracted")
    )
    reports.add_argument("--limit", type=int, default=50, help="how many (default 50, most 200)")
    exams = _add(
        sub, "reports", "the RIS's final reports kept, each with what it confirms and the"
        " scans of its exam here, newest first (scope series:read)", run_reports,
    )  # fmt: skip
    exams.add_argument("--held", action="store_true", help="only those with no scan yet")
    exams.add_argument("--limit", type=int, default=50, help="how many (default 50, most 200)")
    which = fetch.add_mutually_exclusive_group(required=True)
    which.add_argument("study", metavar="STUDY_UID", nargs="?", help="the Study Instance UID")
    which.add_argument("--accession", metavar="NUMBER", help="the studies of this accession number")
    fetch.add_argument("--source", required=True, help="a SCANTUNE_DICOM_SOURCES name")
    fetch.add_argument("--series", metavar="UID", help="only this series of the study")
    fetch.add_argument(
        "--no-wait", action="store_true", help="answer at once with an id for `retrieval ID`"
    )
    again = _add(
        sub, "refetch", "fetch a series that ended unclassified (failed, expired) again",
        run_refetch, timeout=300.0,
    )  # fmt: skip
    again.add_argument("id", type=int, help="the series (scantune series list --state failed)")
    again.add_argument(
        "--source", help="a SCANTUNE_DICOM_SOURCES name (default: the source that sent it)"
    )
    again.add_argument("--no-wait", action="store_true", help="answer at once with an id")
    followed = _add(sub, "retrieval", "how a retrieval asked with --no-wait went", run_retrieval)
    followed.add_argument("id", type=int)
    listed = _add(
        sub, "retrievals", "retrievals asked with --no-wait, newest first", run_retrievals
    )
    listed.add_argument("--state", choices=FETCH_STATES)
    listed.add_argument("--limit", type=int, default=50, help="how many (default 50, most 200)")
    stop = _add(sub, "cancel-retrieval", "stop a retrieval asked with --no-wait", run_cancel)
    stop.add_argument("id", type=int)
    recalls.register(sub, _add)
    purges.register(sub, _add)


def _add(
    sub: Any, name: str, help_text: str, func: Any, timeout: float = 30.0
) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser(
        name, help=help_text, description=help_text,
        epilog=f"exit codes: {OK} done, {HTTP_ERROR} the node refused or could not be reached",
    )  # fmt: skip
    add_connection_args(
        parser,
        service="DICOM node",
        url_env="SCANTUNE_DICOM_NODE_URL",
        default_url="http://127.0.0.1:8002",
        timeout=timeout,
    )
    parser.add_argument("--json", action="store_true", help="print raw JSON")
    parser.set_defaults(func=guarded(func))
    return parser


def run_list(args: argparse.Namespace, api: ApiClient) -> int:
    query = {"state": args.state, "study_instance_uid": args.study, "model": args.model,
             "version": args.version, "limit": args.limit}  # fmt: skip
    body = api.json("GET", "/v1/series", params={k: v for k, v in query.items() if v})
    if printed_raw(body, args.json):
        return OK
    print(f"{'ID':>6}  {'STATE':11}  {'MODEL':24}  {'INST':>4}  {'RECEIVED (UTC)':19}  DELIVERIES")
    for s in body["items"]:
        model = (s["model"] or "-") + (f" v{s['version']}" if s.get("version") else "")
        deliveries = ", ".join(f"{d['destination']} {d['state']}" for d in s["deliveries"]) or "-"
        received = (s["created_at"] or "")[:19].replace("T", " ")
        print(
            f"{s['id']:>6}  {s['state']:11}  {model:24}  {s['instances']:>4}  {received:19}"
            f"  {deliveries}"
        )
    if body["next_cursor"]:
        print(f"(more: the API's next_cursor is {body['next_cursor']})")
    return OK


def run_show(args: argparse.Namespace, api: ApiClient) -> int:
    return _print(api.json("GET", f"/v1/series/{args.id}"), args.json)


def run_send(args: argparse.Namespace, api: ApiClient) -> int:
    return _print(api.json("POST", f"/v1/series/{args.id}/send-now"), args.json)


def run_orders(args: argparse.Namespace, api: ApiClient) -> int:
    body = api.json("GET", "/v1/orders", params={"limit": args.limit})
    if printed_raw(body, args.json):
        return OK
    print(f"{'ID':>6}  {'ACCESSION':16}  {'STATE':9}  {'TRIES':>5}  {'RECEIVED (UTC)':19}  STUDIES")
    for o in body["items"]:
        received = (o["created_at"] or "")[:19].replace("T", " ")
        studies = ", ".join(o["study_instance_uids"]) or (o["last_error"] or "-")
        print(
            f"{o['id']:>6}  {o['accession_number']:16}  {o['state']:9}  {o['attempts']:>5}"
            f"  {received:19}  {studies}"
        )
    return OK


def run_outcomes(args: argparse.Namespace, api: ApiClient) -> int:
    params = {"limit": args.limit, **({"state": args.state} if args.state else {})}
    body = api.json("GET", "/v1/outcome-reports", params=params)
    if printed_raw(body, args.json):
        return OK
    print(f"{'ID':>6}  {'ACCESSION':16}  {'MODEL':24}  {'STATE':10}  {'LABEL':12}  {'TRIES':>5}"
          "  LAST ERROR")  # fmt: skip
    for o in body["items"]:
        model = f"{o['model']} v{o['version']}"
        print(
            f"{o['id']:>6}  {o['accession_number']:16}  {model:24}  {o['state']:10}"
            f"  {o['label'] or '-':12}  {o['attempts']:>5}  {o['last_error'] or '-'}"
        )
    return OK


def run_reports(args: argparse.Namespace, api: ApiClient) -> int:
    params = {"limit": args.limit, **({"held": "true"} if args.held else {})}
    body = api.json("GET", "/v1/outcome-reports/exams", params=params)
    if printed_raw(body, args.json):
        return OK
    print(f"{'ID':>6}  {'ACCESSION':16}  {'RECEIVED (UTC)':19}  {'SCANS':>5}  CONFIRMS")
    for r in body["items"]:
        received = r["received_at"][:19].replace("T", " ")
        confirms = ", ".join(f"{m}: {c or '-'}" for m, c in r["confirms"].items())
        scans = "held" if r["held"] else str(r["scans"])
        print(f"{r['id']:>6}  {r['accession_number']:16}  {received:19}  {scans:>5}  {confirms}")
    return OK


def run_refetch(args: argparse.Namespace, api: ApiClient) -> int:
    """The series' study and series UIDs asked of the source again: its instances come in as
    a new work item (scopes series:read and series:retrieve)."""
    series = api.json("GET", f"/v1/series/{args.id}")
    if series["state"] not in ("failed", "expired"):
        print(
            f"error: series {args.id} is {series['state']}: only one that ended unclassified"
            " (failed, expired) takes its instances again",
            file=sys.stderr,
        )
        return USAGE
    args.source = args.source or series.get("source")
    if not args.source:
        print(
            f"error: series {args.id} was not sent by a source the node knows (it came from"
            f" {series['calling_ae']}): name the PACS that holds it with --source",
            file=sys.stderr,
        )
        return USAGE
    args.study, args.series = series["study_instance_uid"], series["series_instance_uid"]
    args.accession = None
    return run_retrieve(args, api)


def run_retrieve(args: argparse.Namespace, api: ApiClient) -> int:
    fields = (
        ("study_instance_uid", args.study), ("series_instance_uid", args.series),
        ("accession_number", args.accession),
    )  # fmt: skip
    asked = {"source": args.source, **{k: v for k, v in fields if v}}
    if args.no_wait:
        asked["wait"] = False
    body = api.json("POST", "/v1/retrievals", json=asked)
    if printed_raw(body, args.json):
        return OK
    if args.no_wait:
        print(f"retrieval {body['id']} {body['state']}; follow it with:")
        print(f"  scantune series retrieval {body['id']}")
        return OK
    sent = body["completed"] + body["warning"]
    print(f"{args.source} sent {sent} instance(s), {body['failed']} failed; follow them with:")
    for study in body["study_instance_uids"]:
        print(f"  scantune series list --study {study}")
    return OK


def run_retrieval(args: argparse.Namespace, api: ApiClient) -> int:
    body = api.json("GET", f"/v1/retrievals/{args.id}")
    if printed_raw(body, args.json):
        return OK
    sent = body["completed"] + body["warning"]
    print(f"retrieval {body['id']} from {body['source']}: {body['state']}")
    if body["state"] not in ("running", "cancelling"):
        print(f"  {sent} instance(s) sent, {body['failed']} failed")
    if body["error"]:
        print(f"  {body['error']}")
    for study in body["study_instance_uids"]:
        print(f"  scantune series list --study {study}")
    return OK


def run_cancel(args: argparse.Namespace, api: ApiClient) -> int:
    body = api.json("POST", f"/v1/retrievals/{args.id}/cancel")
    if printed_raw(body, args.json):
        return OK
    print(f"retrieval {body['id']} {body['state']}", end="")
    print("; what came before is classified" if body["state"] == "cancelling" else "")
    return OK


def run_retrievals(args: argparse.Namespace, api: ApiClient) -> int:
    query = {"state": args.state, "limit": args.limit}
    body = api.json("GET", "/v1/retrievals", params={k: v for k, v in query.items() if v})
    if printed_raw(body, args.json):
        return OK
    print(
        f"{'ID':>6}  {'SOURCE':12}  {'STATE':10}  {'SENT':>4}  {'ASKED (UTC)':19}  STUDY OR WHY NOT"
    )
    for r in body["items"]:
        asked = (r["created_at"] or "")[:19].replace("T", " ")
        sent = r["completed"] + r["warning"]
        what = r["error"] or ", ".join(r["study_instance_uids"]) or r["study_instance_uid"] or "-"
        print(f"{r['id']:>6}  {r['source']:12}  {r['state']:10}  {sent:>4}  {asked:19}  {what}")
    return OK


def _print(series: dict[str, Any], raw: bool) -> int:
    if printed_raw(series, raw):
        return OK
    for label, key in (
        ("series", "id"), ("state", "state"), ("study", "study_instance_uid"),
        ("series UID", "series_instance_uid"), ("from", "calling_ae"), ("model", "model"),
        ("sends to", "destinations"),
        ("instances", "instances"), ("result SR", "result_sop_instance_uid"),
        ("failed tries", "attempts"), ("last error", "last_error"),
        ("received", "created_at"), ("finished", "finished_at"),
    ):  # fmt: skip
        value = series.get(key)
        if value not in (None, ""):
            print(f"{label:13} {', '.join(value) if isinstance(value, list) else value}")
    for d in series["deliveries"]:
        line = f"  -> {d['destination']}: {d['state']}, {d['attempts']} failed tries"
        if d["state"] == "pending" and d["next_attempt_at"]:
            line += f", next at {d['next_attempt_at']}"
        if d["delivered_at"]:
            line += f", delivered at {d['delivered_at']}"
        print(line)
        if d["last_error"] and d["state"] != "done":
            print(f"     last error: {d['last_error']}")
    return OK
