"""`scantune jobs submit|list|show|cancel|logs`: the training API from CI or a shell."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from service.commands.client import HTTP_ERROR, ApiClient, ApiError, add_connection_args, guarded
from service.commands.progress import best_epoch_line, make_display

SUCCEEDED = 0
FAILED = 1
USAGE = 2  # argparse's own code for bad arguments; also an unreadable job file
CANCELLED = 3
GATE_NOT_PASSED = 4
WAIT_TIMEOUT = 6

EXIT_CODES = f"""exit codes:
  {SUCCEEDED}  submitted (without --wait), or the job succeeded and its promotion gate, if any,
     passed; with --dry-run, the service would accept the spec
  {FAILED}  the job failed (its error reason is printed)
  {USAGE}  bad arguments or an unreadable job file
  {CANCELLED}  the job was cancelled
  {GATE_NOT_PASSED}  the job succeeded but its promotion gate did not pass (the alias did not move)
  {HTTP_ERROR}  the API refused a request (4xx/5xx, problem printed) or could not be reached
  {WAIT_TIMEOUT}  --timeout passed before the job finished (the job keeps running)"""

TERMINAL = {"succeeded", "failed", "cancelled"}
POLL_RETRIES = 5  # consecutive unreachable/5xx polls tolerated while waiting


def register(subparsers: Any) -> None:
    jobs = subparsers.add_parser("jobs", help="submit and follow training jobs over the API")
    sub = jobs.add_subparsers(dest="jobs_command", required=True, metavar="ACTION")

    submit = _add(sub, "submit", "submit a job spec (YAML or JSON)", run_submit)
    submit.epilog = EXIT_CODES
    submit.add_argument("spec", help="job spec file, YAML or JSON ('-' reads standard input)")
    submit.add_argument("--wait", action="store_true", help="follow the job until it finishes")
    submit.add_argument(
        "--dry-run", action="store_true",
        help="only ask the service whether it would accept the spec (its data found, its model"
        " yours or granted); nothing is queued",
    )  # fmt: skip
    submit.add_argument("--idempotency-key", help="makes a retried submit return the same job")
    submit.add_argument("--poll-interval", type=float, default=2.0, help="seconds between polls")
    submit.add_argument("--timeout", type=float, help="with --wait: give up after this long")

    watch = _add(sub, "watch", "follow a job until it ends, with a progress bar", run_watch)
    watch.epilog = EXIT_CODES
    watch.add_argument("job_id")
    watch.add_argument("--poll-interval", type=float, default=2.0, help="seconds between polls")
    watch.add_argument("--timeout", type=float, help="give up after this long")

    listing = _add(sub, "list", "list jobs, newest first", run_list)
    listing.add_argument("--status", choices=sorted({"queued", "running", *TERMINAL}))
    listing.add_argument("--model", help="only jobs for this model name")
    listing.add_argument("--client", help="only this client's jobs (with an admin key)")
    listing.add_argument("--limit", type=int, default=20, help="how many (default 20)")

    show = _add(sub, "show", "a job as JSON", run_show)
    show.add_argument("job_id")
    cancel = _add(sub, "cancel", "cancel a queued or running job", run_cancel)
    cancel.add_argument("job_id")
    logs = _add(sub, "logs", "a job's log", run_logs)
    logs.add_argument("job_id")
    logs.add_argument("--tail", type=int, help="only the last N lines")


def _add(sub: Any, name: str, help_text: str, func: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser(
        name, help=help_text, description=help_text,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    add_connection_args(parser)
    parser.add_argument("--json", action="store_true", help="print raw JSON")
    parser.set_defaults(func=guarded(func))
    return parser


def run_submit(args: argparse.Namespace, api: ApiClient) -> int:
    import yaml

    try:
        text = sys.stdin.read() if args.spec == "-" else Path(args.spec).read_text()
        spec = yaml.safe_load(text)
    except (OSError, yaml.YAMLError) as exc:
        print(f"error: cannot read job spec {args.spec}: {exc}", file=sys.stderr)
        return USAGE
    problems = spec_problems(spec)
    if problems:
        name = "<stdin>" if args.spec == "-" else args.spec
        print(f"error: {name}: {len(problems)} invalid field(s)", file=sys.stderr)
        for problem in problems:
            print(f"  {name}: {problem}", file=sys.stderr)
        return USAGE
    if args.dry_run:
        return _checked(api, spec, args)
    headers = {"Idempotency-Key": args.idempotency_key} if args.idempotency_key else {}
    job = api.json("POST", "/v1/training-jobs", json=spec, headers=headers)
    if args.json and not args.wait:
        print(json.dumps(job, indent=2))
    else:
        print(f"job {job['id']} {job['status']}: {api.url}/v1/training-jobs/{job['id']}")
    return follow(api, job, args) if args.wait else SUCCEEDED


def _checked(api: ApiClient, spec: Any, args: argparse.Namespace) -> int:
    if args.wait or args.idempotency_key:
        print("error: --dry-run queues nothing to wait for or to retry", file=sys.stderr)
        return USAGE
    check = api.check_job(spec)
    if args.json:
        print(json.dumps(check, indent=2))
    else:
        whose = {"new": "a new model, yours once published", "owned": "your model",
                 "granted": "another client's model, granted to you"}  # fmt: skip
        name = check["model_name"]
        print(f"ok: the service would accept this job for {name} ({whose[check['model']]})")
    return SUCCEEDED


def follow(api: ApiClient, job: dict[str, Any], args: argparse.Namespace) -> int:
    """Poll until the job ends, showing its progress; the exit code says how it ended."""
    deadline = time.monotonic() + args.timeout if args.timeout else None
    display, failures = make_display(), 0
    try:
        display.update(job)
        while job["status"] not in TERMINAL:
            if deadline is not None and time.monotonic() > deadline:
                display.close()
                print(f"timed out after {args.timeout:g}s; job {job['id']} is {job['status']}")
                return WAIT_TIMEOUT
            time.sleep(args.poll_interval)
            try:
                job = api.job(job["id"])
                failures = 0
            except ApiError as exc:
                failures += 1
                if (exc.status is not None and exc.status < 500) or failures > POLL_RETRIES:
                    raise
                print(f"warning: {exc}; retrying", file=sys.stderr)
                continue
            display.update(job)
    finally:
        display.close()
    if args.json:
        print(json.dumps(job, indent=2))
    return outcome(job)


def run_watch(args: argparse.Namespace, api: ApiClient) -> int:
    args.json = getattr(args, "json", False)
    return follow(api, api.job(args.job_id), args)


def spec_problems(spec: Any) -> list[str]:
    """What the API would refuse in a job file's fields, said before sending it, with
    "did you mean `epochs`?" for a misspelt name."""
    from pydantic import ValidationError

    from models.spec import JobSpec
    from service.suggest import explained_errors

    try:
        JobSpec.model_validate(spec)
    except ValidationError as exc:
        return [
            f"{e['loc'].lstrip('/') or '(top level)'}: {e['msg']}"
            for e in explained_errors(exc, JobSpec, location="")
        ]
    return []


def outcome(job: dict[str, Any]) -> int:
    """Print how the job ended and return its exit code."""
    if job["status"] == "failed":
        error = job.get("error") or {}
        print(f"job {job['id']} failed ({error.get('reason')}): {error.get('detail')}")
        return FAILED
    if job["status"] == "cancelled":
        print(f"job {job['id']} was cancelled")
        return CANCELLED
    artifacts = job.get("artifacts") or {}
    print(f"job {job['id']} succeeded: {job['model_name']} version {artifacts.get('version')}")
    best = best_epoch_line(job)
    if best:
        print(best)
    gate = (job.get("spec") or {}).get("promote")
    if gate is None:
        return SUCCEEDED
    promotion = job.get("promotion")
    if not promotion or not promotion.get("passed"):
        reason = promotion.get("reason") if promotion else "no promotion decision recorded"
        print(f"promotion gate to '{gate['alias']}' did not pass: {reason}")
        return GATE_NOT_PASSED
    print(f"promoted to '{promotion['alias']}': {promotion.get('reason')}")
    return SUCCEEDED


def run_list(args: argparse.Namespace, api: ApiClient) -> int:
    params = {
        "status": args.status,
        "model": args.model,
        "client": args.client,
        "limit": args.limit,
    }
    page = api.json("GET", "/v1/training-jobs", params={k: v for k, v in params.items() if v})
    if args.json:
        print(json.dumps(page, indent=2))
        return SUCCEEDED
    print(f"{'ID':36}  {'MODEL':24}  {'STATUS':22}  {'PROGRESS':>8}  {'CREATED':32}  CLIENT")
    for job in page["items"]:
        progress = f"{100 * (job.get('progress') or 0):.0f}%"
        print(
            f"{job['id']:36}  {job['model_name']:24}  {list_status(job):22}  {progress:>8}  "
            f"{job['created_at']:32}  {job.get('client', '')}"
        )
    return SUCCEEDED


def list_status(job: dict[str, Any]) -> str:
    """The status, with a failed promotion gate shown apart from a plain success."""
    promotion = job.get("promotion")
    if job["status"] == "succeeded" and promotion and not promotion.get("passed"):
        return "succeeded, GATE FAILED"
    return str(job["status"])


def run_show(args: argparse.Namespace, api: ApiClient) -> int:
    print(json.dumps(api.json("GET", f"/v1/training-jobs/{args.job_id}"), indent=2))
    return SUCCEEDED


def run_cancel(args: argparse.Namespace, api: ApiClient) -> int:
    job = api.json("POST", f"/v1/training-jobs/{args.job_id}/cancel")
    print(json.dumps(job, indent=2) if args.json else f"job {job['id']} {job['status']}")
    return SUCCEEDED


def run_logs(args: argparse.Namespace, api: ApiClient) -> int:
    params = {"tail": args.tail} if args.tail else {}
    text = api.request("GET", f"/v1/training-jobs/{args.job_id}/logs", params=params).text
    sys.stdout.write(text)
    return SUCCEEDED
