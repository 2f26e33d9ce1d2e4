"""The step accuracy from every reward shape, and the start-up check that refuses, before the pre-pass, a reward the
accuracy cannot be read from.

The start-up check calls the reward function verl's workers will call (``reward.custom_reward_function``, loaded by
verl's own ``get_custom_reward_fn``) on one row per data source; the step-time reading takes ``acc`` from where
verl's V1 trainer leaves it (``extra_fields.reward_extra_info``, or top-level fields with a colocated reward model).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir

import verl_gain
from tests.e2e import arithmetic_rows
from verl_gain.main import CONFIG_NAME
from verl_gain.trainer.curriculum import PrepassScores, TrainerCurriculum
from verl_gain.trainer.entry import GainConfigError, check_gain_config
from verl_gain.trainer.reward_shape import RewardShapeError, correctness_from_rewards, rollout_acc
from verl_gain.trainer.settings import GainSettings

CONFIG_DIR = Path(verl_gain.__file__).parent / "trainer" / "config"
# One reward file, one function per shape; `data_source` picks the shape where a test mixes them.
REWARDS = """
def dict_with_acc(data_source, solution_str, ground_truth, extra_info=None, **kwargs):
    hit = float(str(ground_truth) in solution_str)
    return {"score": hit, "acc": hit}


def dict_without_acc(data_source, solution_str, ground_truth, extra_info=None, **kwargs):
    return {"score": float(str(ground_truth) in solution_str), "pred": solution_str[:5]}


def float_in_unit_range(data_source, solution_str, ground_truth, extra_info=None, **kwargs):
    return float(str(ground_truth) in solution_str)


def float_plus_minus_one(data_source, solution_str, ground_truth, extra_info=None, **kwargs):
    return 1.0 if str(ground_truth) in solution_str else -1.0


def mixed(data_source, solution_str, ground_truth, extra_info=None, **kwargs):
    if data_source == "math":
        return dict_with_acc(data_source, solution_str, ground_truth)
    return float_in_unit_range(data_source, solution_str, ground_truth)


def mixed_without_acc(data_source, solution_str, ground_truth, extra_info=None, **kwargs):
    if data_source == "math":
        return dict_without_acc(data_source, solution_str, ground_truth)
    return float_in_unit_range(data_source, solution_str, ground_truth)


async def async_dict_with_acc(data_source, solution_str, ground_truth, extra_info=None, **kwargs):
    return dict_with_acc(data_source, solution_str, ground_truth)


def raises(data_source, solution_str, ground_truth, extra_info=None, **kwargs):
    raise RuntimeError("needs a sandbox")
"""


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Training rows of two data sources (``math``, ``puzzle``) and the reward file."""
    root = tmp_path_factory.mktemp("reward_shapes")
    rows = arithmetic_rows(8, "train")
    for i, row in enumerate(rows):
        row["data_source"] = "math" if i % 2 else "puzzle"
    train = root / "train.parquet"
    pd.DataFrame(rows).to_parquet(train)
    reward = root / "rewards.py"
    reward.write_text(REWARDS)
    return train, reward


def config_with(files, function: str, *extra: str):
    train, reward = files
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        return compose(
            CONFIG_NAME,
            overrides=[
                "gain.enable=True",
                f"data.train_files={train}",
                "data.train_batch_size=4",
                "data.dataloader_num_workers=0",
                f"reward.custom_reward_function.path={reward}",
                f"reward.custom_reward_function.name={function}",
                *extra,
            ],
        )


@pytest.mark.parametrize(
    ("function", "extra", "message"),
    [
        (
            "dict_without_acc",
            [],
            r"data_source (math|puzzle) returns a dict without `acc` \(keys \['pred', 'score'\]\)",
        ),
        ("float_plus_minus_one", [], r"returns the float -1.0, outside \[0, 1\].*gain.acc_source=threshold"),
        ("mixed_without_acc", [], r"data_source math returns a dict without `acc`"),
        ("mixed", ["trainer.use_v1=false"], r"different extra keys \(math: \['acc', 'score'\]; puzzle: \['acc'\]\)"),
    ],
)
def test_a_reward_the_accuracy_cannot_be_read_from_is_refused_before_the_prepass(files, function, extra, message):
    with pytest.raises(GainConfigError, match=message):
        check_gain_config(config_with(files, function, *extra))


@pytest.mark.parametrize(
    ("function", "extra"),
    [
        ("dict_with_acc", []),
        ("async_dict_with_acc", []),
        ("float_in_unit_range", []),
        ("mixed", []),  # V1 reads each rollout's own extra info: a dict with acc and a float in [0, 1] mix fine
        ("dict_without_acc", ["gain.acc_source=threshold"]),
        ("float_plus_minus_one", ["gain.acc_source=threshold", "gain.acc_threshold=0"]),
    ],
)
def test_rewards_the_accuracy_can_be_read_from_pass(files, function, extra):
    check_gain_config(config_with(files, function, *extra))


def test_a_reward_that_fails_on_the_probe_is_left_to_step_1(files, capsys):
    check_gain_config(config_with(files, "raises"))
    assert "checked at step 1" in capsys.readouterr().out


def test_acc_is_read_from_the_extra_info_or_a_colocated_reward_models_fields():
    infos = [{"acc": 1.0, "score": 1.0}, {"score": 0.3}, {}, None]
    assert rollout_acc(infos) == [1.0, None, None, None]
    assert rollout_acc(infos, top_level_acc=[0.0, 0.5, 1.0, 0.0]) == [1.0, 0.5, 1.0, 0.0]


def test_step_accuracy_refusals_name_the_data_source():
    settings = GainSettings(acc_source="acc")
    with pytest.raises(RewardShapeError, match=r"1 of 3 rollouts lack \(data_source code\)"):
        correctness_from_rewards(settings, [1.0, None, 0.0], np.zeros(3), ["math", "code", "math"])
    with pytest.raises(RewardShapeError, match=r"got e.g. 5.0 \(data_source math\)"):
        correctness_from_rewards(settings, [1.0, 5.0], np.zeros(2), ["code", "math"])
    with pytest.raises(RewardShapeError, match=r"got e.g. 'yes'"):
        correctness_from_rewards(settings, ["yes"], np.zeros(1))
    partial = correctness_from_rewards(settings, [0.25, True, 0], np.zeros(3))
    np.testing.assert_array_equal(partial, [0.25, 1.0, 0.0])  # partial credit counts as that fraction


def test_a_step_reads_a_colocated_reward_models_acc_and_ignores_padding_rows():
    cur = TrainerCurriculum(GainSettings(sigma_fraction=None, n_fraction=None), num_samples=8, batch_size=2)
    cur.attach_scores(PrepassScores(keys=np.arange(8.0), term_means=None))
    acc = rollout_acc([{}] * 5, top_level_acc=[1.0, 0.0, 1.0, 1.0, None])  # the last row: V1 padding
    metrics = cur.finish_step(
        1,
        ["a", "a", "b", "b", "pad"],
        [{"gain_position": p} for p in (0, 0, 1, 1, 1)],
        acc,
        np.zeros(5),
        None,
        np.array([False, False, False, False, True]),
        ["math"] * 5,
    )
    assert metrics["gain/step_acc"] == pytest.approx(0.75)  # (0.5 + 1.0) / 2 over the two prompts
