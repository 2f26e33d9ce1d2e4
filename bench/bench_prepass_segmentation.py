"""The GAIN pre-pass's driver-side tokenisation of a big training set: 100,000 synthetic chat prompts segmented with
the real SmolLM2-135M-Instruct tokenizer, one by one (the baseline) and with ``segment_prompts`` on every CPU of
this machine, in the same command.

    python bench/bench_prepass_segmentation.py                  # 100,000 prompts, all CPUs
    python bench/bench_prepass_segmentation.py --prompts 40000 --workers 16

Prompts are GSM8K-like in length (20-120 words, ~100 tokens with the template). The two runs must give identical
segments; the wall time of each, their ratio, and the CPU time each used (this process and its forked ones) are
printed: on a busy machine the wall-time gain is capped by the cores other jobs leave free, the CPU time shows the
work is the same (the forked run does it in parallel, with no extra work).
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import time

WORDS = (
    "the a of to in is you that it he was for on are as with his they at be this have from or one had by word but "
    "not what all were we when your can said there use an each which she do how their if will up other about out "
    "many then them these so some her would make like him into time has look two more write go see number no way "
    "could people my than first water been call who oil its now find long down day did get come made may part"
).split()
SEED = 0
MIN_WORDS, MAX_WORDS = 20, 120
PROMPT_LENGTH = 1024
"""rollout.prompt_length of the paper's math setups (left truncation; none of these prompts reaches it)."""


def synthetic_prompts(count: int) -> list[list[dict[str, str]]]:
    rng = random.Random(SEED)
    return [
        [{"role": "user", "content": " ".join(rng.choices(WORDS, k=rng.randint(MIN_WORDS, MAX_WORDS))) + f" ({i})?"}]
        for i in range(count)
    ]


def cpu_seconds() -> float:
    """CPU time of this process and of its finished child processes (user + system)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=None, help="processes (default: every CPU available)")
    args = parser.parse_args()

    from transformers import AutoTokenizer

    from verl_gain.model_sources import smollm2_path
    from verl_gain.scoring.segments import PromptSegmenter, available_cpus, segment_prompts

    segmenter = PromptSegmenter(AutoTokenizer.from_pretrained(smollm2_path()), {}, model_type="llama")
    prompts = synthetic_prompts(args.prompts)
    workers = args.workers or available_cpus()

    cpu_started, started = cpu_seconds(), time.perf_counter()
    serial = segment_prompts(segmenter, prompts, PROMPT_LENGTH, workers=1, progress=False)
    serial_s, serial_cpu = time.perf_counter() - started, cpu_seconds() - cpu_started
    cpu_started, started = cpu_seconds(), time.perf_counter()
    forked = segment_prompts(segmenter, prompts, PROMPT_LENGTH, workers=workers, min_prompts_per_worker=1)
    forked_s, forked_cpu = time.perf_counter() - started, cpu_seconds() - cpu_started

    assert [(p.input_ids, p.segment_ids) for p in forked] == [(p.input_ids, p.segment_ids) for p in serial]
    tokens = sum(len(p) for p in serial)
    print(f"{args.prompts:,} prompts, {tokens:,} tokens (mean {tokens / args.prompts:.0f}), SmolLM2 tokenizer")
    print(f"load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(
        f"one by one:   {serial_s:7.1f} s wall, {serial_cpu:7.1f} s CPU "
        f"({serial_cpu / args.prompts * 1e3:.2f} CPU ms/prompt)"
    )
    print(
        f"{workers:2d} processes: {forked_s:7.1f} s wall, {forked_cpu:7.1f} s CPU "
        f"({serial_s / forked_s:.2f}x the one-by-one speed; identical segments)"
    )


if __name__ == "__main__":
    main()
