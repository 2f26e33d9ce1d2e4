"""A rerun with the same ``rollout.seed`` reproduces rollouts, rewards and metrics; another seed does not.

Three short runs of ``python -m verl_gain.main`` (V1 trainer, 2 FSDP workers, one hf rollout server each, so that
requests are routed and batched by timing): seed 1, then seed 1 again next to seed 2. Rollouts are read from verl's
own dump (``trainer.rollout_data_dir``), metrics from its file logger.
"""

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.e2e import (
    SERVER_LOG_PROB_METRICS,
    assert_same_metrics,
    base_overrides,
    dumped_rollouts,
    make_fixture,
    reproducible_metrics,
    run_main,
)

STEPS = 2


def run_with_seed(fixture, root: Path, seed: int) -> tuple[list[dict], dict[int, dict]]:
    result = run_main(
        [
            *base_overrides(fixture, total_steps=STEPS),
            "actor_rollout_ref.actor.use_kl_loss=false",  # no reference model: nothing it would prove here
            "trainer.save_freq=-1",
            "trainer.resume_mode=disable",
            f"actor_rollout_ref.rollout.seed={seed}",
            f"trainer.rollout_data_dir={root / 'rollouts'}",
        ],
        metrics_path=root / "metrics.jsonl",
    ).check()
    return dumped_rollouts(root / "rollouts"), reproducible_metrics(result)


@pytest.mark.e2e(launches=3)
def test_same_seed_reproduces_rollouts_and_metrics_and_another_seed_does_not(tmp_path):
    fixture = make_fixture(tmp_path / "fixture")
    first_rollouts, first_metrics = run_with_seed(fixture, tmp_path / "first", seed=1)
    # The rerun and the other seed side by side: cheaper on wall time, and the rerun's requests meet other timing.
    with ThreadPoolExecutor(max_workers=2) as pool:
        again = pool.submit(run_with_seed, fixture, tmp_path / "again", 1)
        other = pool.submit(run_with_seed, fixture, tmp_path / "other", 2)
        (again_rollouts, again_metrics), (other_rollouts, other_metrics) = again.result(), other.result()

    # 4 prompts x 4 responses per step; the trained model samples step 2, so equal rollouts there mean equal updates.
    assert len(first_rollouts) == STEPS * 4 * 4
    assert sorted(first_metrics) == list(range(1, STEPS + 1))
    assert len({r["output"] for r in first_rollouts}) > len(first_rollouts) // 2  # the responses of a group differ
    # Bit for bit: every response and score in the same order, every metric to the last bit.
    assert again_rollouts == first_rollouts
    assert any(k.startswith(SERVER_LOG_PROB_METRICS) for k in first_metrics[STEPS]), "log-prob metrics missing"
    assert_same_metrics(first_metrics, again_metrics)
    assert "actor/pg_loss" in first_metrics[STEPS] and "critic/score/mean" in first_metrics[STEPS]

    # Another seed: other responses to the same prompts, so other rewards and losses.
    assert [r["input"] for r in other_rollouts] == [r["input"] for r in first_rollouts]
    assert sum(a["output"] != b["output"] for a, b in zip(other_rollouts, first_rollouts)) > len(first_rollouts) // 2
    for name in ("critic/score/mean", "actor/pg_loss"):
        assert other_metrics[1][name] != first_metrics[1][name], name
