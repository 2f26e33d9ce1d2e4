"""The ``verl-gain`` command line: one thin module per subcommand over library functions.

Each subcommand module (``verl_gain/cli/<name>.py``) exposes ``add_parser(subparsers)``, which registers its
arguments and sets ``func``; the library it calls is imported only when the subcommand runs, so ``verl-gain --help``
stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import NoReturn

# name -> module providing add_parser(subparsers); imported lazily so `verl-gain --help` stays fast.
SUBCOMMANDS: dict[str, str] = {
    "score": "verl_gain.cli.score",
    "inspect": "verl_gain.cli.inspect",
    "eval": "verl_gain.cli.eval",
    "plan": "verl_gain.cli.plan",
    "check-signal": "verl_gain.cli.check_signal",
}


class OneLineErrorParser(argparse.ArgumentParser):
    """An argparse parser whose usage errors are one line (``verl-gain score: error: ...``), exit status 2.

    argparse prints the whole usage block above the error; the tools' own errors are one line each, and so are these
    (``--help`` still prints the usage).
    """

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(prog="verl-gain", description="GAIN-RL curriculum tools for verl.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in SUBCOMMANDS.values():
        importlib.import_module(module).add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:  # a usage error (one line, printed) or --help: its status, as the shell would see it
        return stop.code if isinstance(stop.code, int) else 2
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
