"""``verl-gain eval``: pass@1 of checkpoints on the recipes' benchmark files, scored by the training rewards.

- ``benchmarks``: load benchmark files, generate, score with ``verl_gain.rewards.auto``, summarise, write tables.
- ``checkpoints``: the Hugging Face folder behind a checkpoint path (verl checkpoints merged first).
"""
