"""Where the bf16 rollout-vs-actor log-prob gap comes from, on the real SmolLM2-135M-Instruct (not a test).

The hf rollout server (``verl_gain.cpu.rollout.HFRolloutServer``, in process) samples responses to the demo task's
prompts with bf16 weights, KV-cached, as in a ``cpu.precision=bf16`` run, and records each sampled token's
log-prob. The same tokens are then scored three ways, each one forward over the whole sequence:

- ``actor``: fp32 weights under bf16 autocast, what verl's FSDP engine computes for ``old_log_probs`` in bf16;
- ``bf16_uncached``: the rollout's own bf16 weights, without the KV cache;
- ``fp32``: fp32 weights, no autocast (the fp32 run's arithmetic).

If the rollout is as far from its own weights' uncached forward as from the others, the gap is bf16's rounding along
two computation paths (incremental decoding vs one pass), not a mismatch of weights. Log-probs are of
``softmax(z / T)`` at the demo's temperature, as the trainer computes them. Prints, and writes as JSON (``--out``):
per comparison, the largest and mean |delta log p| and |delta p| over all sampled tokens.

    python bench/bench_bf16_log_probs.py [--prompts 16] [--tokens 32] [--out bench/results/bf16_log_probs.json]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from pathlib import Path

import pandas as pd
import torch
from bench_results import report
from transformers import AutoModelForCausalLM
from verl.workers.config import HFModelConfig, RolloutConfig

from verl_gain.cpu.rollout import HFRolloutServer
from verl_gain.model_sources import SMOLLM2_NAME, resolve_model
from verl_gain.tasks import arithmetic

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "bench" / "results" / "bf16_log_probs.json"
PROMPT_LENGTH = 256


def sequence_log_probs(
    model: torch.nn.Module, prompt: list[int], response: list[int], temperature: float, autocast: bool
) -> torch.Tensor:
    """log softmax(z / T)(y_t) ``[T]`` of ``response`` after ``prompt``, from one forward over both."""
    ids = torch.tensor([prompt + response])  # [1, P + T]
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        logits = model(ids).logits[0].float()  # [P + T, V]
    log_probs = torch.log_softmax(logits / temperature, dim=-1)[len(prompt) - 1 : -1]  # [T, V]
    return log_probs.gather(1, torch.tensor(response)[:, None])[:, 0]  # [T]


def demo_prompts(tokenizer, count: int) -> list[list[int]]:
    """Token ids of ``count`` held-out prompts of the demo task, chat template applied (what the rollout receives)."""
    with tempfile.TemporaryDirectory() as folder:
        _, test_path = arithmetic.write_task(folder, train=1, test=count)
        messages = pd.read_parquet(test_path)["prompt"]
    template = {"add_generation_prompt": True, "tokenize": True, "return_dict": True}
    return [list(tokenizer.apply_chat_template(list(m), **template)["input_ids"]) for m in messages]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=16, help="held-out prompts of the demo task")
    parser.add_argument("--tokens", type=int, default=32, help="response tokens per prompt (the demo's)")
    parser.add_argument("--temperature", type=float, default=arithmetic.ROLLOUT_TEMPERATURE)
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    model_dir = str(resolve_model(SMOLLM2_NAME))
    model_config = HFModelConfig(path=model_dir, override_config={"attn_implementation": "sdpa"})
    prompts = demo_prompts(model_config.tokenizer, args.prompts)
    rollout_config = RolloutConfig(
        name="hf", dtype="bfloat16", prompt_length=PROMPT_LENGTH, response_length=args.tokens, load_format="auto"
    )
    server = HFRolloutServer(rollout_config, model_config, replica_rank=0)
    sampling = {"temperature": args.temperature, "top_p": 1.0, "top_k": -1, "logprobs": True}

    async def generate_all():
        return await asyncio.gather(
            *[server.generate(p, dict(sampling), request_id=str(i)) for i, p in enumerate(prompts)]
        )

    outputs = asyncio.run(generate_all())
    rollout = torch.cat([torch.tensor(o.log_probs) for o in outputs])  # [N]
    fp32 = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    references = {"actor": (fp32, True), "bf16_uncached": (server.model, False), "fp32": (fp32, False)}
    result = {
        "model": SMOLLM2_NAME,
        "prompts": len(prompts),
        "sampled_tokens": rollout.numel(),
        "temperature": args.temperature,
        "rollout": "bf16 weights, KV-cached generate (HFRolloutServer)",
        "vs": {},
    }
    for name, (model, autocast) in references.items():
        reference = torch.cat(
            [sequence_log_probs(model, p, o.token_ids, args.temperature, autocast) for p, o in zip(prompts, outputs)]
        )
        log_gap = (rollout - reference).abs()
        prob_gap = (rollout.exp() - reference.exp()).abs()
        result["vs"][name] = {
            "log_prob_abs_diff_max": round(log_gap.max().item(), 4),
            "log_prob_abs_diff_mean": round(log_gap.mean().item(), 4),
            "prob_abs_diff_max": round(prob_gap.max().item(), 4),
            "prob_abs_diff_mean": round(prob_gap.mean().item(), 4),
        }
    report(result, args.out)


if __name__ == "__main__":
    main()
