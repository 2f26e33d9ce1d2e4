"""The one error type the scoring tools raise for bad input: the CLI prints its message as a single line."""

from __future__ import annotations


class ScoringInputError(ValueError):
    """Bad input to scoring (data, model, capture point, scores file): the message says what is wrong and the fix."""
