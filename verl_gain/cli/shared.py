"""What the subcommands share: argparse types (a bad number is refused by the parser itself, exit 2, one line, before
any module loads) and exit statuses."""

from __future__ import annotations

import argparse
import math

INPUT_ERROR_EXIT_CODE = 2
"""Bad input (argparse's own status for usage errors, used for every one-line refusal)."""
INTERRUPTED_EXIT_CODE = 130
"""A command stopped by Ctrl-C (the shell's 128 + SIGINT)."""


def positive_int(text: str) -> int:
    """An integer >= 1 (a count: prompts, steps, tokens, rows)."""
    value = _integer(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def non_negative_int(text: str) -> int:
    """An integer >= 0 (a seed)."""
    value = _integer(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {text}")
    return value


def finite_float(text: str) -> float:
    """A finite number (no nan, no inf)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return value


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
