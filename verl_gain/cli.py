"""The ``verl-gain`` command line: thin subcommands over library functions.

Each subcommand module exposes ``add_parser(subparsers)`` which registers its arguments and sets ``func``.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# name -> module providing add_parser(subparsers); imported lazily so `verl-gain --help` stays fast.
SUBCOMMANDS: dict[str, str] = {
    "score": "verl_gain.scoring.score_command",
    "inspect": "verl_gain.scoring.inspect_command",
    "eval": "verl_gain.evaluation",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="verl-gain", description="GAIN-RL curriculum tools for verl.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in SUBCOMMANDS.values():
        importlib.import_module(module).add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
