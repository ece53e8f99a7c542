"""`scantune models list|versions|promote|access|notes|withdraw|reinstate|caveats|compare|
download|outcomes`: the model registry over the training API."""

from __future__ import annotations

import argparse
import difflib
import json
from collections.abc import Callable
from typing import Any

from service.commands import outcomes
from service.commands.client import HTTP_ERROR, ApiClient, ApiError, add_connection_args, guarded

OK = 0
PAGE = 1000  # versions per request when listing them all (the API's largest page)
NOTES_SOURCE = {"amended": "as amended", "card": "as published", "none": "none given"}


def register(subparsers: Any) -> None:
    models = subparsers.add_parser("models", help="published models, versions and aliases")
    sub = models.add_subparsers(dest="models_command", required=True, metavar="ACTION")
    _add(sub, "list", "models with their versions and aliases", run_list)
    versions = _add(sub, "versions", "a model's versions and headline metrics", run_versions)
    versions.add_argument("name")
    versions.add_argument(
        "--newest", type=int, metavar="N", help="only the N newest versions, newest first"
    )
    promote = _add(sub, "promote", "point an alias at a version", run_promote)
    promote.add_argument("name")
    promote.add_argument("version", type=int)
    promote.add_argument("--alias", default="production", help="alias to move (default production)")
    access = _add(sub, "access", "who may use a version; with an option, change it", run_access)
    access.add_argument("name")
    access.add_argument("version", type=int)
    change = access.add_mutually_exclusive_group()
    change.add_argument("--shared", action="store_true", help="every key may use it")
    change.add_argument(
        "--private", action="store_true", help="only its owner (and admins); drops --client"
    )
    change.add_argument(
        "--client", action="append", metavar="CLIENT",
        help="private to its owner and these clients (repeat for more)",
    )  # fmt: skip
    notes = _add(sub, "notes", "the notes in force; with an option, replace them", run_notes)
    notes.add_argument("name")
    notes.add_argument("version", type=int)
    notes.add_argument("--purpose", metavar="TEXT", help="what it is for")
    notes.add_argument(
        "--limitation", action="append", metavar="TEXT",
        help="what it is known not to do well (repeat for more)",
    )  # fmt: skip
    notes.add_argument("--contact", metavar="TEXT", help="whom to ask about it")
    for action, text in (
        ("withdraw", "withdraw a version: no service predicts with it"),
        ("reinstate", "put a withdrawn version back in service (admin)"),
    ):
        parser = _add(sub, action, text, run_withdrawal)
        parser.add_argument("name")
        parser.add_argument("version", type=int)
        parser.add_argument("--reason", required=True, help="why (kept and shown to callers)")
    caveats = _add(sub, "caveats", "what to keep in mind about a version", run_caveats)
    caveats.add_argument("name")
    caveats.add_argument("version", type=int)
    compare = _add(sub, "compare", "a version beside another (default: production's)", run_compare)
    compare.add_argument("name")
    compare.add_argument("version", type=int)
    compare.add_argument(
        "--against", default="production", metavar="VERSION|ALIAS",
        help="the version to compare with, or an alias (default production)",
    )  # fmt: skip
    download = _add(sub, "download", "a version's files (card, ONNX, plots) into DIR", run_download)
    download.add_argument("name")
    download.add_argument("version", type=int)
    download.add_argument("dir", help="folder to write into (created if absent)")
    outcomes.add_to(sub, _add)


def _add(sub: Any, name: str, help_text: str, func: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser(
        name, help=help_text, description=help_text,
        epilog=f"exit codes: {OK} done, {HTTP_ERROR} the API refused or could not be reached",
    )  # fmt: skip
    add_connection_args(parser)
    parser.add_argument("--json", action="store_true", help="print raw JSON")
    parser.set_defaults(func=guarded(naming_models(func)))
    return parser


def naming_models(
    func: Callable[[argparse.Namespace, ApiClient], int],
) -> Callable[[argparse.Namespace, ApiClient], int]:
    """A 404 for a model name that is not there lists the models that are."""

    def run(args: argparse.Namespace, api: ApiClient) -> int:
        try:
            return func(args, api)
        except ApiError as exc:
            name = getattr(args, "name", None)
            if exc.status != 404 or name is None or "no model named" not in str(exc):
                raise
            raise ApiError(f"{exc}{known_models(api, name)}", exc.status, exc.problem) from None

    return run


def known_models(api: ApiClient, name: str) -> str:
    """'; did you mean chest-xray? Models: a, b' - or nothing when they cannot be listed."""
    try:
        names = [m["name"] for m in api.models()]
    except ApiError:
        return ""
    if not names:
        return "\n  (no model is published yet)"
    close = difflib.get_close_matches(name, names, n=1, cutoff=0.5)
    guess = f"did you mean {close[0]}? " if close else ""
    return f"\n  ({guess}models there are: {', '.join(names)})"


def run_list(args: argparse.Namespace, api: ApiClient) -> int:
    body = api.json("GET", "/v1/models")
    if args.json:
        print(json.dumps(body, indent=2))
        return OK
    print(f"{'MODEL':32}  {'LATEST':>6}  ALIASES")
    for model in body["items"]:
        aliases = ", ".join(f"{a}={v}" for a, v in sorted(model["aliases"].items()))
        print(f"{model['name']:32}  {model['latest_version']:>6}  {aliases or '-'}")
    return OK


def run_versions(args: argparse.Namespace, api: ApiClient) -> int:
    body = _versions(api, args.name, args.newest)
    if args.json:
        print(json.dumps(body, indent=2))
        return OK
    print(f"{'VERSION':>7}  {'CREATED':32}  {'BASE MODEL':20}  {'ALIASES':20}  METRICS")
    for v in body["items"]:
        metrics = " ".join(f"{k}={x:.4f}" for k, x in _headline(v["metrics"]))
        aliases = ",".join(v["aliases"]) or "-"
        withdrawn = f"  WITHDRAWN: {v['withdrawn']['reason']}" if v.get("withdrawn") else ""
        print(
            f"{v['version']:>7}  {v['created_at']:32}  {v['base_model']:20}  {aliases:20}  "
            f"{metrics}{withdrawn}"
        )
    for v in body.get("unreadable", []):
        aliases = ",".join(v["aliases"]) or "-"
        print(f"{v['version']:>7}  {'UNREADABLE':32}  {'-':20}  {aliases:20}  {v['detail']}")
    return OK


def _versions(api: ApiClient, name: str, newest: int | None) -> dict[str, Any]:
    """The newest `newest` versions (one page), or every version, page after page."""
    path = f"/v1/models/{name}/versions"
    if newest is not None:
        body: dict[str, Any] = api.json("GET", path, params={"order": "newest", "limit": newest})
        body["next_cursor"] = None
        return body
    body = api.json("GET", path, params={"limit": PAGE})
    while body["next_cursor"] is not None:
        page = api.json("GET", path, params={"limit": PAGE, "cursor": body["next_cursor"]})
        body["items"] += page["items"]
        body["unreadable"] += page["unreadable"]
        body["next_cursor"] = page["next_cursor"]
    return body


def _headline(metrics: dict[str, float], count: int = 4) -> list[tuple[str, float]]:
    """The validation figures first (what a promotion is judged on), then the rest by name:
    sorted by name alone, best_epoch and train_images_per_s crowded out val_auc."""
    ranked = sorted(metrics.items(), key=lambda item: (not item[0].startswith("val_"), item[0]))
    return ranked[:count]


def run_promote(args: argparse.Namespace, api: ApiClient) -> int:
    record = api.json(
        "PUT", f"/v1/models/{args.name}/aliases/{args.alias}", json={"version": args.version}
    )
    if args.json:
        print(json.dumps(record, indent=2))
    else:
        print(
            f"{args.name}: {record['alias']} -> version {record['version']} "
            f"(set by {record['set_by']} at {record['set_at']})"
        )
    return OK


def run_access(args: argparse.Namespace, api: ApiClient) -> int:
    path = f"/v1/models/{args.name}/versions/{args.version}/access"
    if args.shared or args.private or args.client:
        body = {"private": not args.shared, "clients": args.client or []}
        record = api.json("PUT", path, json=body)
    else:
        record = api.json("GET", path)
    if args.json:
        print(json.dumps(record, indent=2))
        return OK
    if not record["private"]:
        who = "every key"
    else:
        who = ", ".join([f"{record['owner']} (owner)", *record["clients"]])
    print(f"{args.name} version {args.version}: {'private' if record['private'] else 'shared'}"
          f" - used by {who} and admin keys")  # fmt: skip
    if record["set_by"]:
        print(f"  set by {record['set_by']} at {record['set_at']}")
    return OK


def run_notes(args: argparse.Namespace, api: ApiClient) -> int:
    """Print the notes in force; with any of --purpose, --limitation, --contact, replace them
    all (an option left out is left out of the new notes)."""
    if args.limitation or args.purpose is not None or args.contact is not None:
        given = {"purpose": args.purpose, "limitations": args.limitation or [],
                 "contact": args.contact}  # fmt: skip
        found = api.set_notes(args.name, args.version, given)
    else:
        found = api.notes(args.name, args.version)
    if args.json:
        print(json.dumps(found, indent=2))
        return OK
    said = found["notes"]
    print(f"{args.name} version {args.version}: notes {NOTES_SOURCE[found['source']]}")
    if found["changed_by"]:
        print(f"  amended by {found['changed_by']} at {found['changed_at']}")
    if said["purpose"]:
        print(f"  purpose: {said['purpose']}")
    for limitation in said["limitations"]:
        print(f"  - {limitation}")
    if said["contact"]:
        print(f"  contact: {said['contact']}")
    return OK


def run_withdrawal(args: argparse.Namespace, api: ApiClient) -> int:
    body = {"withdrawn": args.models_command == "withdraw", "reason": args.reason}
    path = f"/v1/models/{args.name}/versions/{args.version}/withdrawal"
    record = api.json("PUT", path, json=body)
    if args.json:
        print(json.dumps(record, indent=2))
        return OK
    state = "withdrawn" if record["withdrawn"] else "back in service"
    print(f"{args.name} version {args.version}: {state} ({record['reason']})")
    return OK


def run_caveats(args: argparse.Namespace, api: ApiClient) -> int:
    found = api.json("GET", f"/v1/models/{args.name}/versions/{args.version}/caveats")
    if args.json:
        print(json.dumps(found, indent=2))
        return OK
    print(f"{args.name} version {args.version}: keep in mind")
    for caveat in found["caveats"]:
        print(f"  - {caveat['text']} [{caveat['code']}]")
    return OK


def run_compare(args: argparse.Namespace, api: ApiClient) -> int:
    found = api.compare(args.name, args.version, args.against)
    if args.json:
        print(json.dumps(found, indent=2))
        return OK
    mine, theirs = f"version {args.version}", f"version {found['against']['version']}"
    alias = found["against"]["alias"]
    print(f"{args.name} {mine} against {theirs}" + (f" ({alias})" if alias else ""))
    print(f"  {found['measured']}")
    rows = [("FIGURE", mine.upper(), theirs.upper(), "DIFFERENCE")]
    for f in found["figures"]:
        rows.append((f"{f['name']} ({f['better']} is better)", _figure(f["version"]),
                     _figure(f["against"]), _figure(f["difference"], signed=True)))  # fmt: skip
    for i in found["intervals"]:
        overlap = {True: "overlap", False: "apart", None: "-"}[i["overlap"]]
        rows.append((f"{i['name']} 95% interval", _interval(i["version"]),
                     _interval(i["against"]), overlap))  # fmt: skip
    widths = [max(len(r[c]) for r in rows) for c in range(3)]
    for row in rows:
        print("  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False)) + "  "
              + row[3])  # fmt: skip
    for change in found["changes"]:
        print(f"  changed: {change['setting']} {change['version']!r} (was {change['against']!r})")
    for side, label in (("version", mine), ("against", theirs)):
        codes = [c["code"] for c in found["caveats"][side]]
        print(f"  caveats of {label}: {', '.join(codes)}")
    return OK


def _figure(value: float | None, *, signed: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:+.3f}" if signed else f"{value:.3f}"


def _interval(estimate: dict[str, Any] | None) -> str:
    if estimate is None:
        return "-"
    return f"{estimate['value']:.3f} [{estimate['low']:.3f}-{estimate['high']:.3f}]"


def run_download(args: argparse.Namespace, api: ApiClient) -> int:
    written = api.download(args.name, args.version, args.dir)
    if args.json:
        print(json.dumps([str(p) for p in written], indent=2))
    else:
        for path in written:
            print(path)
    return OK
