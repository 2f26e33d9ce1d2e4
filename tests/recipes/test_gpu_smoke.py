"""``bash recipes/smoke/gpu_smoke.sh`` end to end on this CPU-only machine, as CI runs it: the CPU backend, a tiny
model named by a hub id from a local Hugging Face cache, a tiny dataset, 2 steps. Every check that can run here
passes; every GPU-only check is skipped with its reason; the table is printed once with all of them."""

from __future__ import annotations

import os
import subprocess
import sys

import pandas as pd
import pytest

from tests.e2e import REPO_ROOT, arithmetic_rows
from tests.tiny import make_tiny_model_dir, put_in_hub_cache

pytestmark = pytest.mark.e2e(launches=3)

HUB_ID = "tiny-org/tiny-chat"
SMOKE_TIMEOUT_S = 1800
RAN_HERE = (
    "verl importable",
    "model resolvable",
    "data present",
    "V1 run, 2 CPU worker(s)",
    "legacy run, 1 CPU worker(s)",
    "pre-pass vs verl-gain score",
    "save + resume continues the curriculum",
    "gain.enable=False is verl exactly",
)
GPU_ONLY = ("vLLM importable", "GPUs visible", "flash-attention or sdpa", "bf16 rank agreement")


def table_rows(output: str) -> dict[str, tuple[str, str]]:
    """``{check: (result, detail)}`` from the final table (after its header)."""
    lines = output.splitlines()
    start = max(i for i, line in enumerate(lines) if line.startswith("check ") and "result" in line)
    rows = {}
    for line in lines[start + 2 :]:
        if not line.strip() or line.startswith("[smoke]"):
            break
        for result in ("PASS", "FAIL", "SKIP"):
            check, sep, detail = line.partition(f"  {result}  ")
            if sep:
                rows[check.strip()] = (result, detail.strip())
    return rows


def test_the_gpu_smoke_script_runs_end_to_end_on_the_cpu_backend(tmp_path):
    cache = tmp_path / "hf_cache"
    put_in_hub_cache(cache, HUB_ID, make_tiny_model_dir(tmp_path / "model", template="smollm2"))
    train, val = tmp_path / "train.parquet", tmp_path / "test.parquet"
    pd.DataFrame(arithmetic_rows(8, "train")).to_parquet(train)
    pd.DataFrame(arithmetic_rows(4, "test", offset=8)).to_parquet(val)
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_HUB_CACHE": str(cache),
        "SMOKE_DIR": str(tmp_path / "smoke"),
        "SMOKE_MODEL": HUB_ID,
        "SMOKE_TRAIN": str(train),
        "SMOKE_VAL": str(val),
        "PYTHON": sys.executable,
    }
    proc = subprocess.run(
        ["bash", str(REPO_ROOT / "recipes" / "smoke" / "gpu_smoke.sh")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=SMOKE_TIMEOUT_S,
    )
    output = proc.stdout + proc.stderr
    rows = table_rows(proc.stdout)
    assert proc.returncode == 0, output[-6000:]
    assert set(rows) == set(RAN_HERE) | set(GPU_ONLY), rows
    for check in RAN_HERE:
        assert rows[check][0] == "PASS", (check, rows[check])
    for check in GPU_ONLY:
        result, reason = rows[check]
        assert result == "SKIP" and reason.startswith("no GPU: "), (check, rows[check])
    assert rows["V1 run, 2 CPU worker(s)"][1].startswith("steps 1-2: gain/step_angle ")
    assert HUB_ID in rows["model resolvable"][1] and "snapshots" in rows["model resolvable"][1]
    assert "[smoke] PASSED" in proc.stdout
