"""The `scantune` command: a thin dispatcher over one module per command group."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# Each module has `register(subparsers)`, which adds its parser and sets `func(args) -> int`.
COMMAND_MODULES = (
    "service.commands.serve",  # up, serve
    "service.commands.keys",  # keys new
    "service.commands.train",  # train
    "service.commands.jobs",  # jobs submit|list|show|cancel
    "service.commands.models",  # models list|versions|promote
    "service.commands.predict",  # predict
    "service.commands.series",  # series list|show|send-now (the DICOM node)
    "service.commands.audit",  # audit
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="scantune", description=__doc__)
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
