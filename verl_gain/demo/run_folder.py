"""The files a demo (or benchmark) run leaves in its folder: what the run writes and the report reads."""

from __future__ import annotations

import shutil
from pathlib import Path

METRICS_FILE = "metrics.jsonl"
"""verl's ``file`` logger output (``verl_gain.demo.launcher.read_metrics``)."""
LOG_FILE = "train.log"
"""The trainer's whole output; its first line is the command."""
SETTINGS_FILE = "settings.json"
"""The run's ``DemoSettings``."""
CHECKPOINTS_DIR = "checkpoints"
"""verl's ``trainer.default_local_dir``: the GAIN pre-pass scores and trace land here (no model checkpoints)."""
REPORT_DIR = "report"
DATA_DIR = "data"
"""The task's parquet files (``train.parquet``, ``test.parquet``)."""


def clear_run(out_dir: Path) -> None:
    """Remove what an earlier run left in ``out_dir`` (a rerun starts fresh: no appended trace, metrics or report)."""
    for name in (CHECKPOINTS_DIR, REPORT_DIR):
        shutil.rmtree(out_dir / name, ignore_errors=True)
    for name in (METRICS_FILE, LOG_FILE, SETTINGS_FILE):
        (out_dir / name).unlink(missing_ok=True)
