"""verl-gain: GAIN-RL (angle-concentration curriculum, arXiv 2506.02281) for verl's GRPO trainer."""

__version__ = "0.1.0"
