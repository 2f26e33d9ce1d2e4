"""Benchmark of the GAIN pre-pass on the real SmolLM2-135M-Instruct (not a test): prints numbers for this machine.

Over the same GSM8K prompts, four ways, each in a fresh process (so its peak memory is its own; model loading is
excluded from time and memory):

  (1)  bare batched forward: the plain Hugging Face forward (logits for every token), no capture, batched exactly
       as the scorer batches (length-sorted, --token-budget tokens per batch, right padding): the floor any
       pre-pass pays.
  (1') the same with ``logits_to_keep=1`` (the LM head on the last token only).
  (2)  ``verl-gain score`` (``score_dataset``: tokenising and segmenting, the capture hook with early exit at the
       last layer's MLP input, segment sums, chunk files, fingerprint, merged scores file).
  (3)  the naive procedure, as the paper's released pre-pass did it: one prompt per forward pass, the captured
       activations of the whole dataset kept in memory, then the full L x L cosine matrix per prompt.

(2) is also run on a quarter of the prompts, to show that its peak memory does not grow with the dataset. The
results of (2) and (3) are checked to agree. Then everything again on long prompts: the GSM8K question behind an
8-shot prefix (8 solved training problems as user/assistant turns, ~1.75k tokens).

Time: wall-clock and CPU time (user + system, all threads) of the work; on a shared machine CPU time is the steadier
figure. Ratios are to (1) and to (1') ("1p"). Peak memory: the process's peak resident set (Linux ``VmHWM``) is
reset after loading (``/proc/self/clear_refs``) and read after the work; reported as MiB above the resident memory
before the work.

Usage: python bench/bench_scoring.py [--short 256] [--long 16] [--token-budget 2048] [--data PATH]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "gsm8k" / "train.parquet"
FEW_SHOTS = 8
MODEL = "smollm2-135m-instruct"


# ------------------------------------------------------------------------------------------------------- memory
def _status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak() -> bool:
    """Reset the peak resident set to the current one (Linux >= 4.0); False where not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _peak_mib() -> float:
    hwm = _status_kib("VmHWM")
    return (hwm if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) / 1024.0


def _rss_mib() -> float:
    rss = _status_kib("VmRSS")
    return (rss if rss is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) / 1024.0


# --------------------------------------------------------------------------------------------------------- data
def gsm8k_frames(path: Path, short: int, long: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``short`` GSM8K prompts as in the file, and ``long`` ones behind an 8-shot prefix (other rows)."""
    train = pd.read_parquet(path)
    shots = []
    for _, row in train.iloc[:FEW_SHOTS].iterrows():
        shots.append({"role": "user", "content": row["prompt"][-1]["content"]})
        shots.append({"role": "assistant", "content": row["extra_info"]["answer"]})
    short_frame = train.iloc[FEW_SHOTS : FEW_SHOTS + short].reset_index(drop=True)
    long_frame = train.iloc[FEW_SHOTS : FEW_SHOTS + long].reset_index(drop=True).copy()
    long_frame["prompt"] = [[*shots, {"role": "user", "content": p[-1]["content"]}] for p in long_frame["prompt"]]
    return short_frame, long_frame


# ---------------------------------------------------------------------------------------------------- the ways
def _bare(model, prompts, token_budget: int, keep_one: bool) -> None:
    import torch

    from verl_gain.scoring.scorer import batch_inputs, plan_batches

    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    extra = {"logits_to_keep": 1} if keep_one else {}
    with torch.inference_mode():
        for batch in plan_batches([len(prompts[i]) for i in order], token_budget):
            inputs, _, _ = batch_inputs([prompts[order[j]] for j in batch], "right", 0, torch.device("cpu"))
            model(**inputs, use_cache=False, **extra)


def _naive(model, prompts) -> np.ndarray:
    import torch

    from verl_gain.core.angles import FIXED_SEGMENT, QUESTION_SEGMENT
    from verl_gain.scoring.capture import HiddenStateCapture

    kept = []
    with torch.inference_mode(), HiddenStateCapture(model) as capture:
        for prompt in prompts:  # one prompt per forward pass, the full model
            model(input_ids=torch.tensor([prompt.input_ids]))
            kept.append(capture.pop()[0].clone())  # [L, H], kept for the whole dataset
    keys = []
    for hidden, prompt in zip(kept, prompts):
        unit = torch.nn.functional.normalize(hidden.float(), dim=-1)  # [L, H]
        cos = unit @ unit.T  # [L, L], the full cosine matrix
        seg = torch.tensor(prompt.segment_ids)
        q, f = seg == QUESTION_SEGMENT, seg == FIXED_SEGMENT
        block, nq = cos[q][:, q], int(q.sum())
        intra = (block.sum() - block.diagonal().sum()) / (nq * (nq - 1))
        keys.append(float(intra + cos[q][:, f].mean()))
    return np.asarray(keys)


def _measure(way: str, frame: pd.DataFrame, token_budget: int, queue) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from verl_gain.model_sources import resolve_model
    from verl_gain.scoring.scorer import ScoreConfig, score_dataset
    from verl_gain.scoring.segments import PromptSegmenter

    model_dir = resolve_model(MODEL)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    segmenter = PromptSegmenter(tokenizer, model_type=model.config.model_type)
    prompts = [segmenter(p) for p in frame["prompt"]] if way != "score" else None
    with torch.inference_mode():  # warm-up: first-call allocations and kernel selection, for every way alike
        model(input_ids=torch.tensor([[1, 2, 3, 4]]), use_cache=False)
    exact_peak = _reset_peak()
    base = _rss_mib()
    cpu_started = time.process_time()
    started = time.perf_counter()
    keys = None
    if way in ("bare", "bare_keep1"):
        _bare(model, prompts, token_budget, keep_one=way == "bare_keep1")
    elif way == "score":
        with tempfile.TemporaryDirectory() as tmp:
            config = ScoreConfig(token_budget=token_budget)
            result = score_dataset(
                frame, MODEL, Path(tmp) / "scores.parquet", config, progress=False, loaded=(model, tokenizer)
            )
            keys = result.scores["key"].to_numpy()
    else:
        keys = _naive(model, prompts)
    seconds = time.perf_counter() - started
    cpu_seconds = time.process_time() - cpu_started
    tokens = sum(len(p) for p in prompts) if prompts else int(result.scores["n_tokens"].sum())
    queue.put((seconds, _peak_mib() - base, exact_peak, tokens, keys, cpu_seconds))


def run_way(way: str, frame: pd.DataFrame, token_budget: int):
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_measure, args=(way, frame, token_budget, queue))
    proc.start()
    out = queue.get()
    proc.join()
    return out


LABELS = {
    "bare": "(1)  bare forward, full logits",
    "bare_keep1": "(1') bare forward, logits_to_keep=1",
    "score": "(2)  verl-gain score",
    "score_small": "(2)  verl-gain score, 1/4 of prompts",
    "naive": "(3)  naive: 1 per pass, kept, L x L",
}


def bench(title: str, frame: pd.DataFrame, token_budget: int) -> dict[str, tuple]:
    print(f"\n{title}: {len(frame)} prompts, token budget {token_budget}", flush=True)
    results = {}
    for way in ("bare", "bare_keep1", "score", "naive"):
        results[way] = run_way(way, frame, token_budget)
    results["score_small"] = run_way("score", frame.iloc[: max(1, len(frame) // 4)], token_budget)
    tokens = results["bare"][3]
    print(f"  {tokens:,} prompt tokens ({tokens / len(frame):.0f} per prompt)")
    print(
        f"  {'way':<38} {'wall s':>7} {'CPU s':>7} {'tok/s':>6} {'peak MiB':>8} "
        f"{'wall/(1)':>8} {'CPU/(1)':>7} {'CPU/(1p)':>8} {'mem/(2)':>7}"
    )
    for way in ("bare", "bare_keep1", "score", "score_small", "naive"):
        seconds, peak, _, n_tokens, _, cpu = results[way]
        print(
            f"  {LABELS[way]:<38} {seconds:7.1f} {cpu:7.1f} {n_tokens / seconds:6.0f} {peak:8.0f} "
            f"{seconds / results['bare'][0]:8.2f} {cpu / results['bare'][5]:7.2f} "
            f"{cpu / results['bare_keep1'][5]:8.2f} {peak / max(results['score'][1], 1.0):7.1f}"
        )
    gap = np.abs(results["score"][4] - results["naive"][4]).max()
    print(f"  max |key (2) - key (3)| = {gap:.2e}")
    assert gap < 1e-4, "the scorer and the naive procedure disagree"
    if not results["score"][2]:
        print("  (peak memory is the lifetime ru_maxrss here: /proc/self/clear_refs was not writable)")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="GSM8K train parquet (verl format)")
    parser.add_argument("--short", type=int, default=256, help="GSM8K prompts as they are")
    parser.add_argument("--long", type=int, default=16, help="GSM8K prompts behind an 8-shot prefix (0: skip)")
    parser.add_argument("--token-budget", type=int, default=None, help="tokens per batch (default: the scorer's)")
    args = parser.parse_args()
    if not args.data.is_file():
        sys.exit(f"{args.data} not found; pass --data with a verl-format GSM8K train parquet")
    import torch

    from verl_gain.scoring.constants import DEFAULT_TOKEN_BUDGET

    budget = args.token_budget or DEFAULT_TOKEN_BUDGET
    print(f"SmolLM2-135M-Instruct, fp32, torch {torch.__version__}, {torch.get_num_threads()} threads")
    short, long = gsm8k_frames(args.data, args.short, args.long)
    bench("GSM8K prompts", short, budget)
    if args.long:
        bench(f"GSM8K prompts behind a {FEW_SHOTS}-shot prefix", long, budget)


if __name__ == "__main__":
    main()
