"""`scantune models outcomes NAME VERSION [--report FILE.csv] [--retract REF ...] [--by week]`:
report confirmed diagnoses for scans a version classified (or withdraw those of scans whose
diagnosis was withdrawn), and show how it does on them beside its card, in all or period by
period.

The CSV is what a RIS or a study spreadsheet exports, or `scantune predict --outcomes-sheet`
wrote: a header row `reference,label,` then one column per class of the model holding the
probability the version answered, and `signature` where the answer had one (a `file` column
is read by people only, never sent); one row per scan, those with no label yet left out. It
is sent 1,000 rows a request (each request kept whole, or refused whole with the row's field
named)."""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from service.commands.client import ApiClient

OK, USAGE = 0, 2  # argparse's own code for bad arguments; also an unreadable CSV
CHUNK = 1000  # the API's most per request


def add_to(sub: Any, add: Callable[..., argparse.ArgumentParser]) -> None:
    parser = add(sub, "outcomes", "how a version does on reported outcomes; --report adds", run)
    parser.add_argument("name")
    parser.add_argument("version", type=int)
    parser.add_argument(
        "--report", metavar="FILE.csv", type=Path,
        help="first send these outcomes (columns reference, label, one per class)",
    )  # fmt: skip
    parser.add_argument(
        "--retract", metavar="REF", action="append", default=[],
        help="first withdraw this client's report of this scan (its reference; again for more):"
        " its diagnosis was withdrawn",
    )  # fmt: skip
    parser.add_argument(
        "--since", metavar="TIME",
        help="only outcomes reported at or after this ISO 8601 time (UTC without an offset):"
        " how the version does lately",
    )  # fmt: skip
    parser.add_argument("--until", metavar="TIME", help="only outcomes reported before this")
    parser.add_argument(
        "--by", choices=("week", "month", "client"),
        help="show the figures period by period (the last 26 weeks or 24 months unless"
        " --since), or client by client (the version's owner and admin keys)",
    )  # fmt: skip
    parser.add_argument(
        "--client", help="only this client's reports (another's: the owner and admin keys)"
    )


def run(args: argparse.Namespace, api: ApiClient) -> int:
    path = f"/v1/models/{args.name}/versions/{args.version}/outcomes"
    if args.report is not None:
        try:
            rows = read_csv(args.report)
        except (OSError, ValueError, csv.Error) as exc:
            print(f"error: {args.report}: {exc}", file=sys.stderr)
            return USAGE
        for start in range(0, len(rows), CHUNK):
            body = api.json("POST", path, json={"outcomes": rows[start : start + CHUNK]})
            end = start + body["accepted"]
            print(f"rows {start + 1}-{end}: kept, {body['replaced']} replacing earlier reports")
    for start in range(0, len(args.retract), CHUNK):
        chunk = args.retract[start : start + CHUNK]
        body = api.json("POST", f"{path}/retract", json={"references": chunk})
        print(f"{body['retracted']} report(s) withdrawn, {body['unknown']} never reported")
    window = {k: v for k, v in (("since", args.since), ("until", args.until)) if v}
    one = {"client": args.client} if args.client else {}
    if args.by == "client":
        figures = api.json("GET", f"{path}/clients", params=window)
    elif args.by:
        figures = api.json("GET", f"{path}/trend", params={**window, **one, "bucket": args.by})
    else:
        figures = api.json("GET", path, params={**window, **one})
    if args.json:
        print(json.dumps(figures, indent=2))
        return OK
    shown = {"client": show_clients, None: show}.get(args.by, show_trend)
    print(shown(figures))
    return OK


def read_csv(path: Path) -> list[dict[str, Any]]:
    """The outcomes of a CSV file; ValueError naming the row of one that is not."""
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        fields = reader.fieldnames or []
        classes = [f for f in fields if f not in ("reference", "label", "file", "signature")]
        if "reference" not in fields or "label" not in fields or len(classes) < 2:
            raise ValueError("the header must name reference, label and each class's column")
        rows = []
        for line, row in enumerate(reader, start=2):
            if not (row["label"] or "").strip():
                continue  # not read yet
            try:
                probabilities = {c: float(row[c]) for c in classes}
            except (TypeError, ValueError):
                raise ValueError(f"row {line}: each class's column holds a number") from None
            outcome = {"reference": row["reference"], "label": row["label"],
                       "probabilities": probabilities}  # fmt: skip
            if (row.get("signature") or "").strip():
                outcome["signature"] = row["signature"].strip()
            rows.append(outcome)
    if not rows:
        raise ValueError("no row with a label in it")
    return rows


def show(f: dict[str, Any]) -> str:
    """The figures as a few lines a person reads, each beside the card's."""
    window = "".join(f" {k} {f[k]}" for k in ("since", "until") if f.get(k))
    lines = [
        f"{f['name']} version {f['version']}: {f['reports']} reported outcome(s){window} from"
        f" {f['reported_by']} ({f['clients']} client(s))"
    ]
    if not f["reports"]:
        return lines[0]
    decision = f"threshold {f['threshold']}" if f["decision"] == "threshold" else "argmax"
    lines.append(f"  decided by {decision}; by label: "
                 + ", ".join(f"{k} {v}" for k, v in f["by_label"].items()))  # fmt: skip
    for name in ("accuracy", "auc", "sensitivity", "specificity"):
        got, claimed = f[name], f["validation"].get(name)
        if got is None:
            continue
        text = f"  {name:12} {got['value']:.3f} ({got['low']:.3f}-{got['high']:.3f})"
        if claimed:
            text += f"   card: {claimed['value']:.3f} ({claimed['low']:.3f}-{claimed['high']:.3f})"
        lines.append(text + ("   BELOW VALIDATION" if name in f["below_validation"] else ""))
    return "\n".join(lines)


def show_trend(f: dict[str, Any]) -> str:
    """A row a period: its reports and shares with their intervals, those below the card's
    flagged; a period the window cuts (the one under way) marked "(part)"."""
    title = (
        f"{f['name']} version {f['version']} by {f['bucket']} since {f['since'][:10]}, reported"
        f" by {f['reported_by']}: shares with 95% intervals"
    )
    rows = [(p["start"][:10] + (" (part)" if p.get("partial") else ""), p) for p in f["periods"]]
    return _table(title, f"{f['bucket'].upper()} OF", rows, "no outcome reported in the window")


def show_clients(f: dict[str, Any]) -> str:
    """A row a client (site): its reports and shares, those below the card's flagged."""
    title = f"{f['name']} version {f['version']} by client: shares with 95% intervals"
    return _table(title, "CLIENT", [(c["client"], c) for c in f["clients"]], "no outcome reported")


def _table(title: str, first: str, rows: list[tuple[str, dict[str, Any]]], none: str) -> str:
    """`title`, then a row each (`first` names its first column): reports, the shares with
    their intervals, and the figures below the card's."""
    if not rows:
        return f"{title}\n  {none}"
    names = ("accuracy", "sensitivity", "specificity")
    width = max(10, len(first), *(len(name) for name, _ in rows))
    lines = [
        title,
        f"  {first:{width}}  {'REPORTS':>7}" + "".join(f"  {n.upper():19}" for n in names),
    ]
    for name, row in rows:
        cells = "".join(f"  {_share(row[n]):19}" for n in names)
        below = ", ".join(row["below_validation"])
        lines.append(f"  {name:{width}}  {row['reports']:>7}{cells}"
                     + (f"  BELOW THE CARD: {below}" if below else ""))  # fmt: skip
    return "\n".join(lines)


def _share(e: dict[str, Any] | None) -> str:
    return "-" if e is None else f"{e['value']:.3f} ({e['low']:.3f}-{e['high']:.3f})"
