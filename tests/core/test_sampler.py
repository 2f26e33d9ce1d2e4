"""GainSampler with torchdata's StatefulDataLoader: epoch length, lazy draws, exact resume in a fresh process."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torchdata.stateful_dataloader import StatefulDataLoader

from verl_gain.core.controller import GainConfig, GainController
from verl_gain.core.sampler import GainSampler

REPO = Path(__file__).resolve().parents[2]
N, BATCH = 96, 8  # 12 batches per epoch: 20 batches after a resume cross epoch boundaries


def make_loader(seed: int = 5) -> tuple[StatefulDataLoader, GainController]:
    scores = np.random.default_rng(0).normal(size=N)
    controller = GainController(scores, GainConfig(sigma=6.0, n=4.0, adj_max=10.0, seed=seed))
    sampler = GainSampler(controller, BATCH)
    loader = StatefulDataLoader(list(range(N)), batch_size=BATCH, sampler=sampler, num_workers=0, drop_last=True)
    return loader, controller


def fake_step(batch: torch.Tensor, controller: GainController) -> None:
    """What a trainer does after a step: move the window from the step's accuracy (a function of the batch)."""
    controller.update(acc=float(batch.float().mean()) / N, angle=0.1)


def run_batches(loader, controller, count: int, iterator=None):
    out = []
    while len(out) < count:
        if iterator is None:
            iterator = iter(loader)
        try:
            batch = next(iterator)
        except StopIteration:
            iterator = None
            continue
        out.append(batch.tolist())
        fake_step(batch, controller)
    return out, iterator


def resume_in_this_process(state_path: str, count: int) -> list[list[int]]:
    """Entry point of the fresh process: restore the loader and return its next ``count`` batches."""
    loader, controller = make_loader(seed=12345)  # a different seed: everything must come from the state
    loader.load_state_dict(torch.load(state_path, weights_only=True))
    return run_batches(loader, controller, count)[0]


def test_len_counts_whole_batches():
    loader, _ = make_loader()
    assert len(loader.sampler) == (N // BATCH) * BATCH
    assert len(loader) == N // BATCH
    assert sum(1 for _ in loader) == N // BATCH


def test_batches_are_drawn_lazily_from_the_current_window():
    loader, controller = make_loader()
    it = iter(loader)
    next(it)
    controller.mu = 80.0  # a window move between steps must shape the very next batch
    ranks = controller.rank_of[next(it).numpy()]
    assert ranks.min() > 80 - 8 * controller.sigma


@pytest.mark.parametrize("k", [5, 12])  # mid-epoch and exactly at an epoch boundary
def test_resume_in_fresh_process_yields_the_same_batches(tmp_path, k):
    loader, controller = make_loader()
    first, it = run_batches(loader, controller, k)
    state_path = tmp_path / "loader.pt"
    torch.save(loader.state_dict(), state_path)
    expected, _ = run_batches(loader, controller, 20, it)

    code = (
        "import json, sys; from tests.core.test_sampler import resume_in_this_process; "
        f"print(json.dumps(resume_in_this_process({str(state_path)!r}, 20)))"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    resumed = json.loads(proc.stdout.strip().splitlines()[-1])
    assert resumed == expected
    assert len(first) == k


def test_state_from_another_batch_size_is_refused():
    loader, controller = make_loader()
    state = GainSampler(controller, 4).state_dict()
    with pytest.raises(ValueError, match="same data.train_batch_size"):
        loader.sampler.load_state_dict(state)


def test_batch_larger_than_dataset_is_refused():
    with pytest.raises(ValueError, match="larger than the dataset"):
        GainSampler(GainController(np.zeros(4)), 8)


def test_controller_can_be_attached_after_the_loader_is_built():
    sampler = GainSampler(None, BATCH, num_samples=N)
    loader = StatefulDataLoader(list(range(N)), batch_size=BATCH, sampler=sampler, num_workers=0, drop_last=True)
    assert len(loader) == N // BATCH  # the trainer counts steps before the scores exist
    with pytest.raises(RuntimeError, match="attach"):
        next(iter(loader))
    with pytest.raises(ValueError, match="score the same data"):
        sampler.attach(GainController(np.zeros(N + 1)))
    sampler.attach(GainController(np.zeros(N)))
    assert len(next(iter(loader))) == BATCH
