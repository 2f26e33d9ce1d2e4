"""The catalogue's claims as real processes: exit status, one line on stderr, no traceback, and Ctrl-C.

``test_cli_inputs.py`` runs ~90 bad command lines in-process; here a few of them (one per subcommand, and the
trainer's start-up) run as the commands a user types, so that nothing between ``main`` and the shell (an import
warning, an exception in an atexit hook) adds a traceback or changes the status. Ctrl-C during ``verl-gain score``
exits 130 with one line and keeps the finished chunks; the same command then resumes from them.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from tests.e2e import REPO_ROOT, arithmetic_rows
from tests.tiny import make_tiny_model_dir
from verl_gain.cli.shared import INTERRUPTED_EXIT_CODE
from verl_gain.scoring.scorer import parts_dir_for
from verl_gain.scoring.scores_file import read_scores

COMMAND_TIMEOUT_S = 300
# Ctrl-C arrives once this many chunks are finished (chunk size 1, one prompt per forward pass).
CHUNKS_BEFORE_INTERRUPT = 2
PROMPTS = 24
INTERRUPTED_RUN_PROMPTS = 200
"""Rows of the Ctrl-C run: one prompt per chunk takes ~60 ms here, so the signal sent after chunk 2 arrives seconds
before the last chunk even on a loaded machine (with 24 rows the run once finished first and exited 0)."""


def run(*args: str, module: str = "verl_gain.cli") -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
        env=env,
    )


def _with_default_sigint() -> None:
    """Give the child Ctrl-C's default action whatever pytest was launched from: a shell without job control starts
    background jobs with SIGINT ignored, the child would inherit that, and Python would then never raise
    KeyboardInterrupt (the run finished and exited 0 under ``make test &`` in a script)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert "Traceback" not in stderr, stderr[-3000:]
    assert len(lines) == 1, stderr[-3000:]
    return lines[0]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("processes")
    make_tiny_model_dir(folder / "tiny")
    rows = arithmetic_rows(PROMPTS, "train")
    pd.DataFrame(rows).to_parquet(folder / "data.parquet")
    pd.DataFrame(rows[:3]).to_parquet(folder / "small.parquet")
    pd.DataFrame(arithmetic_rows(INTERRUPTED_RUN_PROMPTS, "train")).to_parquet(folder / "long.parquet")
    (folder / "empty.parquet").write_bytes(b"")
    return folder


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["inspect", "{i}/empty.parquet"], r"^verl-gain inspect: error: .*empty.parquet is not a readable scores file"),
        (
            ["score", "--data", "{i}/small.parquet", "--model", "{i}/tiny", "--out", "{i}"],
            r"^verl-gain score: error: --out .* is a folder",
        ),
        (["plan", "--rows", "10", "--batch", "4", "--steps", "0"], r"^verl-gain plan: error: argument --steps"),
        (
            ["eval", "--model", "{i}/tiny", "{i}/nope", "--data", "{i}/small.parquet", "--output-dir", "{i}/eval"],
            r"^verl-gain eval: error: checkpoint .*nope does not exist",
        ),
        (
            ["check-signal", "--model", "{i}/tiny", "--data", "{i}/small.parquet", "--sample", "0"],
            r"^verl-gain check-signal: error: argument --sample",
        ),
    ],
)
def test_a_bad_command_line_exits_2_with_one_line(inputs, args, message):
    done = run(*(arg.format(i=inputs) for arg in args))
    assert done.returncode == 2, done.stderr[-3000:]
    assert pytest.importorskip("re").search(message, one_line(done.stderr))
    assert not (inputs / "eval").exists()


def test_the_trainer_refuses_an_unreadable_scores_file_before_ray_starts(inputs):
    done = run(
        "trainer.device=cpu",
        "gain.enable=True",
        f"data.train_files={inputs / 'small.parquet'}",
        "data.train_batch_size=2",
        "data.dataloader_num_workers=0",
        f"gain.scores_path={inputs / 'empty.parquet'}",
        module="verl_gain.main",
    )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("verl-gain: gain.scores_path: ") and "is not a readable scores file (0 bytes" in last


def test_ctrl_c_during_score_is_one_line_and_the_same_command_resumes(inputs, tmp_path):
    out = tmp_path / "scores.parquet"
    parts = parts_dir_for(out)
    args = [sys.executable, "-m", "verl_gain.cli", "score", "--data", str(inputs / "long.parquet")]
    args += ["--model", str(inputs / "tiny"), "--out", str(out), "--chunk-size", "1", "--token-budget", "1"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    process = subprocess.Popen(
        [*args, "--quiet"],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_with_default_sigint,
    )
    deadline = time.monotonic() + COMMAND_TIMEOUT_S
    while len(list(parts.glob("chunk-*.parquet"))) < CHUNKS_BEFORE_INTERRUPT:
        assert process.poll() is None, process.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "no chunk was finished in time"
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=COMMAND_TIMEOUT_S)
    assert process.returncode == INTERRUPTED_EXIT_CODE, stderr[-3000:]
    line = one_line(stderr)
    assert line.startswith("verl-gain score: interrupted; ") and "run the same command again to resume" in line
    kept = sorted(p.name for p in parts.iterdir())
    assert len(kept) >= CHUNKS_BEFORE_INTERRUPT and not out.exists()
    assert all(name.startswith("chunk-") or name == "fingerprint.json" for name in kept), kept  # no temp file

    done = subprocess.run([*args, "--quiet"], cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    reused = int(done.stdout.split("reused ")[1].split()[0])
    assert reused >= CHUNKS_BEFORE_INTERRUPT
    scores, _, info = read_scores(out)
    assert len(scores) == INTERRUPTED_RUN_PROMPTS and info["chunks_reused"] == reused and not parts.exists()
    assert json.loads(json.dumps(info))["scored"] == INTERRUPTED_RUN_PROMPTS
