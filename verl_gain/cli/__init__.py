"""The ``verl-gain`` command line: one thin module per subcommand over library functions.

Each subcommand module (``verl_gain/cli/<name>.py``) exposes ``add_parser(subparsers)``, which registers its
arguments and sets ``func``; the library it calls is imported only when the subcommand runs, so ``verl-gain --help``
stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# name -> module providing add_parser(subparsers); imported lazily so `verl-gain --help` stays fast.
SUBCOMMANDS: dict[str, str] = {
    "score": "verl_gain.cli.score",
    "inspect": "verl_gain.cli.inspect",
    "eval": "verl_gain.cli.eval",
    "plan": "verl_gain.cli.plan",
    "check-signal": "verl_gain.cli.check_signal",
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
