"""The demo in CI, shortened: the real ``make demo`` code path (task files, verl's trainer on the CPU backend with
GAIN sampling, held-out evaluation, report) with a tiny model built from a config and 2 steps."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from tests.tiny import make_tiny_model_dir
from verl_gain.demo import run, run_folder
from verl_gain.demo.__main__ import main as demo_main
from verl_gain.demo.launcher import read_metrics
from verl_gain.demo.report import validation_accuracy
from verl_gain.tasks.arithmetic import DATA_SOURCE, LEVELS
from verl_gain.trainer.curriculum import TRACE_FILE, read_trace

STEPS = 2
PROMPTS_PER_STEP = 4


@pytest.mark.e2e(launches=1)
def test_shortened_demo_trains_with_gain_and_writes_the_report(tmp_path) -> None:
    model = make_tiny_model_dir(tmp_path / "model", template="smollm2")
    out = tmp_path / "demo"
    argv = ["--model", str(model), "--out", str(out), "--steps", str(STEPS), "--test-freq", "1"]
    argv += ["--train-size", "40", "--test-size", "10", "--prompts-per-step", str(PROMPTS_PER_STEP)]

    assert demo_main(argv) == 0

    # Every step drew its batch from the GAIN window over the pre-pass scores of all 40 training prompts.
    trace = read_trace(out / "checkpoints" / TRACE_FILE)
    assert [record["step"] for record in trace] == [1, 2]
    assert all(len(record["positions"]) == PROMPTS_PER_STEP for record in trace)
    assert len(pd.read_parquet(out / "checkpoints" / "gain_scores.parquet")) == 40
    # verl's validation ran before training and after each step, per level of the held-out split.
    val = validation_accuracy(read_metrics(out / run_folder.METRICS_FILE))
    assert sorted(val) == [0, 1, 2]
    assert set(val[0]) == {f"{DATA_SOURCE}/level{level}" for level in LEVELS}
    report_dir = out / run_folder.REPORT_DIR
    for plot in ("curriculum.png", "window_update.png", "levels.png", "scores.png", "reward.png", "accuracy.png"):
        assert (report_dir / plot).stat().st_size > 1000, plot
    report = (report_dir / "report.md").read_text()
    assert "| **all** |" in report and "## The curriculum" in report and f"over {STEPS} steps" in report
    assert json.loads((out / run_folder.SETTINGS_FILE).read_text())["sampling"] == "gain"
    log = (out / run_folder.LOG_FILE).read_text()
    command = log.splitlines()[0]
    assert "-m verl_gain.main" in command and "gain.enable=True" in command and "trainer.device=cpu" in command
    assert command.startswith("# OMP_NUM_THREADS=")  # the run's thread count, as the trainer got it
    # The small-model update reached verl's resolved config (the runner prints it into the log).
    assert "'override_config': {'attn_implementation': 'eager'}" in log
    assert "'override_optimizer_config': {'fused': True}" in log


def test_uniform_baseline_is_the_same_command_without_gain(tmp_path) -> None:
    gain = run.DemoSettings(out_dir=tmp_path, sampling="gain")
    uniform = run.DemoSettings(out_dir=tmp_path, sampling="uniform")
    paths = (tmp_path / "model", tmp_path / "train.parquet", tmp_path / "test.parquet")
    gain_args, uniform_args = run.trainer_overrides(gain, *paths), run.trainer_overrides(uniform, *paths)
    assert "gain.enable=True" in gain_args and "gain.enable=False" in uniform_args
    differing = set(gain_args) ^ set(uniform_args)
    assert all(arg.startswith(("gain.", "trainer.experiment_name=")) for arg in differing), differing


def test_a_rerun_starts_from_a_clean_run_folder(tmp_path) -> None:
    (tmp_path / run_folder.CHECKPOINTS_DIR).mkdir()
    (tmp_path / run_folder.CHECKPOINTS_DIR / TRACE_FILE).write_text('{"step": 1}\n')
    (tmp_path / run_folder.REPORT_DIR).mkdir()
    for name in (run_folder.METRICS_FILE, run_folder.LOG_FILE, run_folder.SETTINGS_FILE):
        (tmp_path / name).write_text("old")
    settings = run.DemoSettings(out_dir=tmp_path, train_size=20, test_size=5)
    train, _ = run.task_paths(settings)

    run_folder.clear_run(tmp_path)

    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]  # the task files are rewritten, not removed
    assert len(pd.read_parquet(train)) == 20
