"""``GainRLHFDataset``: verl's ``RLHFDataset`` that tells each row where it sits in the training set.

verl drops the top-level ``index`` on the way to the reward and the trainer, and reorders and repeats rows, so a
finished step cannot be mapped back to the GAIN order unless the position travels inside ``extra_info``.
``python -m verl_gain.main gain.enable=True`` selects this class through verl's own ``data.custom_cls`` option.
"""

from __future__ import annotations

from typing import Any

from verl_gain.trainer.compat import RLHFDataset
from verl_gain.trainer.curriculum import POSITION_KEY


class GainRLHFDataset(RLHFDataset):
    """``RLHFDataset`` plus ``extra_info["gain_position"]``.

    Overrides ``__getitem__`` only (calls verl's and adds one key), so everything else, including the long-prompt
    filter, behaves exactly as in verl: positions are those of the filtered dataset, the one the sampler draws from.
    """

    def __getitem__(self, item: int) -> dict[str, Any]:
        row = super().__getitem__(item)
        row["extra_info"] = {**row["extra_info"], POSITION_KEY: int(item)}
        return row

    def prompt_messages(self) -> list[Any]:
        """The chat messages of every row, in dataset order (what the pre-pass scores)."""
        return list(self.dataframe[self.prompt_key])
