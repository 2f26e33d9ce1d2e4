"""The hf rollout server: batched generation, log-probs against a plain forward, verified weight updates.

The server class runs in-process under asyncio (as Ray runs it in its actor, minus the process); the full path
through Ray, the adapter and verl's trainer is covered by ``test_e2e.py``.
"""

import asyncio

import pytest
import torch
from verl.workers.config import HFModelConfig, RolloutConfig

from tests.tiny import make_tiny_model_dir
from verl_gain.cpu.rollout import (
    STOP_ABORTED,
    STOP_COMPLETED,
    ChosenTokenLogProbs,
    HFRolloutOptions,
    HFRolloutServer,
    WeightSyncError,
    tensor_digest,
)

FP32_AGREEMENT = 1e-5
"""fp32 log-probs of batched, KV-cached generation vs one full forward: observed ~5e-7."""
SAMPLING = {"temperature": 1.0, "top_p": 1.0, "top_k": -1, "logprobs": True}
RESPONSE_LENGTH = 12


@pytest.fixture(scope="module")
def model_config(tmp_path_factory):
    path = make_tiny_model_dir(tmp_path_factory.mktemp("rollout") / "model", template="chatml")
    return HFModelConfig(path=str(path), override_config={"attn_implementation": "sdpa"})


def make_server(model_config, **engine_options) -> HFRolloutServer:
    config = RolloutConfig(
        name="hf",
        dtype="float32",
        prompt_length=64,
        response_length=RESPONSE_LENGTH,
        load_format="auto",
        engine_kwargs={"hf": engine_options},
    )
    return HFRolloutServer(config, model_config, replica_rank=0)


def prompts(model_config, count: int) -> list[list[int]]:
    tokenizer = model_config.tokenizer
    return [tokenizer.encode("x" * (3 * index + 1) + f" {index}?") for index in range(count)]


async def generate_all(server, prompt_list, sampling=SAMPLING):
    return await asyncio.gather(
        *[server.generate(prompt, dict(sampling), request_id=str(index)) for index, prompt in enumerate(prompt_list)]
    )


def forward_log_probs(model, prompt: list[int], response: list[int]) -> torch.Tensor:
    """log pi(y_t | x, y_<t) [T] from one unbatched forward over prompt + response."""
    ids = torch.tensor([prompt + response])  # [1, P + T]
    with torch.no_grad():
        log_probs = torch.log_softmax(model(ids).logits[0].float(), dim=-1)  # [P + T, V]
    return log_probs[len(prompt) - 1 : -1].gather(1, torch.tensor(response)[:, None])[:, 0]  # [T]


def test_concurrent_requests_are_batched_and_log_probs_match_a_forward(model_config):
    server = make_server(model_config)
    prompt_list = prompts(model_config, 6)  # different lengths: left padding inside the batch
    outputs = asyncio.run(generate_all(server, prompt_list))
    assert server.stats()["batches_served"] == 1
    assert server.stats()["requests_served"] == 6
    for prompt, output in zip(prompt_list, outputs):
        assert output.stop_reason == STOP_COMPLETED
        assert 1 <= len(output.token_ids) <= RESPONSE_LENGTH
        assert len(output.log_probs) == len(output.token_ids)
        expected = forward_log_probs(server.model, prompt, output.token_ids)
        assert torch.allclose(torch.tensor(output.log_probs), expected, atol=FP32_AGREEMENT, rtol=0)


def test_requests_trickling_in_join_one_batch(model_config):
    server = make_server(model_config, batch_wait_ms=100)
    gap_s = 0.02  # the agent loop's requests arrive a few ms apart; each gap is shorter than the quiet period

    async def trickle():
        tasks = []
        for index, prompt in enumerate(prompts(model_config, 4)):
            tasks.append(asyncio.create_task(server.generate(prompt, dict(SAMPLING), request_id=str(index))))
            await asyncio.sleep(gap_s)
        return await asyncio.gather(*tasks)

    assert len(asyncio.run(trickle())) == 4
    assert server.stats()["batches_served"] == 1


def test_abort_answers_queued_requests_and_holds_new_ones_until_resumed(model_config):
    server = make_server(model_config, batch_wait_ms=500, max_batch_wait_ms=1000)
    prompt_list = prompts(model_config, 3)

    async def scenario():
        queued = [
            asyncio.create_task(server.generate(p, dict(SAMPLING), request_id=str(i)))
            for i, p in enumerate(prompt_list[:2])
        ]
        await asyncio.sleep(0.05)  # both queued, the batch still collecting
        report = await server.abort_all_requests()
        aborted = await asyncio.gather(*queued)
        held = asyncio.create_task(server.generate(prompt_list[2], dict(SAMPLING), request_id="2"))
        await asyncio.sleep(0.05)
        held_while_paused = not held.done()
        await server.resume_generation()
        resumed = await held
        await server.wait_for_requests_to_drain()
        return report, aborted, held_while_paused, resumed

    report, aborted, held_while_paused, resumed = asyncio.run(scenario())
    assert report["aborted_count"] == 2
    assert all(o.stop_reason == STOP_ABORTED and o.token_ids == [] for o in aborted)
    assert held_while_paused
    assert resumed.stop_reason == STOP_COMPLETED and len(resumed.token_ids) >= 1
    assert server.stats()["requests_served"] == 1


def test_max_batch_size_splits_the_queue(model_config):
    server = make_server(model_config, max_batch_size=2)
    outputs = asyncio.run(generate_all(server, prompts(model_config, 5)))
    assert len(outputs) == 5
    assert server.stats()["batches_served"] == 3


def test_greedy_generation_is_deterministic_and_stops_at_eos(model_config):
    server = make_server(model_config)
    eos = model_config.tokenizer.eos_token_id
    greedy = {"temperature": 0, "top_p": 1.0, "top_k": -1, "logprobs": False}
    first = asyncio.run(generate_all(server, prompts(model_config, 3), greedy))
    second = asyncio.run(generate_all(server, prompts(model_config, 3), greedy))
    assert [o.token_ids for o in first] == [o.token_ids for o in second]
    for output in first:
        assert output.log_probs is None
        assert eos not in output.token_ids[:-1]  # an end-of-sequence token can only be the last one


def test_temperature_log_probs_are_of_the_scaled_distribution(model_config):
    server = make_server(model_config)
    prompt = prompts(model_config, 1)[0]
    temperature = 0.7
    (output,) = asyncio.run(generate_all(server, [prompt], {**SAMPLING, "temperature": temperature}))
    ids = torch.tensor([prompt + output.token_ids])
    with torch.no_grad():
        log_probs = torch.log_softmax(server.model(ids).logits[0].float() / temperature, dim=-1)
    expected = log_probs[len(prompt) - 1 : -1].gather(1, torch.tensor(output.token_ids)[:, None])[:, 0]
    assert torch.allclose(torch.tensor(output.log_probs), expected, atol=FP32_AGREEMENT, rtol=0)


def test_update_weights_replaces_every_parameter_and_verifies_it(model_config):
    server = make_server(model_config)
    torch.manual_seed(1)
    new_weights = {name: torch.randn_like(tensor) for name, tensor in server.model.state_dict().items()}
    digests = {name: tensor_digest(tensor) for name, tensor in new_weights.items()}
    report = server.update_weights(new_weights, digests, global_steps=7)
    assert report["num_tensors"] == len(new_weights)
    for name, tensor in server.model.state_dict().items():
        assert torch.equal(tensor, new_weights[name])
    (output,) = asyncio.run(generate_all(server, prompts(model_config, 1)))
    assert output.extra_fields["global_steps"] == 7
    assert server.stats()["weight_updates"] == 1


def test_update_weights_refuses_a_digest_mismatch(model_config):
    server = make_server(model_config)
    weights = {name: tensor.clone() for name, tensor in server.model.state_dict().items()}
    digests = {name: tensor_digest(tensor) for name, tensor in weights.items()}
    name = next(iter(digests))
    digests[name] ^= 1
    with pytest.raises(WeightSyncError, match="differ from the trainer"):
        server.update_weights(weights, digests)


def test_update_weights_refuses_missing_and_unknown_names(model_config):
    server = make_server(model_config)
    weights = {name: tensor.clone() for name, tensor in server.model.state_dict().items()}
    dropped = weights.pop(next(iter(weights)))
    with pytest.raises(WeightSyncError, match="missing"):
        server.update_weights(weights, None)
    weights["not.a.parameter"] = dropped
    with pytest.raises(WeightSyncError, match="unknown"):
        server.update_weights(weights, None)


def test_dummy_load_format_starts_from_random_weights(model_config):
    loaded = make_server(model_config)
    config = RolloutConfig(name="hf", dtype="float32", prompt_length=64, response_length=8, load_format="dummy")
    dummy = HFRolloutServer(config, model_config, replica_rank=0)
    names = list(loaded.model.state_dict())
    assert names == list(dummy.model.state_dict())
    assert any(not torch.equal(loaded.model.state_dict()[n], dummy.model.state_dict()[n]) for n in names)


def test_multimodal_requests_are_refused(model_config):
    server = make_server(model_config)
    with pytest.raises(NotImplementedError, match="text-only"):
        asyncio.run(server.generate([1, 2, 3], dict(SAMPLING), request_id="0", image_data=[object()]))


def test_recorder_gathers_each_sampled_token():
    recorder = ChosenTokenLogProbs(temperature=2.0)
    logits = [torch.tensor([[0.0, 1.0, 2.0]]), torch.tensor([[3.0, 0.0, 0.0]])]  # 2 steps x [B=1, V=3]
    sequences = torch.tensor([[5]])  # the prompt
    for step_logits, token in zip(logits, [2, 0]):
        recorder(sequences, step_logits)
        sequences = torch.cat([sequences, torch.tensor([[token]])], dim=1)
    got = recorder.finish(sequences[:, 1:])  # [1, 2]
    expected = torch.stack([torch.log_softmax(logits[0][0] / 2.0, -1)[2], torch.log_softmax(logits[1][0] / 2.0, -1)[0]])
    assert torch.allclose(got[0], expected)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"max_batch_size": 0}, "max_batch_size"),
        ({"batch_wait_ms": -1}, "batch_wait_ms"),
        ({"batch_wait_ms": 10, "max_batch_wait_ms": 5}, "batch_wait_ms"),
        ({"bogus": 1}, "unknown .*engine_kwargs.hf options"),
    ],
)
def test_options_are_validated(options, message):
    config = RolloutConfig(name="hf", engine_kwargs={"hf": options})
    with pytest.raises(ValueError, match=message):
        HFRolloutOptions.from_rollout_config(config)
