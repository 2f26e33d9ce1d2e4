"""``python -m verl_gain.main``'s device choice, and ``gain.enable=False`` being verl exactly.

The device follows the Ray cluster the run will use, not the machine the command starts on: a job launched from a
CPU login node onto a GPU cluster must stay on the GPUs. Here the "GPU cluster" is a real Ray cluster that declares
two (logical) GPUs, reached through ``RAY_ADDRESS`` as a cluster started elsewhere is; both entry points then run
until verl's ``run_ppo`` (``recipes/smoke/resolved_config.py``) and their configs are compared.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

import verl_gain
from tests.e2e import REPO_ROOT
from verl_gain.cpu.backend import accelerator_available
from verl_gain.main import CONFIG_NAME, DeviceChoiceError, select_device

CONFIG_DIR = Path(verl_gain.__file__).parent / "trainer" / "config"
RESOLVED_CONFIG = REPO_ROOT / "recipes" / "smoke" / "resolved_config.py"
SUBPROCESS_TIMEOUT_S = 300
CLUSTER_GPUS = 2
NO_RAY_AUTH = {"RAY_AUTH_MODE": "disabled"}
"""Ray 2.60 puts a token on locally started clusters; the test cluster and its clients go without one."""
# A GPU run's overrides (vLLM rollout, GRPO): only resolved, never run.
GPU_RUN = [
    "actor_rollout_ref.model.path=/models/some-model",
    "data.train_files=/data/train.parquet",
    "data.val_files=/data/test.parquet",
    "algorithm.adv_estimator=grpo",
    "actor_rollout_ref.rollout.name=vllm",
    "data.train_batch_size=4",
    "actor_rollout_ref.actor.ppo_mini_batch_size=4",
    "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2",
    "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=2",
    "actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=2",
    f"trainer.n_gpus_per_node={CLUSTER_GPUS}",
]
CLUSTER_SCRIPT = f"""
import sys, ray
ray.init(num_cpus=1, num_gpus={CLUSTER_GPUS}, include_dashboard=False)
print(ray.get_runtime_context().gcs_address, flush=True)
sys.stdin.read()  # until the test closes stdin
ray.shutdown()
"""


def composed(overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        return compose(CONFIG_NAME, overrides=overrides)


@pytest.fixture(scope="module")
def gpu_cluster_address():
    """A Ray cluster with two logical GPUs in its own process (the way a cluster started elsewhere is reached)."""
    env = {**os.environ, **NO_RAY_AUTH}
    env.pop("RAY_ADDRESS", None)
    process = subprocess.Popen(
        [sys.executable, "-c", CLUSTER_SCRIPT], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        address = process.stdout.readline().strip()
        assert address, "the test Ray cluster did not start"
        yield address
    finally:
        process.stdin.close()
        process.wait(timeout=SUBPROCESS_TIMEOUT_S)


def resolved(entry: str, overrides: list[str], tmp_path: Path, env: dict[str, str]) -> str:
    out = tmp_path / f"{entry}.yaml"
    proc = subprocess.run(
        [sys.executable, str(RESOLVED_CONFIG), entry, str(out), *overrides],
        cwd=tmp_path,  # hydra's output folder
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT), **env},
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT_S,
    )
    assert proc.returncode == 0 and out.is_file(), proc.stdout[-3000:] + proc.stderr[-3000:]
    return out.read_text()


@pytest.mark.skipif(accelerator_available(), reason="needs a machine without an accelerator")
def test_without_a_cluster_and_without_an_accelerator_the_cpu_backend_runs(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert select_device(composed([])) == "cpu"


def test_a_device_given_on_the_command_line_is_kept_and_nothing_is_probed(monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:1")  # nothing listens there: a probe would fail
    assert select_device(composed(["trainer.device=cuda"]), ["trainer.device=cuda"]) == "cuda"


def test_a_local_cluster_declaring_gpus_keeps_the_device(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    config = composed([f"+ray_kwargs.ray_init.num_gpus={CLUSTER_GPUS}"])
    assert select_device(config) == "cuda"


def test_an_unreachable_cluster_is_refused_in_one_line_not_after_minutes_of_retries(monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:1")
    with pytest.raises(DeviceChoiceError, match=r"^cannot reach the Ray cluster at .*:1 to see whether it has GPUs"):
        select_device(composed(GPU_RUN))


def test_a_gpu_cluster_reached_from_a_cpu_machine_keeps_the_gpus_and_gain_off_is_verl_exactly(
    gpu_cluster_address, tmp_path
):
    """Launched from this CPU-only machine onto a cluster with GPUs: ``gain.enable=False`` hands verl's ``run_ppo``
    the very config (and task runner) ``python -m verl.trainer.main_ppo`` does; ``gain.enable=True`` stays on the
    cluster's GPUs too (before: both switched to the CPU backend because the launching machine has no GPU)."""
    env = {"RAY_ADDRESS": gpu_cluster_address, **NO_RAY_AUTH}
    verl = resolved("verl", GPU_RUN, tmp_path, env)
    gain_off = resolved("verl-gain", [*GPU_RUN, "gain.enable=False"], tmp_path, env)
    assert "device: cuda" in verl and "name: vllm" in verl
    assert gain_off == verl

    train = tmp_path / "train.parquet"
    import pandas as pd

    from tests.e2e import arithmetic_rows

    pd.DataFrame(arithmetic_rows(8, "train")).to_parquet(train)
    gain_run = [*GPU_RUN, f"data.train_files={train}", "data.dataloader_num_workers=0", "gain.enable=True"]
    gain_on = resolved("verl-gain", gain_run, tmp_path, env)
    assert "device: cuda" in gain_on and "enable: true" in gain_on and "name: vllm" in gain_on
