"""An ``HFRolloutServer`` in the test process, on a tiny model (shared by the rollout and decoder tests)."""

from verl.workers.config import HFModelConfig, RolloutConfig

from verl_gain.cpu.rollout import HFRolloutServer

PROMPT_LENGTH = 64


def make_server(
    model_config: HFModelConfig, response_length: int, dtype: str = "float32", **engine_options
) -> HFRolloutServer:
    """A server with the model's weights from disk (``load_format=auto``) and ``engine_kwargs.hf`` options."""
    config = RolloutConfig(
        name="hf",
        dtype=dtype,
        prompt_length=PROMPT_LENGTH,
        response_length=response_length,
        load_format="auto",
        engine_kwargs={"hf": engine_options},
    )
    return HFRolloutServer(config, model_config, replica_rank=0)
