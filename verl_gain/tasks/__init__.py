"""Tasks generated in code (no data files, no network), in verl's RL format.

- ``arithmetic``: the embedded task of ``make demo`` (five difficulty levels, a last-number reward).
- ``word_problems``: GSM8K-style word problems to try ``verl-gain score`` and ``inspect`` on.
"""
