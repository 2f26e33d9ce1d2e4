"""The Hugging Face model folder behind a checkpoint path given to ``verl-gain eval``.

A checkpoint is a Hugging Face model folder, a Hugging Face hub id (its snapshot in the local cache, downloaded when
the hub is reachable: ``verl_gain.model_sources``), or a verl checkpoint folder (``global_step_N`` or its
``actor``): its ``huggingface`` folder is used when it holds weights, else verl's model merger
(``python -m verl.model_merger merge``) writes a merged Hugging Face folder next to it first.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

MERGED_FOLDER = "merged_hf"
# verl's FSDP checkpoints hold one shard per rank under this name pattern (verl/utils/checkpoint).
FSDP_SHARD_GLOB = "model_world_size_*_rank_*.pt"
WEIGHT_GLOBS = ("*.safetensors", "pytorch_model*.bin")


class CheckpointError(ValueError):
    """A checkpoint that cannot be turned into a Hugging Face model folder (one line: which, why, what to do)."""


def _has_weights(folder: Path) -> bool:
    return (folder / "config.json").is_file() and any(next(folder.glob(g), None) for g in WEIGHT_GLOBS)


def resolve_checkpoint(path: str | Path) -> Path:
    """A Hugging Face model folder for ``path`` (an HF folder, a hub id, or a verl ``global_step_N``/``actor``
    folder)."""
    from verl_gain.model_sources import is_hub_id, resolve_model

    if is_hub_id(path):
        return resolve_model(path)
    path = Path(path).expanduser()
    if _has_weights(path):
        return path
    actor = path / "actor" if (path / "actor").is_dir() else path
    for candidate in (actor / "huggingface", actor / MERGED_FOLDER):
        if _has_weights(candidate):
            return candidate
    if next(actor.glob(FSDP_SHARD_GLOB), None) is not None:
        target = actor / MERGED_FOLDER
        print(f"[verl-gain eval] merging the FSDP checkpoint {actor} into {target} (verl model merger)", flush=True)
        command = [sys.executable, "-m", "verl.model_merger", "merge", "--backend", "fsdp"]
        try:
            done = subprocess.run(
                [*command, "--local_dir", str(actor), "--target_dir", str(target)], capture_output=True, text=True
            )
        except BaseException:  # Ctrl-C mid-merge: no half-merged folder is left to be taken for a model later
            shutil.rmtree(target, ignore_errors=True)
            raise
        if done.returncode != 0 or not _has_weights(target):
            shutil.rmtree(target, ignore_errors=True)
            said = [line.strip() for line in done.stderr.splitlines() if line.strip()]
            raise CheckpointError(
                f"verl's model merger could not merge {actor} (exit status {done.returncode}"
                f"{': ' + said[-1][:200] if said else ''}): check that the checkpoint is complete (every rank's "
                "shard and the huggingface/ config), or merge it with python -m verl.model_merger merge yourself "
                "and pass the merged folder"
            )
        return target
    if not path.exists():
        raise FileNotFoundError(
            f"checkpoint {path} does not exist: pass a Hugging Face model folder or a verl checkpoint"
        )
    raise FileNotFoundError(
        f"{path} is neither a Hugging Face model folder (config.json + weights), a hub id, nor a verl checkpoint "
        f"(global_step_N/actor with {FSDP_SHARD_GLOB} or huggingface/ weights)"
    )
