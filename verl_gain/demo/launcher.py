"""Launch ``python -m verl_gain.main`` runs in a subprocess and read their metrics back.

Used by ``make demo``, the learning-speed benchmark, the CPU timing bench and the end-to-end tests. Metrics come from
verl's own ``file`` logger (``trainer.logger=[...,file]``): one JSON line per logged step,
``{"step": int, "data": {metric: value}}``, at the path in ``VERL_FILE_LOGGER_PATH``. A run is started in a session
of its own, so a timeout kills every process it started (its Ray cluster included).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

METRICS_ENV = "VERL_FILE_LOGGER_PATH"
LOG_TAIL_CHARS = 6000
DEFAULT_TIMEOUT_S = 600.0


@dataclass
class RunResult:
    """Outcome of one ``python -m verl_gain.main`` run."""

    returncode: int
    output: str
    seconds: float
    metrics_path: Path

    def check(self) -> RunResult:
        """Raise with the end of the log if the run failed."""
        if self.returncode != 0:
            raise AssertionError(
                f"python -m verl_gain.main exited with {self.returncode}; log tail:\n{self.output[-LOG_TAIL_CHARS:]}"
            )
        return self

    @property
    def steps(self) -> list[dict]:
        """Every logged step: ``{"step": int, "data": {metric: value}}``."""
        return read_metrics(self.metrics_path)

    def metric(self, name: str) -> dict[int, float]:
        """``{step: value}`` of one metric over the logged steps that have it."""
        return {entry["step"]: entry["data"][name] for entry in self.steps if name in entry["data"]}


def read_metrics(path: str | Path) -> list[dict]:
    """The JSON lines written by verl's ``file`` logger (empty if the file does not exist)."""
    path = Path(path)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def session_members(session_id: int) -> list[int]:
    """Pids of the processes in a session (Linux ``/proc``); Ray workers get their own process group in it."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == session_id:  # the fields after "pid (comm)": state, ppid, pgrp, session, ...
            members.append(int(stat.parent.name))
    return members


def kill_session(session_id: int) -> None:
    """SIGKILL every process of a session that this helper started (``start_new_session``)."""
    for pid in session_members(session_id):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def run_main(
    overrides: list[str],
    metrics_path: str | Path,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    env: dict[str, str] | None = None,
    cwd: str | Path | None = None,
    echo: bool | Callable[[str], None] = False,
) -> RunResult:
    """Run ``python -m verl_gain.main <overrides>`` in a subprocess; its metrics go to ``metrics_path``.

    A run past ``timeout_s`` is killed with every process of its session (the Ray cluster it started included)
    and reported as return code -9. ``echo`` also prints the run's output as it comes (for long runs), or passes
    each line to a callable (e.g. a filter that shows progress only).
    """
    metrics_path = Path(metrics_path)
    metrics_path.parent.mkdir(parents=True, exist_ok=True)
    run_env = {
        **os.environ,
        METRICS_ENV: str(metrics_path),
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "RAY_DEDUP_LOGS": "0",
        **(env or {}),
    }
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "verl_gain.main", *overrides],
        cwd=str(cwd or metrics_path.parent),
        env=run_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    lines: list[str] = []

    def collect() -> None:
        for line in process.stdout:
            lines.append(line)
            if callable(echo):
                echo(line)
            elif echo:
                print(line, end="", flush=True)

    reader = threading.Thread(target=collect, daemon=True)
    reader.start()
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        kill_session(process.pid)
        process.wait()
        lines.append(f"\n[verl-gain] killed after {timeout_s:.0f} s")
    reader.join()
    return RunResult(process.returncode, "".join(lines), time.perf_counter() - started, metrics_path)
