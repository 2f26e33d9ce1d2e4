"""Checkpoint round trip of the GAIN curriculum as verl's trainers save and restore it, in a fresh process.

The pieces are the real ones: verl's ``RLHFDataset`` (as ``GainRLHFDataset``) and ``collate_fn``, the train loader
the GAIN trainers build, the curriculum's state file and the loader state verl writes as ``data.pt``. Restoring
follows each trainer's rule: V1 always reloads ``data.pt``; the legacy trainer skips it at an epoch boundary (then
only ``gain_state.pt`` carries the curriculum). Window updates are a fixed function of the batch, so the batches
after the checkpoint must be identical to an uninterrupted run's.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_dir

import verl_gain
from tests.e2e import REPO_ROOT, arithmetic_rows
from tests.tiny import make_tokenizer
from verl_gain.core.angles import TermMeans
from verl_gain.trainer.curriculum import PrepassScores, build_curriculum
from verl_gain.trainer.dataset import POSITION_KEY, GainRLHFDataset
from verl_gain.trainer.trainers import _build_train_dataloader

ROWS, BATCH = 24, 4
STEPS_PER_EPOCH = ROWS // BATCH
AFTER_RESUME = 10
CONFIG_DIR = Path(verl_gain.__file__).parent / "trainer" / "config"


def make_trainer(root: Path, seed: int):
    """What a GAIN trainer holds after ``_init_dataloader``: config, dataset, curriculum, train loader."""
    train_file = root / "train.parquet"
    if not train_file.exists():
        pd.DataFrame(arithmetic_rows(ROWS, "train")).to_parquet(train_file)
    overrides = [
        "gain.enable=True",
        "gain.sigma=2.0",
        "gain.n=2.0",
        "gain.adj_max=4.0",
        "gain.sigma_fraction=null",
        "gain.n_fraction=null",
        "gain.adj_max_fraction=null",
        f"gain.seed={seed}",
        f"gain.trace_path={root / 'trace.jsonl'}",
        f"data.train_files={train_file}",
        f"data.train_batch_size={BATCH}",
        "data.dataloader_num_workers=0",
        f"trainer.default_local_dir={root}",
    ]
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        config = compose("verl_gain_trainer", overrides=overrides)
    dataset = GainRLHFDataset(str(train_file), make_tokenizer("chatml"), config.data)
    curriculum = build_curriculum(config, len(dataset))
    keys = np.random.default_rng(0).normal(size=ROWS)  # the same scores in every process
    curriculum.attach_scores(PrepassScores(keys=keys, term_means=TermMeans(0.5, 0.5)))
    trainer = SimpleNamespace(config=config, train_dataset=dataset, gain=curriculum)
    trainer.train_dataloader = _build_train_dataloader(trainer, curriculum.sampler)
    trainer.iterator = None
    return trainer


def next_batch(trainer) -> list[int]:
    """One step's prompts, fetched as V1's ``_fetch_one_gen_batch`` does (a new epoch when the loader runs out)."""
    try:
        if trainer.iterator is None:
            trainer.iterator = iter(trainer.train_dataloader)
        batch = next(trainer.iterator)
    except StopIteration:
        trainer.iterator = iter(trainer.train_dataloader)
        batch = next(trainer.iterator)
    return [int(info[POSITION_KEY]) for info in batch["extra_info"]]


def train_steps(trainer, count: int) -> list[list[int]]:
    """Draw ``count`` batches, each followed by a window update that is a fixed function of the batch."""
    drawn = []
    for _ in range(count):
        positions = next_batch(trainer)
        drawn.append(positions)
        trainer.gain.controller.update(acc=(sum(positions) % 5) / 4, angle=0.1)
    return drawn


def save_checkpoint(trainer, step: int) -> Path:
    """What the GAIN trainers' ``_save_checkpoint`` writes: the curriculum state, then verl's ``data.pt``."""
    folder = Path(trainer.config.trainer.default_local_dir) / f"global_step_{step}"
    trainer.gain.save(folder)
    torch.save(trainer.train_dataloader.state_dict(), folder / "data.pt")
    return folder


def resume_and_continue(root: str, step: int, rule: str) -> list[list[int]]:
    """Entry point of the fresh process: rebuild with another seed, restore by ``rule``, draw AFTER_RESUME batches."""
    trainer = make_trainer(Path(root), seed=999)
    folder = Path(root) / f"global_step_{step}"
    at_epoch_boundary = step % STEPS_PER_EPOCH == 0
    if rule == "v1" or not at_epoch_boundary:  # legacy _load_checkpoint skips data.pt at an epoch boundary
        trainer.train_dataloader.load_state_dict(torch.load(folder / "data.pt", weights_only=False))
    assert trainer.gain.load(folder, step)
    return train_steps(trainer, AFTER_RESUME)


@pytest.mark.parametrize("rule", ["v1", "legacy"])
@pytest.mark.parametrize("step", [4, STEPS_PER_EPOCH], ids=["mid-epoch", "epoch-boundary"])
def test_resumed_curriculum_draws_the_uninterrupted_batches(tmp_path, rule, step):
    trainer = make_trainer(tmp_path, seed=7)
    before = train_steps(trainer, step)
    save_checkpoint(trainer, step)
    expected = train_steps(trainer, AFTER_RESUME)
    assert len({p for batch in before + expected for p in batch}) > BATCH  # the window moved over the data

    code = (
        "import json; from tests.trainer.test_checkpoint_round_trip import resume_and_continue; "
        f"print(json.dumps(resume_and_continue({str(tmp_path)!r}, {step}, {rule!r})))"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    resumed = json.loads(proc.stdout.strip().splitlines()[-1])
    assert resumed == expected
