"""What bf16 buys each part of a training step on this CPU, paired with fp32 (not a test): SmolLM2-135M-Instruct.

The demo's per-worker work (8 prompts x 4 rollouts over 2 trainer workers: 16 sequences of a demo-task prompt and
32 response tokens), timed in one process, in both precisions, in rounds that alternate which precision goes first,
so that on a shared, noisy machine both see the same load:

- ``generate``: the rollout, Hugging Face ``generate`` of 32 sampled tokens (temperature 0.4, KV cache) for the 16
  rows; fp32 weights against bf16 weights (``rollout.dtype`` of ``cpu.precision=fp32`` / ``bf16``).
- ``forward``: ``old_log_prob``, one forward over the 16 sequences and the response tokens' log-probs.
- ``forward_backward``: ``update_actor``, the same plus a backward of a policy-gradient-shaped loss (mean response
  log-prob).

The actor in bf16 is what FSDP2's ``MixedPrecisionPolicy(param_dtype=bf16)`` hands verl's engine: parameters in bf16
(cast from the fp32 master copy each step; the cast is timed with the step), run under ``torch.autocast`` to bf16
as verl's ``forward_step`` does, logits and log-probs in fp32. In fp32 there is no cast and no autocast. The
optimizer step, the gradient reduction (fp32 in both) and the weight sync are left out.

Prints each part's median time per precision and the fp32 / bf16 ratio, in wall and CPU time (this process, all
threads; the steadier figure on a shared machine); writes JSON (``--out``).

    python bench/bench_bf16_step_parts.py [--rounds 5] [--threads 1] [--out bench/results/bf16_step_parts.json]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from bench_bf16_log_probs import demo_prompts  # the demo task's prompts, as the rollout receives them
from bench_results import report
from transformers import AutoModelForCausalLM, AutoTokenizer

from verl_gain.inference import cpu_bf16_instructions, left_padded
from verl_gain.model_sources import SMOLLM2_NAME, resolve_model
from verl_gain.tasks import arithmetic

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "bench" / "results" / "bf16_step_parts.json"
SEQUENCES_PER_WORKER = 16
"""The demo's 8 prompts x 4 rollouts over its 2 trainer workers (``DemoSettings``)."""
RESPONSE_TOKENS = 32
"""The demo's ``response_length``."""
PROMPTS = 4
"""Distinct prompts, each repeated for the 4 rollouts of a GRPO group."""
PARTS = ("generate", "forward", "forward_backward")


def response_log_probs(model: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor, bf16: bool) -> torch.Tensor:
    """log softmax(z / T) of each next token ``[B, RESPONSE_TOKENS]`` (the response part), logits in fp32."""
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits  # [B, L, V]
    logits = logits[:, -RESPONSE_TOKENS - 1 : -1].float() / arithmetic.ROLLOUT_TEMPERATURE  # [B, T, V]
    return torch.log_softmax(logits, dim=-1).gather(2, ids[:, -RESPONSE_TOKENS:, None])[..., 0]  # [B, T]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5, help="rounds, each timing every part in both precisions")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is steadier on a busy machine)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    model_dir = resolve_model(SMOLLM2_NAME)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    master = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="sdpa")
    rollout = {"fp32": master, "bf16": copy.deepcopy(master).to(torch.bfloat16)}
    prompts = [p for p in demo_prompts(tokenizer, PROMPTS) for _ in range(SEQUENCES_PER_WORKER // PROMPTS)]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    prompt_ids, prompt_mask = left_padded(prompts, pad)  # [B, P]
    sampling = {"do_sample": True, "temperature": arithmetic.ROLLOUT_TEMPERATURE, "top_k": 0, "top_p": 1.0}
    lengths = {"max_new_tokens": RESPONSE_TOKENS, "min_new_tokens": RESPONSE_TOKENS, "pad_token_id": pad}

    def generate(precision: str) -> torch.Tensor:
        with torch.no_grad():
            return rollout[precision].generate(
                input_ids=prompt_ids, attention_mask=prompt_mask, **sampling, **lengths
            )  # [B, P + T]

    sequences = generate("fp32")  # the same tokens for both precisions' actor parts
    mask = torch.cat([prompt_mask, torch.ones(len(prompts), RESPONSE_TOKENS, dtype=prompt_mask.dtype)], dim=1)

    def actor(precision: str) -> torch.nn.Module:
        if precision == "fp32":
            return master
        return copy.deepcopy(master).to(torch.bfloat16)  # FSDP2's per-step cast of the fp32 master weights

    def forward(precision: str) -> None:
        with torch.no_grad():
            response_log_probs(actor(precision), sequences, mask, precision == "bf16")

    def forward_backward(precision: str) -> None:
        model = actor(precision)
        model.zero_grad(set_to_none=True)
        (-response_log_probs(model, sequences, mask, precision == "bf16").mean()).backward()

    parts: dict[str, Callable[[str], object]] = {
        "generate": generate,
        "forward": forward,
        "forward_backward": forward_backward,
    }
    tokens = int(mask.sum())
    print(
        f"{len(prompts)} sequences, {prompt_ids.shape[1]} prompt + {RESPONSE_TOKENS} response tokens, {tokens} "
        f"tokens; torch threads {torch.get_num_threads()}; CPU bf16 instructions: "
        f"{', '.join(cpu_bf16_instructions()) or 'none'}",
        flush=True,
    )
    for precision in ("fp32", "bf16"):  # warm-up
        forward(precision)
    seconds: dict[str, dict[str, list[float]]] = {part: {"fp32": [], "bf16": []} for part in PARTS}
    cpu_seconds: dict[str, dict[str, list[float]]] = {part: {"fp32": [], "bf16": []} for part in PARTS}
    for number in range(args.rounds):
        order = ("fp32", "bf16") if number % 2 == 0 else ("bf16", "fp32")
        for part, run in parts.items():
            for precision in order:
                started, cpu_started = time.perf_counter(), time.process_time()
                run(precision)
                seconds[part][precision].append(time.perf_counter() - started)
                cpu_seconds[part][precision].append(time.process_time() - cpu_started)
        print(
            f"round {number + 1}/{args.rounds}: "
            + ", ".join(f"{p} {seconds[p]['fp32'][-1]:.1f} / {seconds[p]['bf16'][-1]:.1f} s" for p in PARTS),
            flush=True,
        )
    median = {part: {k: statistics.median(v) for k, v in by.items()} for part, by in seconds.items()}
    cpu_median = {part: {k: statistics.median(v) for k, v in by.items()} for part, by in cpu_seconds.items()}
    result = {
        "model": SMOLLM2_NAME,
        "sequences": len(prompts),
        "prompt_tokens_padded": int(prompt_ids.shape[1]),
        "response_tokens": RESPONSE_TOKENS,
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cpu_bf16_instructions": list(cpu_bf16_instructions()),
        "rounds": args.rounds,
        "median_seconds": {part: {k: round(v, 2) for k, v in by.items()} for part, by in median.items()},
        "fp32_over_bf16": {part: round(by["fp32"] / by["bf16"], 2) for part, by in median.items()},
        "median_cpu_seconds": {part: {k: round(v, 2) for k, v in by.items()} for part, by in cpu_median.items()},
        "fp32_over_bf16_cpu": {part: round(by["fp32"] / by["bf16"], 2) for part, by in cpu_median.items()},
    }
    report(result, args.out)


if __name__ == "__main__":
    main()
