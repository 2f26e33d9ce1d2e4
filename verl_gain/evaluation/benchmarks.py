"""pass@1 of checkpoints on benchmarks prepared by the recipes, scored by the training rewards (``verl-gain eval``).

Each benchmark is a verl-format parquet file written by a recipe's prepare script (GSM8K test, MATH-500, AMC, AIME
2024, Minerva, OlympiadBench, HumanEval(+), LiveCodeBench), so evaluation sees exactly the prompts training and the
GAIN pre-pass see. Prompts go through the checkpoint's chat template (``add_generation_prompt``, as verl's rollout
tokenises them), generation runs with Hugging Face ``generate`` on CPU or GPU, and every response is scored by
``verl_gain.rewards.auto.compute_score`` (math-verify for math, the sandbox for code).

pass@1 = the mean 0/1 ``acc`` over all samples of a benchmark (with ``n_samples`` > 1 and a temperature, the unbiased
pass@1 estimate: the mean over samples of each problem, then over problems). Output, per run: ``results.json``
(summary per checkpoint and benchmark), ``results.md`` (a table per checkpoint and one across checkpoints) and
``samples.jsonl`` (every response with its verdict).

A checkpoint is a Hugging Face model folder or a verl checkpoint folder (``verl_gain/evaluation/checkpoints.py``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# File names written into the output folder.
RESULTS_JSON = "results.json"
RESULTS_MARKDOWN = "results.md"
SAMPLES_JSONL = "samples.jsonl"
# Split names that say nothing about the benchmark: the folder name is used instead (gsm8k/test.parquet -> gsm8k).
GENERIC_STEMS = ("test", "validation", "val", "eval")


@dataclass
class EvalConfig:
    """How to generate and score.

    max_new_tokens: response length limit in tokens (match the training run's ``data.max_response_length``).
    batch_size: prompts per ``generate`` call.
    n_samples: responses per prompt; pass@1 averages over them.
    temperature: 0 means greedy decoding (then ``n_samples`` must be 1); > 0 samples with ``top_p``.
    limit: evaluate only the first N problems of each benchmark (None: all).
    device: ``auto`` (cuda when available), ``cpu`` or ``cuda``.
    dtype: ``auto`` (bfloat16 on cuda or on a CPU with bf16 instructions, else float32), ``float32``, ``bfloat16``
        or ``float16``.
    score_workers: threads running code sandboxes in parallel (math is scored in the calling thread).
    seed: sampling seed.
    cpu_threads: torch's CPU threads (None: torch's default). On a busy machine 1 can be many times faster: idle
        threads spin waiting for each other.
    trust_remote_code: run a model folder's own code (``auto_map``), as verl's
        ``actor_rollout_ref.model.trust_remote_code``.
    """

    max_new_tokens: int = 1024
    batch_size: int = 8
    n_samples: int = 1
    temperature: float = 0.0
    top_p: float = 1.0
    limit: int | None = None
    device: str = "auto"
    dtype: str = "auto"
    score_workers: int = 4
    seed: int = 0
    cpu_threads: int | None = None
    trust_remote_code: bool = False

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.n_samples < 1:
            raise ValueError(f"n_samples must be >= 1, got {self.n_samples}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0 (0 = greedy), got {self.temperature}")
        if self.temperature == 0 and self.n_samples > 1:
            raise ValueError(
                "greedy decoding (temperature 0) gives identical samples: set --temperature > 0 or --n-samples 1"
            )
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be >= 1 or None, got {self.limit}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be auto, cpu or cuda, got {self.device!r}")
        if self.dtype not in ("auto", "float32", "bfloat16", "float16"):
            raise ValueError(f"dtype must be auto, float32, bfloat16 or float16, got {self.dtype!r}")
        if self.score_workers < 1:
            raise ValueError(f"score_workers must be >= 1, got {self.score_workers}")
        if self.cpu_threads is not None and self.cpu_threads < 1:
            raise ValueError(f"cpu_threads must be >= 1 or None, got {self.cpu_threads}")


@dataclass
class Benchmark:
    """A benchmark: its name in the tables and its verl-format rows."""

    name: str
    path: Path
    rows: list[dict] = field(repr=False)


@dataclass
class BenchmarkResult:
    name: str
    problems: int
    samples: int
    pass_at_1: float
    mean_response_tokens: float
    truncated_fraction: float
    generate_seconds: float
    score_seconds: float


def benchmark_name(path: Path) -> str:
    """The table name of a benchmark file: its stem, or its folder's name for a generic stem (gsm8k/test.parquet)."""
    return path.parent.name if path.stem.lower() in GENERIC_STEMS and path.parent.name else path.stem


def load_benchmark(spec: str, limit: int | None = None) -> Benchmark:
    """A benchmark from ``PATH`` or ``NAME=PATH`` (a parquet file a recipe's prepare script wrote)."""
    import pandas as pd

    name, _, path_text = spec.rpartition("=") if "=" in spec else ("", "", spec)
    path = Path(path_text).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"benchmark file {path} does not exist: run the recipe's prepare.py first")
    try:
        frame = pd.read_parquet(path)
    except (OSError, ValueError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(
            f"cannot read benchmark file {path} ({reason}): write it again with recipes/prepare_*.py"
        ) from None
    missing = {"data_source", "prompt", "reward_model"} - set(frame.columns)
    if missing:
        raise ValueError(f"{path} lacks verl columns {sorted(missing)}: write it with a recipes/*/prepare.py script")
    if limit is not None:
        frame = frame.head(limit)
    if len(frame) == 0:
        raise ValueError(f"benchmark file {path} holds no problems: write it again with recipes/prepare_*.py")
    rows = frame.to_dict(orient="records")
    return Benchmark(name or benchmark_name(path), path, rows)


def _torch_setup(config: EvalConfig) -> tuple[Any, Any]:
    import torch

    from verl_gain.inference import resolve_device, resolve_dtype

    device = resolve_device(config.device)
    if config.cpu_threads is not None:
        torch.set_num_threads(config.cpu_threads)
    return device, resolve_dtype(config.dtype, device)


def generate_responses(
    model: Any, tokenizer: Any, prompts: Sequence[list[dict]], config: EvalConfig, device: str
) -> list[list[tuple[str, int, bool]]]:
    """``n_samples`` responses per prompt as (text, response tokens, truncated), in prompt order.

    Prompts are tokenised by the chat template (``add_generation_prompt``), batched by length and left-padded.
    """
    import torch
    from tqdm import tqdm

    from verl_gain.inference import cut_at_end, left_padded

    encoded = [tokenizer.apply_chat_template(list(p), add_generation_prompt=True, return_dict=False) for p in prompts]
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    eos_ids = {i for i in [tokenizer.eos_token_id, *_as_list(model.generation_config.eos_token_id)] if i is not None}
    results: list[list[tuple[str, int, bool]]] = [[] for _ in prompts]
    generator_kwargs: dict[str, Any] = {"max_new_tokens": config.max_new_tokens, "pad_token_id": pad_id}
    if eos_ids:
        generator_kwargs["eos_token_id"] = sorted(eos_ids)
    if config.temperature > 0:
        generator_kwargs.update(do_sample=True, temperature=config.temperature, top_p=config.top_p)
    else:
        generator_kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
    torch.manual_seed(config.seed)
    batches = [order[start : start + config.batch_size] for start in range(0, len(order), config.batch_size)]
    for batch in tqdm(batches, desc="generate", unit="batch", leave=False):
        input_ids, attention_mask = left_padded([encoded[i] for i in batch], pad_id)  # [B, L] each
        with torch.no_grad():
            output = model.generate(
                input_ids=input_ids.to(device),
                attention_mask=attention_mask.to(device),
                num_return_sequences=config.n_samples,
                **generator_kwargs,
            )  # [B * n_samples, L + T]
        new_tokens = output[:, input_ids.shape[1] :].cpu()  # [B * n_samples, T]
        for flat, tokens in enumerate(new_tokens.tolist()):
            kept, truncated = cut_at_end(tokens, eos_ids)  # up to and including the end-of-turn token
            text = tokenizer.decode(kept, skip_special_tokens=True)
            results[batch[flat // config.n_samples]].append((text, len(kept), truncated))
    return results


def _as_list(value: Any) -> list:
    if value is None:
        return []
    return list(value) if isinstance(value, list | tuple) else [value]


def default_reward() -> Callable[..., dict]:
    from verl_gain.rewards.auto import compute_score

    return compute_score


def score_responses(
    benchmark: Benchmark, responses: list[list[tuple[str, int, bool]]], workers: int, reward: Callable[..., dict]
) -> list[dict]:
    """One record per response: the reward's verdict with the response and its length."""
    jobs = [(index, sample) for index in range(len(responses)) for sample in range(len(responses[index]))]

    def score(job: tuple[int, int]) -> dict:
        index, sample = job
        row = benchmark.rows[index]
        text, tokens, truncated = responses[index][sample]
        extra = dict(row.get("extra_info") or {})
        verdict = reward(row["data_source"], text, row["reward_model"]["ground_truth"], extra)
        return {
            "benchmark": benchmark.name,
            "index": int(extra.get("index", index)),
            "sample": sample,
            "data_source": row["data_source"],
            "score": float(verdict["score"]),
            "acc": float(verdict.get("acc", verdict["score"])),
            "pred": str(verdict.get("pred", "")),
            "response_tokens": tokens,
            "truncated": truncated,
            "response": text,
        }

    # Code runs in sandboxes (seconds each, parallel in threads); math is checked in this thread, where math-verify's
    # signal timeouts work without the worker processes it needs elsewhere.
    from verl_gain.rewards import CODE_DATA_SOURCES

    threaded = [job for job in jobs if workers > 1 and benchmark.rows[job[0]]["data_source"] in CODE_DATA_SOURCES]
    records = {job: score(job) for job in jobs if job not in set(threaded)}
    if threaded:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            records.update(zip(threaded, pool.map(score, threaded)))
    return [records[job] for job in jobs]


def summarise(benchmark: Benchmark, records: list[dict], generate_s: float, score_s: float) -> BenchmarkResult:
    """pass@1 as the mean over problems of each problem's mean accuracy over its samples."""
    by_problem: dict[int, list[float]] = {}
    for record in records:
        by_problem.setdefault(record["index"], []).append(record["acc"])
    problems = len(by_problem)
    return BenchmarkResult(
        name=benchmark.name,
        problems=problems,
        samples=len(records),
        pass_at_1=sum(sum(a) / len(a) for a in by_problem.values()) / problems if problems else 0.0,
        mean_response_tokens=sum(r["response_tokens"] for r in records) / len(records) if records else 0.0,
        truncated_fraction=sum(r["truncated"] for r in records) / len(records) if records else 0.0,
        generate_seconds=generate_s,
        score_seconds=score_s,
    )


def evaluate_checkpoint(
    checkpoint: str | Path,
    benchmarks: Sequence[Benchmark],
    config: EvalConfig,
    reward: Callable[..., dict] | None = None,
) -> tuple[list[BenchmarkResult], list[dict]]:
    """Generate and score every benchmark with one checkpoint: its results and the per-response records."""
    import torch

    from verl_gain.evaluation.checkpoints import resolve_checkpoint
    from verl_gain.inference import load_causal_lm

    reward = reward or default_reward()
    folder = resolve_checkpoint(checkpoint)
    threads = torch.get_num_threads()  # restored afterwards: cpu_threads is for this evaluation only
    try:
        device, dtype = _torch_setup(config)
        tokenizer = load_tokenizer(folder, config.trust_remote_code)
        model = load_causal_lm(folder, dtype, trust_remote_code=config.trust_remote_code).to(device).eval()
        results, records = [], []
        for benchmark in benchmarks:
            start = time.perf_counter()
            prompts = [list(row["prompt"]) for row in benchmark.rows]
            responses = generate_responses(model, tokenizer, prompts, config, device)
            generated = time.perf_counter()
            scored = score_responses(benchmark, responses, config.score_workers, reward)
            done = time.perf_counter()
            results.append(summarise(benchmark, scored, generated - start, done - generated))
            for record in scored:
                record["checkpoint"] = str(checkpoint)
            records += scored
        del model
    finally:
        torch.set_num_threads(threads)
    return results, records


def load_tokenizer(folder: Path, trust_remote_code: bool = False) -> Any:
    """The checkpoint's tokenizer; a missing or damaged one is one line (``CheckpointError``)."""
    from transformers import AutoTokenizer

    from verl_gain.evaluation.checkpoints import CheckpointError
    from verl_gain.inference import remote_code_fix

    try:
        return AutoTokenizer.from_pretrained(folder, trust_remote_code=trust_remote_code)
    except Exception as error:  # transformers raises OSError, ValueError, KeyError... for a broken tokenizer folder
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(f"cannot load the tokenizer of {folder}: {first}{remote_code_fix(error)}") from None


def checkpoint_table(results: Sequence[BenchmarkResult]) -> str:
    """A markdown table of one checkpoint's results."""
    lines = [
        "| benchmark | problems | samples | pass@1 (%) | mean response tokens | truncated (%) | generate s | score s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r.name} | {r.problems} | {r.samples} | {100 * r.pass_at_1:.1f} | {r.mean_response_tokens:.0f} | "
            f"{100 * r.truncated_fraction:.1f} | {r.generate_seconds:.1f} | {r.score_seconds:.1f} |"
        )
    return "\n".join(lines)


def comparison_table(all_results: dict[str, list[BenchmarkResult]]) -> str:
    """pass@1 (%) with benchmarks as rows and checkpoints as columns."""
    names: list[str] = []
    for results in all_results.values():
        names += [r.name for r in results if r.name not in names]
    header = "| benchmark | " + " | ".join(all_results) + " |"
    lines = [header, "|---|" + "---:|" * len(all_results)]
    for name in names:
        cells = []
        for results in all_results.values():
            match = next((r for r in results if r.name == name), None)
            cells.append(f"{100 * match.pass_at_1:.1f}" if match else "-")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run_eval(
    checkpoints: Sequence[str],
    benchmark_specs: Sequence[str],
    output_dir: str | Path,
    config: EvalConfig,
    reward: Callable[..., dict] | None = None,
) -> dict[str, list[BenchmarkResult]]:
    """Evaluate every checkpoint on every benchmark; print the tables and write the output files.

    Every input is checked before the first model loads: the output folder, every benchmark file and every
    checkpoint (merged first where it is a verl checkpoint, its weight files complete). Samples are written to a
    ``.partial`` file renamed at the end, so a failed or interrupted run leaves no half-written output.
    """
    from verl_gain.evaluation.checkpoints import resolve_checkpoint
    from verl_gain.inference import check_model_weights
    from verl_gain.output_paths import check_output_dir

    output = check_output_dir(output_dir, "--output-dir")
    benchmarks = [load_benchmark(spec, config.limit) for spec in benchmark_specs]
    for checkpoint in checkpoints:
        check_model_weights(resolve_checkpoint(checkpoint))
    created = not output.exists()
    output.mkdir(parents=True, exist_ok=True)
    partial = output / f"{SAMPLES_JSONL}.partial"
    all_results: dict[str, list[BenchmarkResult]] = {}
    try:
        with open(partial, "w") as samples:
            for checkpoint in checkpoints:
                results, records = evaluate_checkpoint(checkpoint, benchmarks, config, reward)
                all_results[str(checkpoint)] = results
                for record in records:
                    samples.write(json.dumps(record) + "\n")
                print(f"\n## {checkpoint}\n\n{checkpoint_table(results)}\n", flush=True)
        partial.replace(output / SAMPLES_JSONL)
    except BaseException:
        partial.unlink(missing_ok=True)
        if created and not any(output.iterdir()):
            output.rmdir()
        raise
    markdown = [f"## {name}\n\n{checkpoint_table(results)}\n" for name, results in all_results.items()]
    markdown.append(f"## pass@1 (%) by checkpoint\n\n{comparison_table(all_results)}\n")
    (output / RESULTS_MARKDOWN).write_text("\n".join(markdown))
    summary = {
        "config": asdict(config),
        "benchmarks": {b.name: str(b.path) for b in benchmarks},
        "results": {name: [asdict(r) for r in results] for name, results in all_results.items()},
    }
    (output / RESULTS_JSON).write_text(json.dumps(summary, indent=2))
    print(f"wrote {output / RESULTS_JSON}, {output / RESULTS_MARKDOWN}, {output / SAMPLES_JSONL}", flush=True)
    return all_results
