"""Seeded, batch-independent token sampling for the hf rollout server.

verl's GPU rollouts take ``actor_rollout_ref.rollout.seed``; a rerun with the same seed should draw the same
responses. HF ``generate`` samples every row of a batch from the process-wide RNG, so a row's draws depend on which
other requests shared its batch and on their order: two runs with one seed diverge as soon as the server batches
requests differently (it batches by arrival time). Here each request owns a ``torch.Generator``: token t of a
request is drawn with the t-th uniform of that generator, whatever else is in the batch.

Seeds, from the run to the token:

    request seed = H(rollout.seed, step, validate, sample index, response number)  (agent loop, ``request_seed``)
    generator seed = H(request seed, prompt token ids)                             (server, ``generator_seed``)
    y_t = inverse CDF of the sampling distribution at u_t, u_t the t-th draw of the request's generator

with H a 64-bit BLAKE2b digest. The prompt's ids enter the generator seed so that the turns of a multi-turn request
(same request seed, longer prompt each turn) do not reuse one stream of uniforms.

Sampling distribution (verl/vLLM semantics): logits z, repetition penalty on the tokens seen so far (prompt and
response), temperature T, then top-k, then top-p. The reported log-prob of y_t is log softmax(z / T)[y_t] of the
model's own logits, what verl's actor computes as ``old_log_probs`` (truncation and the penalty change which tokens
can be drawn, not this number).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

SEED_BITS = 63
"""Seeds are non-negative int64 values (``torch.Generator.manual_seed`` takes up to 2**64 - 1; 63 bits keep them
valid Python/NumPy/JSON integers everywhere)."""
SEED_PARAM = "seed"
"""Key of the per-request seed in verl's ``sampling_params`` (vLLM's ``SamplingParams.seed``)."""


@dataclass(frozen=True)
class SamplingKey:
    """Sampling parameters that must be equal for requests to share a batch (the seed is per request, not here).

    Attributes:
        do_sample: False for greedy decoding (temperature 0).
        temperature: T > 0 when sampling.
        top_p: nucleus mass in (0, 1]; 1 keeps every token.
        top_k: keep the k most likely tokens; 0 keeps every token.
        repetition_penalty: >= 1 divides positive logits (multiplies negative ones) of tokens already seen.
        ignore_eos: do not stop at the end-of-sequence token.
        want_log_probs: return the sampled tokens' log-probs.
    """

    do_sample: bool
    temperature: float
    top_p: float
    top_k: int
    repetition_penalty: float
    ignore_eos: bool
    want_log_probs: bool


def _digest(*parts: object) -> int:
    """A ``SEED_BITS``-bit integer from the ``repr`` of ``parts`` (stable across processes, unlike ``hash``)."""
    text = "\x1f".join(repr(part) for part in parts).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little") >> (64 - SEED_BITS)


def request_seed(
    rollout_seed: int, step: int, validate: bool, sample_index: object, rollout_n: int, session_id: int
) -> int:
    """The seed of one rollout request: the run's seed, the trainer step, which sample, and which of its
    ``rollout.n`` responses it is (verl's agent loop knows all of these; the server sees only the result).

    verl numbers the responses of a sample in two ways: the legacy trainer repeats each row ``n`` times and counts
    the copies (``rollout_n``, session 0), the V1 trainer sends each row once and starts ``n`` sessions
    (``session_id``, rollout_n 0). Both enter the seed.
    """
    if isinstance(sample_index, np.generic):
        sample_index = sample_index.item()  # the same digest for numpy and Python integers
    return _digest(
        "request", int(rollout_seed), int(step), bool(validate), sample_index, int(rollout_n), int(session_id)
    )


def generator_seed(seed: int, prompt_ids: Sequence[int]) -> int:
    """The seed of a request's generator: its request seed and its prompt's token ids."""
    ids = np.asarray(prompt_ids, dtype=np.int64).tobytes()
    digest = hashlib.blake2b(ids, digest_size=8, key=int(seed).to_bytes(8, "little", signed=False)).digest()
    return int.from_bytes(digest, "little") >> (64 - SEED_BITS)


def request_generator(seed: int, prompt_ids: Sequence[int]) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with ``generator_seed(seed, prompt_ids)``."""
    generator = torch.Generator()
    generator.manual_seed(generator_seed(seed, prompt_ids))
    return generator


def penalize_repetitions(logits: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:
    """Logits [B, V] with the tokens of ``seen`` [B, L] (any ids; pad ids count) penalised as HF/vLLM do."""
    chosen = logits.gather(1, seen)  # [B, L]
    chosen = torch.where(chosen < 0, chosen * penalty, chosen / penalty)
    return logits.scatter(1, seen, chosen)


def truncate(scaled: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """Temperature-scaled logits [B, V] with the tokens outside top-k, then outside top-p, set to -inf.

    Top-p keeps the smallest set of most likely tokens whose probability reaches ``top_p`` (at least one token).
    """
    if 0 < top_k < scaled.shape[-1]:
        kth = scaled.topk(top_k, dim=-1).values[:, -1:]  # [B, 1]
        scaled = scaled.masked_fill(scaled < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = scaled.sort(dim=-1, descending=True)  # [B, V]
        sorted_probs = sorted_logits.softmax(dim=-1)  # [B, V]
        mass_before = sorted_probs.cumsum(dim=-1) - sorted_probs  # [B, V] mass of the more likely tokens
        drop_sorted = mass_before >= top_p  # the first token always stays (mass_before = 0)
        drop = torch.zeros_like(drop_sorted).scatter(1, order, drop_sorted)  # [B, V] back in vocabulary order
        scaled = scaled.masked_fill(drop, float("-inf"))
    return scaled


def draw(probs: torch.Tensor, generators: Sequence[torch.Generator]) -> torch.Tensor:
    """One token per row [B] from ``probs`` [B, V] (rows need not be normalised), row b by inverse CDF at the next
    uniform of ``generators[b]``; a row's token depends on that row and its generator only."""
    uniforms = torch.stack([torch.rand((), generator=g, dtype=torch.float64) for g in generators])  # [B]
    cdf = probs.double().cumsum(dim=-1)  # [B, V]
    targets = (uniforms * cdf[:, -1]).unsqueeze(1)  # [B, 1]
    # right=True: the first token whose cumulative mass exceeds the target, which has non-zero probability.
    tokens = torch.searchsorted(cdf, targets, right=True).squeeze(1)  # [B]
    return tokens.clamp_(max=probs.shape[-1] - 1)


def sample_next_tokens(
    logits: torch.Tensor,
    key: SamplingKey,
    generators: Sequence[torch.Generator],
    seen: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Next tokens [B] and their log-probs [B] (log softmax(z / T), T = 1 when greedy) from logits z [B, V].

    ``seen`` [B, L]: the token ids so far (prompt and response), for the repetition penalty only.
    """
    logits = logits.float()  # [B, V]
    temperature = key.temperature if key.do_sample else 1.0
    log_probs = torch.log_softmax(logits / temperature, dim=-1)  # [B, V]
    shaped = logits
    if key.repetition_penalty != 1.0 and seen is not None:
        shaped = penalize_repetitions(shaped, seen, key.repetition_penalty)
    if key.do_sample:
        probs = truncate(shaped / temperature, key.top_k, key.top_p).softmax(dim=-1)  # [B, V]
        tokens = draw(probs, generators)  # [B]
    else:
        tokens = shaped.argmax(dim=-1)  # [B]
    return tokens, log_probs.gather(1, tokens.unsqueeze(1)).squeeze(1)
