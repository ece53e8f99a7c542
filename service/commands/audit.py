"""`scantune audit [--client C] [--action A] [--since T] [--until T] [--limit N | --all]
[--csv | --json]`: the training service's audit trail (an admin key), newest first, for a
person at a terminal or, as CSV, for a compliance review's spreadsheet."""

from __future__ import annotations

import argparse
import csv
import json
import sys
from datetime import UTC, datetime
from typing import Any, get_args

from service.audit import TrainingAction
from service.commands.client import HTTP_ERROR, ApiClient, add_connection_args, guarded

OK = 0
COLUMNS = ("at", "action", "client", "target", "outcome", "request_id", "detail")


def register(subparsers: Any) -> None:
    text = "the training service's audit trail, newest first (an admin key)"
    parser = subparsers.add_parser(
        "audit", help=text, description=text,
        epilog=f"exit codes: {OK} done, {HTTP_ERROR} the API refused or could not be reached",
    )  # fmt: skip
    add_connection_args(parser)
    parser.add_argument("--client", help="only this client's records")
    parser.add_argument("--action", choices=get_args(TrainingAction), help="only this action")
    parser.add_argument("--since", type=moment, help="records at or after this time (ISO 8601)")
    parser.add_argument("--until", type=moment, help="records before this time (ISO 8601)")
    count = parser.add_mutually_exclusive_group()
    count.add_argument("--limit", type=int, default=50, help="how many, newest first (default 50)")
    count.add_argument("--all", action="store_true", help="every record the filters match")
    shape = parser.add_mutually_exclusive_group()
    shape.add_argument("--json", action="store_true", help="print the records as JSON")
    shape.add_argument("--csv", action="store_true", help="print them as CSV, detail as JSON")
    parser.set_defaults(func=guarded(run))


def moment(text: str) -> str:
    """An ISO 8601 date or date-time as the API takes it; one without an offset is UTC."""
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 date or time: {text!r}") from None
    return (at if at.tzinfo else at.replace(tzinfo=UTC)).isoformat()


def run(args: argparse.Namespace, api: ApiClient) -> int:
    if not args.all and args.limit < 1:
        print("error: --limit must be at least 1", file=sys.stderr)
        return 2
    wanted = {"client": args.client, "action": args.action, "since": args.since,
              "until": args.until}  # fmt: skip
    filters = {k: v for k, v in wanted.items() if v}
    records = list(api.audit(limit=None if args.all else args.limit, **filters))
    if args.json:
        print(json.dumps(records, indent=2))
    elif args.csv:
        out = csv.DictWriter(sys.stdout, COLUMNS, extrasaction="ignore", lineterminator="\n")
        out.writeheader()
        for record in records:
            out.writerow({**record, "detail": json.dumps(record.get("detail") or {})})
    else:
        _table(records)
    return OK


def _table(records: list[dict[str, Any]]) -> None:
    if not records:
        print("no records")
        return
    rows = [
        (r["at"][:19].replace("T", " "), r["action"], r["client"], r["target"], r["outcome"])
        for r in records
    ]
    head = ("AT (UTC)", "ACTION", "CLIENT", "TARGET", "OUTCOME")
    widths = [max(len(str(row[i])) for row in (head, *rows)) for i in range(len(head) - 1)]
    for row in (head, *rows):
        print("  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=False)), row[-1])
