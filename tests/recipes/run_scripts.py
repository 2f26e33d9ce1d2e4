"""Helpers for the run-script tests: find the scripts and read the command line each one would run.

A script is run by bash with ``PYTHON`` pointing at a stand-in that writes its arguments to a file instead of
starting Python, so the exact override list (after the script's environment defaults are applied) can be inspected
and composed without launching anything. ``REWARD_PATH`` is set so the script does not ask Python for it.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RECIPES = REPO / "recipes"
ENTRY_MODULE = "verl_gain.main"
STAND_IN = '#!/bin/sh\nprintf "%s\\n" "$@" > "$ARGUMENTS_FILE"\n'


def run_scripts() -> list[Path]:
    """Every recipes/<task>/run_*.sh."""
    return sorted(RECIPES.glob("*/run_*.sh"))


def is_uniform_twin(script: Path) -> bool:
    return script.stem.endswith("_uniform")


def command_line(script: Path, tmp_path: Path, env: dict[str, str] | None = None, extra: list[str] = ()) -> list[str]:
    """The arguments ``script`` passes to Python (``-m verl_gain.main`` and its hydra overrides)."""
    stand_in = tmp_path / "python-stand-in"
    stand_in.write_text(STAND_IN)
    stand_in.chmod(0o755)
    arguments = tmp_path / f"{script.stem}.args"
    environment = {
        **os.environ,
        "PYTHON": str(stand_in),
        "ARGUMENTS_FILE": str(arguments),
        "REWARD_PATH": "/rewards/reward.py",
        **(env or {}),
    }
    subprocess.run(["bash", str(script), *extra], env=environment, check=True, timeout=60)
    return arguments.read_text().splitlines()


def overrides(script: Path, tmp_path: Path, env: dict[str, str] | None = None, extra: list[str] = ()) -> list[str]:
    """The hydra overrides of ``script`` (its command line without ``-m verl_gain.main``)."""
    args = command_line(script, tmp_path, env, extra)
    assert args[:2] == ["-m", ENTRY_MODULE], args[:2]
    return args[2:]


def as_dict(override_list: list[str]) -> dict[str, str]:
    return dict(item.split("=", 1) for item in override_list)
