"""The hf rollout server: batched generation, log-probs against a plain forward, verified weight updates.

The server class runs in-process under asyncio (as Ray runs it in its actor, minus the process); the full path
through Ray, the adapter and verl's trainer is covered by ``tests/trainer/test_gain_e2e.py``.
"""

import asyncio
import pickle

import numpy as np
import pytest
import torch
from verl.workers.config import HFModelConfig, RolloutConfig

from tests.cpu import hf_server
from tests.tiny import make_tiny_model_dir
from verl_gain.cpu.rollout import (
    STOP_ABORTED,
    STOP_COMPLETED,
    HFRolloutOptions,
    HFRolloutServer,
    HostTensor,
    WeightSyncError,
    tensor_digest,
)
from verl_gain.cpu.sampling import (
    SEED_BITS,
    SEED_PARAM,
    SamplingKey,
    generator_seed,
    penalize_repetitions,
    request_generator,
    request_seed,
    sample_next_tokens,
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
    return hf_server.make_server(model_config, RESPONSE_LENGTH, **engine_options)


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


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.int64])
def test_host_tensors_carry_every_dtype_bit_for_bit_out_of_band(dtype):
    torch.manual_seed(2)
    tensor = (torch.randn(3, 5) * 100).to(dtype).t()  # not contiguous
    buffers = []
    # Ray pickles with protocol 5: a buffer handed to the callback travels out of band, not copied into the message.
    message = pickle.dumps(HostTensor.of(tensor), protocol=5, buffer_callback=buffers.append)
    assert len(buffers) == 1 and len(message) < 1000
    received = pickle.loads(message, buffers=[memoryview(b.raw()).toreadonly() for b in buffers]).tensor()
    assert received.dtype == dtype and received.shape == tensor.shape
    assert tensor_digest(received) == tensor_digest(tensor) and torch.equal(received, tensor)


def test_update_weights_takes_host_tensors_as_the_adapter_sends_them(model_config):
    server = make_server(model_config)
    torch.manual_seed(3)
    new_weights = {name: torch.randn_like(tensor) for name, tensor in server.model.state_dict().items()}
    digests = {name: tensor_digest(tensor) for name, tensor in new_weights.items()}
    server.update_weights({name: HostTensor.of(t) for name, t in new_weights.items()}, digests)
    for name, tensor in server.model.state_dict().items():
        assert torch.equal(tensor, new_weights[name])


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


def seeded(seed: int) -> dict:
    return {**SAMPLING, SEED_PARAM: seed}


def test_a_seeded_request_samples_the_same_response_whatever_it_is_batched_with(model_config):
    prompt_list = prompts(model_config, 5)
    alone = make_server(model_config)
    (reference,) = asyncio.run(generate_all(alone, [prompt_list[2]], seeded(7)))

    async def in_a_crowd(server):
        # The same request among others (different prompts and seeds, different batch position and padding).
        seeds = [100, 101, 7, 103, 104]
        return await asyncio.gather(
            *[server.generate(p, seeded(s), request_id=str(i)) for i, (p, s) in enumerate(zip(prompt_list, seeds))]
        )

    crowd = make_server(model_config)
    torch.manual_seed(12345)  # the process-wide RNG plays no part
    outputs = asyncio.run(in_a_crowd(crowd))
    assert crowd.stats()["batches_served"] == 1
    assert outputs[2].token_ids == reference.token_ids
    assert torch.allclose(torch.tensor(outputs[2].log_probs), torch.tensor(reference.log_probs), atol=FP32_AGREEMENT)


def test_one_prompt_with_different_seeds_gives_different_responses(model_config):
    server = make_server(model_config)
    prompt = prompts(model_config, 1)[0]

    async def group():
        return await asyncio.gather(*[server.generate(prompt, seeded(s), request_id=str(s)) for s in range(4)])

    first, again = asyncio.run(group()), asyncio.run(group())
    assert [o.token_ids for o in first] == [o.token_ids for o in again]
    assert len({tuple(o.token_ids) for o in first}) == 4  # a tiny random model: responses are near-random bytes


def test_requests_without_a_seed_are_sampled(model_config):
    server = make_server(model_config)
    outputs = asyncio.run(generate_all(server, prompts(model_config, 2)))
    assert all(len(o.token_ids) >= 1 for o in outputs)


def test_a_seed_that_is_not_an_integer_is_refused(model_config):
    server = make_server(model_config)
    with pytest.raises(ValueError, match="must be an integer"):
        asyncio.run(server.generate([1, 2, 3], seeded("abc"), request_id="0"))


# --- the sampler ------------------------------------------------------------------------------------------------------

VOCAB = 6
LOGITS = torch.tensor([[2.0, 1.0, 0.5, 0.0, -1.0, -3.0], [0.0, 0.0, 3.0, 1.0, 0.0, -2.0]])  # [B=2, V=6]
DRAWS = 4000


def key(**changes) -> SamplingKey:
    base = dict(
        do_sample=True,
        temperature=1.0,
        top_p=1.0,
        top_k=0,
        repetition_penalty=1.0,
        ignore_eos=False,
        want_log_probs=True,
    )
    return SamplingKey(**{**base, **changes})


def frequencies(sampling_key: SamplingKey, logits: torch.Tensor = LOGITS) -> torch.Tensor:
    """Frequencies [B, V] of each token over ``DRAWS`` draws per row (one call: each row repeated, own generator)."""
    rows = logits.repeat_interleave(DRAWS, dim=0)  # [B * DRAWS, V]
    generators = [request_generator(seed, [1, 2]) for seed in range(rows.shape[0])]
    tokens, _ = sample_next_tokens(rows, sampling_key, generators)  # [B * DRAWS]
    counts = torch.nn.functional.one_hot(tokens, logits.shape[1]).reshape(logits.shape[0], DRAWS, -1).sum(dim=1)
    return counts.float() / DRAWS


def test_sampler_draws_from_the_tempered_distribution():
    temperature = 0.7
    expected = torch.softmax(LOGITS / temperature, dim=-1)
    # Binomial standard error at DRAWS draws is <= 0.008; 4 standard errors.
    assert torch.allclose(frequencies(key(temperature=temperature)), expected, atol=0.032)


def test_sampler_top_k_and_top_p_keep_only_the_likely_tokens():
    top_k = frequencies(key(top_k=2))
    assert (top_k[0, 2:] == 0).all() and (top_k[1, [0, 1, 4, 5]] == 0).all()
    probs = torch.softmax(LOGITS, dim=-1)
    # Row 0 holds 0.61 on token 0 and 0.84 on tokens {0, 1}: top_p=0.7 keeps exactly those two.
    top_p = frequencies(key(top_p=0.7))
    assert (top_p[0, 2:] == 0).all()
    assert torch.allclose(top_p[0, :2], probs[0, :2] / probs[0, :2].sum(), atol=0.032)
    # A top_p below the largest probability keeps the most likely token only.
    assert (frequencies(key(top_p=0.1)).argmax(dim=-1) == LOGITS.argmax(dim=-1)).all()
    assert (frequencies(key(top_p=0.1)).max(dim=-1).values == 1).all()


def test_sampler_log_probs_are_of_the_untruncated_tempered_distribution():
    temperature = 0.5
    generators = [request_generator(row, []) for row in range(2)]
    tokens, log_probs = sample_next_tokens(LOGITS, key(temperature=temperature, top_k=1), generators)
    assert torch.equal(tokens, LOGITS.argmax(dim=-1))
    expected = torch.log_softmax(LOGITS / temperature, dim=-1).gather(1, tokens[:, None])[:, 0]
    assert torch.allclose(log_probs, expected)


def test_greedy_takes_the_argmax_with_log_probs_at_temperature_one():
    tokens, log_probs = sample_next_tokens(LOGITS, key(do_sample=False, temperature=0.0), generators=[])
    assert torch.equal(tokens, LOGITS.argmax(dim=-1))
    assert torch.allclose(log_probs, torch.log_softmax(LOGITS, dim=-1).max(dim=-1).values)


def test_repetition_penalty_matches_transformers():
    from transformers import RepetitionPenaltyLogitsProcessor

    seen = torch.tensor([[0, 3, 3], [2, 5, 1]])  # [B, L]
    expected = RepetitionPenaltyLogitsProcessor(penalty=1.3)(seen, LOGITS.clone())
    assert torch.allclose(penalize_repetitions(LOGITS, seen, 1.3), expected)
    # Greedy with a penalty turns away from a repeated favourite: row 1's 3.0 / 1.3 = 2.3 still wins, row 0's
    # 2.0 / 9 (penalty 9) loses to token 1.
    tokens, _ = sample_next_tokens(LOGITS, key(do_sample=False, repetition_penalty=9.0), [], seen=seen)
    assert tokens.tolist() == [1, 3]


def test_a_rows_draws_depend_on_its_generator_only():
    logits = torch.randn(5, 50, generator=torch.Generator().manual_seed(0))  # [B=5, V=50]

    def tokens_of(rows: list[int]) -> list[list[int]]:
        generators = [request_generator(1000 + row, [row]) for row in rows]
        return [sample_next_tokens(logits[rows], key(), generators)[0].tolist() for _ in range(20)]

    together = tokens_of([0, 1, 2, 3, 4])
    for row in range(5):
        assert [step[row] for step in together] == [step[0] for step in tokens_of([row])]
    # Another order of the same rows: each row keeps its own draws.
    shuffled = tokens_of([3, 1, 4, 0, 2])
    assert [step[2] for step in shuffled] == [step[4] for step in together]


def test_seeds_are_stable_and_spread():
    assert request_seed(42, 1, False, 7, 0, 0) == request_seed(42, 1, False, np.int64(7), 0, 0)
    seeds = {request_seed(42, step, False, index, n, 0) for step in range(3) for index in range(10) for n in range(4)}
    seeds |= {request_seed(42, step, False, index, 0, n) for step in range(3) for index in range(10) for n in range(4)}
    assert len(seeds) == 3 * 10 * 4 * 2 - 3 * 10  # (n, 0) and (0, n) coincide for n = 0 only
    assert all(0 <= seed < 2**SEED_BITS for seed in seeds)
    assert generator_seed(5, [1, 2, 3]) == generator_seed(5, [1, 2, 3]) != generator_seed(5, [1, 2, 3, 4])
    assert generator_seed(5, [1, 2, 3]) != generator_seed(6, [1, 2, 3])


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
