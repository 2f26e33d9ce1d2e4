"""Measure SmolLM2-135M-Instruct's accuracy per level of the embedded arithmetic task (not a test).

Greedy and sampled (at the rollout temperature, what GRPO's rollouts see) accuracy of each level on the same
problems, with the prompt tokenised as verl's rollout does and the demo's response length. Prints a table; the demo
picks its levels from it (verl_gain/tasks/arithmetic.py).

Usage: python bench/measure_task_levels.py [--problems 32] [--samples 4] [--max-new-tokens 32] [--temperature 0.4]
"""

from __future__ import annotations

import argparse
import time

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from verl_gain.model_sources import resolve_model
from verl_gain.tasks.arithmetic import INSTRUCTION, LEVELS, ROLLOUT_TEMPERATURE, compute_score, generate


def accuracy(
    model, tokenizer, problems, samples: int, max_new_tokens: int, do_sample: bool, temperature: float = 1.0
) -> float:
    prompts = [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": f"{p.question} {INSTRUCTION}"}], add_generation_prompt=True, tokenize=False
        )
        for p in problems
    ]
    batch = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    with torch.inference_mode():
        out = model.generate(
            **batch,
            max_new_tokens=max_new_tokens,
            do_sample=do_sample,
            temperature=temperature if do_sample else None,
            top_p=1.0 if do_sample else None,
            top_k=0 if do_sample else None,
            num_return_sequences=samples if do_sample else 1,
            pad_token_id=tokenizer.pad_token_id,
        )
    replies = tokenizer.batch_decode(out[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)
    repeats = samples if do_sample else 1
    scores = [compute_score("", reply, str(problems[i // repeats].answer))["acc"] for i, reply in enumerate(replies)]
    return sum(scores) / len(scores)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--problems", type=int, default=32)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--temperature", type=float, default=ROLLOUT_TEMPERATURE, help="rollout temperature of the sampled column"
    )
    parser.add_argument("--levels", type=int, nargs="+", default=sorted(LEVELS))
    parser.add_argument("--threads", type=int, default=None, help="torch threads (1 is faster on a busy machine)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    path = resolve_model("smollm2-135m-instruct")
    tokenizer = AutoTokenizer.from_pretrained(path, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    sampled_label = f"sampled T={args.temperature:g}"
    print(f"{'level':>5} | {'greedy':>6} | {sampled_label:>13} | example")
    for level in args.levels:
        problems = generate(args.problems, seed=1000 + level, levels=(level,))
        started = time.perf_counter()
        greedy = accuracy(model, tokenizer, problems, 1, args.max_new_tokens, do_sample=False)
        sampled = accuracy(
            model, tokenizer, problems, args.samples, args.max_new_tokens, do_sample=True, temperature=args.temperature
        )
        print(
            f"{level:>5} | {greedy:6.2f} | {sampled:13.2f} | {problems[0].question} "
            f"({time.perf_counter() - started:.0f} s)",
            flush=True,
        )


if __name__ == "__main__":
    main()
