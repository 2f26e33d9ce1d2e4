"""The hf rollout server's static decoder against HF ``generate``: same tokens, same log-probs, both dtypes.

Both decoders draw each token with ``sample_next_tokens`` from the request's own generator, so from equal logits they
must choose equal tokens; the static decoder's logits come from its own cache and attention, so this checks them.
"""

import asyncio

import pytest
import torch
from transformers import GPT2Config, LlamaConfig, MistralConfig
from verl.workers.config import HFModelConfig

from tests.cpu import hf_server
from tests.tiny import make_tiny_model_dir
from verl_gain.cpu.decoding import DECODE_ATTENTION, static_decoding_unsupported
from verl_gain.cpu.rollout import GENERATE_DECODER, STATIC_DECODER, HFRolloutServer
from verl_gain.cpu.sampling import SEED_PARAM

FP32_AGREEMENT = 1e-5
"""fp32 log-probs of the two decoders (different attention kernels and cache layouts): observed ~1e-6."""
BF16_AGREEMENT = 0.1
"""bf16: a logit's rounding step is ~4e-3 of its size; observed ~2e-2 between the two decoders of the tiny model."""
RESPONSE_LENGTH = 24


@pytest.fixture(scope="module", params=["llama", "qwen2"])
def model_config(request, tmp_path_factory):
    path = make_tiny_model_dir(tmp_path_factory.mktemp(request.param) / "model", template="chatml", arch=request.param)
    return HFModelConfig(path=str(path), override_config={"attn_implementation": "sdpa"})


@pytest.fixture(scope="module")
def servers(model_config):
    """``servers(dtype, decoder)``: one server per combination for the module (the tests do not change them)."""
    made = {}

    def get(dtype: str = "float32", decoder: str = STATIC_DECODER) -> HFRolloutServer:
        if (dtype, decoder) not in made:
            made[dtype, decoder] = make_server(model_config, dtype, decoder=decoder)
        return made[dtype, decoder]

    return get


def make_server(model_config, dtype="float32", **engine_options) -> HFRolloutServer:
    return hf_server.make_server(model_config, RESPONSE_LENGTH, dtype, **engine_options)


def prompts(model_config, count: int) -> list[list[int]]:
    tokenizer = model_config.tokenizer
    return [tokenizer.encode("y" * (5 * index + 1) + f" {index}!") for index in range(count)]


def serve(server, prompt_list, sampling: dict, max_tokens: list[int] | None = None):
    async def all_requests():
        calls = []
        for index, prompt in enumerate(prompt_list):
            params = {**sampling, SEED_PARAM: 1000 + index}
            if max_tokens is not None:
                params["max_tokens"] = max_tokens[index]
            calls.append(server.generate(prompt, params, request_id=str(index)))
        return await asyncio.gather(*calls)

    return asyncio.run(all_requests())


SAMPLED = {"temperature": 1.0, "top_p": 1.0, "top_k": -1, "logprobs": True}
NUCLEUS_WITH_PENALTY = {"temperature": 0.8, "top_p": 0.9, "top_k": 20, "repetition_penalty": 1.3, "logprobs": True}
GREEDY = {"temperature": 0, "top_p": 1.0, "top_k": -1, "logprobs": True}


def test_the_default_decoder_is_static_with_its_attention(model_config, servers):
    server = make_server(model_config)
    assert server.decoder is not None and server.model.config._attn_implementation == DECODE_ATTENTION
    assert servers(decoder=GENERATE_DECODER).decoder is None


@pytest.mark.parametrize("sampling", [SAMPLED, NUCLEUS_WITH_PENALTY, GREEDY], ids=["sampled", "nucleus", "greedy"])
def test_static_decoder_draws_what_generate_draws(model_config, servers, sampling):
    prompt_list = prompts(model_config, 5)  # different lengths: left padding
    budgets = [RESPONSE_LENGTH, 7, RESPONSE_LENGTH, 1, 15]  # each row stops at its own budget
    static = serve(servers(decoder=STATIC_DECODER), prompt_list, sampling, budgets)
    generate = serve(servers(decoder=GENERATE_DECODER), prompt_list, sampling, budgets)
    for budget, mine, theirs in zip(budgets, static, generate):
        assert mine.token_ids == theirs.token_ids
        assert 1 <= len(mine.token_ids) <= budget
        assert torch.allclose(torch.tensor(mine.log_probs), torch.tensor(theirs.log_probs), atol=FP32_AGREEMENT)


def test_copies_of_a_prompt_share_one_prefill_and_still_sample_their_own_responses(model_config, servers):
    distinct = prompts(model_config, 2)
    prompt_list = [distinct[0], distinct[1], distinct[0], distinct[0], distinct[1]]  # GRPO's n copies, interleaved
    static = serve(servers(decoder=STATIC_DECODER), prompt_list, SAMPLED)
    generate = serve(servers(decoder=GENERATE_DECODER), prompt_list, SAMPLED)
    assert [o.token_ids for o in static] == [o.token_ids for o in generate]
    for mine, theirs in zip(static, generate):
        assert torch.allclose(torch.tensor(mine.log_probs), torch.tensor(theirs.log_probs), atol=FP32_AGREEMENT)
    assert len({tuple(static[i].token_ids) for i in (0, 2, 3)}) == 3  # own seeds: own responses


def test_static_decoder_stops_at_the_end_token_unless_told_to_ignore_it(model_config):
    server = make_server(model_config)
    prompt_list = prompts(model_config, 3)
    free = serve(server, prompt_list, SAMPLED)
    # Make the second token each row drew an end token: every response stops right there, end token kept.
    server.eos_token_ids = sorted({o.token_ids[1] for o in free})
    stopped = serve(server, prompt_list, SAMPLED)
    for before, after in zip(free, stopped):
        first_end = next(i for i, t in enumerate(before.token_ids) if t in server.eos_token_ids)
        assert after.token_ids == before.token_ids[: first_end + 1]
    ignoring = serve(server, prompt_list, {**SAMPLED, "ignore_eos": True}, max_tokens=[4, 6, 5])
    assert [len(o.token_ids) for o in ignoring] == [4, 6, 5]


def test_static_decoder_runs_bf16_weights(model_config, servers):
    prompt_list = prompts(model_config, 4)
    assert next(servers("bfloat16").model.parameters()).dtype == torch.bfloat16
    static = serve(servers("bfloat16"), prompt_list, GREEDY)
    generate = serve(servers("bfloat16", GENERATE_DECODER), prompt_list, GREEDY)
    for mine, theirs in zip(static, generate):
        assert len(mine.token_ids) >= 1
        # Greedy paths may part at a near-tie of bf16 logits; the log-probs of the shared prefix must agree.
        shared = next((i for i, (a, b) in enumerate(zip(mine.token_ids, theirs.token_ids)) if a != b), None)
        shared = min(len(mine.token_ids), len(theirs.token_ids)) if shared is None else shared + 1
        assert shared >= 1
        assert torch.allclose(
            torch.tensor(mine.log_probs[:shared]), torch.tensor(theirs.log_probs[:shared]), atol=BF16_AGREEMENT
        )


@pytest.mark.parametrize(
    "config, reason",
    [
        (GPT2Config(n_layer=1, n_embd=8, n_head=2), "model type 'gpt2'"),
        (MistralConfig(sliding_window=16, num_hidden_layers=1), "model type 'mistral'"),
        (LlamaConfig(num_hidden_layers=1), None),
    ],
)
def test_unsupported_models_are_named(config, reason):
    found = static_decoding_unsupported(config)
    assert (found is None) if reason is None else (reason in found)
