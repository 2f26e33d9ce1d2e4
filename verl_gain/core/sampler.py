"""``GainSampler``: a resumable torch ``Sampler[int]`` whose batches come from the GAIN window.

Use it with ``torchdata.stateful_dataloader.StatefulDataLoader(sampler=..., batch_size=B, num_workers=0,
drop_last=True)``. The sampler draws a whole batch from the controller the moment the loader asks for that batch's
first index, so a window update made between two steps shapes the next batch (with ``num_workers > 0`` workers would
prefetch batches drawn from a stale window; the trainer refuses that configuration).

Resuming: torchdata stores ``sampler.state_dict()`` in the loader state and, on ``load_state_dict``, calls
``sampler.load_state_dict(...)`` then ``iter(sampler)``. The state holds the controller (mu, generator, step),
the number of batches already produced in this epoch and the undelivered rest of a partly read batch, so the resumed
loader continues exactly where the saved one stopped, without replaying draws.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from torch.utils.data import Sampler

from verl_gain.core.controller import GainController


class GainSampler(Sampler[int]):
    """Dataset positions drawn batch by batch from a ``GainController``'s window.

    Args:
        controller: the curriculum (owns the order, mu and the random generator), or None to ``attach()`` later.
        batch_size: prompts per batch; must equal the loader's ``batch_size``.
        batches_per_epoch: batches per epoch; defaults to ``N // batch_size`` (one pass's worth, as a
            ``drop_last=True`` loader over the whole dataset would give).
        num_samples: dataset size, needed only when the controller comes later.
    """

    def __init__(
        self,
        controller: GainController | None,
        batch_size: int,
        batches_per_epoch: int | None = None,
        num_samples: int | None = None,
    ):
        super().__init__()
        if controller is None and num_samples is None:
            raise ValueError("give the controller, or num_samples and attach() the controller later")
        self.num_samples = controller.num_samples if controller is not None else int(num_samples)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if batch_size > self.num_samples:
            raise ValueError(
                f"batch size {batch_size} is larger than the dataset ({self.num_samples} prompts): "
                "lower data.train_batch_size or use a larger training set"
            )
        self.controller: GainController | None = None
        self.batch_size = int(batch_size)
        self.batches_per_epoch = (
            self.num_samples // self.batch_size if batches_per_epoch is None else int(batches_per_epoch)
        )
        if self.batches_per_epoch < 1:
            raise ValueError(f"batches_per_epoch must be >= 1, got {self.batches_per_epoch}")
        self.batches_done = 0  # batches started in the current epoch
        self.pending: list[int] = []  # undelivered positions of the current batch
        self._resume = False  # the next __iter__ continues the restored epoch instead of starting one
        if controller is not None:
            self.attach(controller)

    def attach(self, controller: GainController) -> None:
        """Give the sampler its controller (a trainer builds its dataloader before the scores exist)."""
        if controller.num_samples != self.num_samples:
            raise ValueError(
                f"the scores cover {controller.num_samples} prompts but the training set has {self.num_samples}: "
                "score the same data the trainer loads"
            )
        self.controller = controller

    def _require_controller(self) -> GainController:
        if self.controller is None:
            raise RuntimeError("GainSampler has no controller yet: attach() it before drawing or restoring")
        return self.controller

    def __len__(self) -> int:
        """Positions per epoch (a trainer counts ``len(sampler) // batch_size`` steps per epoch)."""
        return self.batches_per_epoch * self.batch_size

    def __iter__(self) -> Iterator[int]:
        # A generator: nothing runs until the first next(), so the extra iter() torchdata makes while restoring
        # consumes no draw.
        if self._resume:
            self._resume = False
        else:
            self.batches_done, self.pending = 0, []
        while True:
            if not self.pending:
                if self.batches_done >= self.batches_per_epoch:
                    return
                self.pending = self._require_controller().sample(self.batch_size).tolist()
                self.batches_done += 1
            yield self.pending.pop(0)

    def state_dict(self) -> dict[str, Any]:
        return {
            "controller": self._require_controller().state_dict(),
            "batch_size": self.batch_size,
            "batches_done": self.batches_done,
            "pending": list(self.pending),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["batch_size"] != self.batch_size:
            raise ValueError(
                f"the saved sampler drew batches of {state['batch_size']}, this one draws {self.batch_size}: "
                "resume with the same data.train_batch_size"
            )
        self._require_controller().load_state_dict(state["controller"])
        self.batches_done = int(state["batches_done"])
        self.pending = [int(p) for p in state["pending"]]
        self._resume = True
