"""A GAIN actor worker that counts how often its engine moves the model between host and device (for the offload
test in ``test_worker.py``): the real worker and engine, with the engine's ``to`` wrapped by a counter."""

from __future__ import annotations

from typing import Any

from verl_gain.trainer.compat import Dispatch, register
from verl_gain.trainer.worker import GainActorRolloutRefWorker


class ModelMoveCountingWorker(GainActorRolloutRefWorker):
    """``GainActorRolloutRefWorker`` plus registered methods to start counting the engine's model moves
    (``engine.to(..., model=True)``: a load onto the device or an offload) and to read the count."""

    model_moves_counted: int = 0

    @register(dispatch_mode=Dispatch.ONE_TO_ALL)
    def is_param_offload_enabled(self) -> bool:
        return bool(self.actor.engine.is_param_offload_enabled)

    @register(dispatch_mode=Dispatch.ONE_TO_ALL)
    def start_counting_model_moves(self) -> None:
        engine = self.actor.engine
        move = type(engine).to

        def counted_to(device: str, model: bool = True, optimizer: bool = True, grad: bool = True) -> Any:
            self.model_moves_counted += int(model)
            return move(engine, device, model=model, optimizer=optimizer, grad=grad)

        self.model_moves_counted = 0
        engine.to = counted_to

    @register(dispatch_mode=Dispatch.ONE_TO_ALL)
    def model_moves(self) -> int:
        return self.model_moves_counted
