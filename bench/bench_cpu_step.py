"""Benchmark of the CPU backend (not a test): each phase of verl's GRPO step against its floor, SmolLM2-135M-Instruct.

Runs ``python -m verl_gain.main trainer.device=cpu`` (V1 sync trainer, GAIN on, reference model with KL loss, the hf
rollout backend) on GSM8K prompts for a few steps, reads verl's own timing metrics per step (``gen``,
``old_log_prob``, ``ref``, ``update_actor``, ``update_weights``, ``step``) and times the GAIN pre-pass. Then, in this
process and on the same tokens (the last step's prompts and responses, from verl's rollout dump; a floor costs about
what its phase costs, so one step is measured), it measures each phase's floor: the same work done by the plainest
PyTorch code, as the run's topology does it (each trainer worker and each rollout server is one process with one
torch thread, Ray's default, all in parallel, so a floor is the slowest worker's share on one thread):

| phase | floor |
|---|---|
| gen | the server's decode loop alone (``verl_gain.cpu.decoding``: one prefill per distinct prompt, one cached
  forward per token on a static KV cache), greedy, each row exactly its response's length: no Ray, no batching
  wait, no sampling |
| old_log_prob, ref | a bare forward (no grad) of the worker's rows in the run's micro-batches, response log-probs |
| update_actor | forward + backward of the same micro-batches, one AdamW step |
| update_weights | one copy of every parameter into another model's tensors |
| pre-pass | a bare forward (no grad, no LM head) of the worker's training prompts in the run's micro-batches |

A floor is the fastest of ``--floor-repeats`` measurements (the machine is shared; the 1-minute load average at the
run's start and end and after the floors is recorded next to the numbers). The ratio time / floor is the overhead to
drive down. Responses are re-tokenised from the dump's text (an end token
appended where the response stopped early), so a row's length can be off by a token; prompts are tokenised with
the chat template exactly as verl's agent loop does.

Usage: python bench/bench_cpu_step.py [--steps 3] [--prompts 8] [--rollouts 4] [--response-length 128]
                                      [--workers 2] [--workers-per-server 1] [--micro-batch 2] [--label NAME]
                                      [--floor-repeats 2] [--precision auto|bf16|fp32]
                                      [--data ../shared/data/gsm8k/train.parquet]
                                      [--set KEY=VALUE ...]

``--label NAME`` writes the numbers to ``bench/results/cpu_step/NAME.json``. Memory: ~4 GB per trainer worker and
~1.8 GB per rollout server during the run, ~3 GB for the floors afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from verl_gain.cpu.decoding import DECODE_ATTENTION, StaticCacheDecoder, register_decode_attention
from verl_gain.cpu.sampling import SamplingKey
from verl_gain.demo.launcher import run_main  # the same subprocess runner and metrics reader as the demo and e2e tests
from verl_gain.inference import AUTO, PRECISIONS, pad_rows, resolve_cpu_precision
from verl_gain.model_sources import SMOLLM2_NAME, resolve_model

REPO_ROOT = Path(__file__).resolve().parents[1]

DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "gsm8k" / "train.parquet"
RESULTS_DIR = REPO_ROOT / "bench" / "results" / "cpu_step"
MAX_PROMPT_LENGTH = 256
"""GSM8K prompts under SmolLM2's chat template are ~110 tokens on average, 161 at most over the first 64."""
PHASES = ("gen", "old_log_prob", "ref", "update_actor", "update_weights")
"""verl's timed phases that have a floor (``timing_s/<phase>``); ``adv`` (advantages, milliseconds) has none."""
PREPASS = "prepass"
PREPASS_START = "GAIN pre-pass: scoring"
PREPASS_END = "GAIN scores written to"
"""Lines the trainer prints around the pre-pass (``verl_gain/trainer/prepass.py``); their arrival times bound it."""
THREADS_PER_PROCESS = 1
"""Torch threads of each trainer worker and rollout server in a CPU run (Ray's default for an actor)."""
TIMEOUT_S = 3600.0
FLOOR_ATTENTION = "sdpa"
"""Attention of the floors' forwards (the trainer's on CPU)."""
GREEDY = SamplingKey(
    do_sample=False, temperature=0.0, top_p=1.0, top_k=0, repetition_penalty=1.0, ignore_eos=True, want_log_probs=False
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--prompts", type=int, default=8, help="prompts per step (data.train_batch_size)")
    parser.add_argument("--rollouts", type=int, default=4, help="responses per prompt (rollout.n)")
    parser.add_argument("--response-length", type=int, default=128)
    parser.add_argument("--workers", type=int, default=2, help="trainer workers (FSDP ranks)")
    parser.add_argument(
        "--workers-per-server",
        type=int,
        default=1,
        help="trainer workers per hf rollout server (rollout tensor_model_parallel_size): 1 = one server per worker "
        "(parallel generation), --workers = one server (less memory)",
    )
    parser.add_argument("--micro-batch", type=int, default=2, help="micro-batch size per worker (memory)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="a verl-format GSM8K parquet file")
    parser.add_argument("--model", default=SMOLLM2_NAME)
    parser.add_argument(
        "--precision",
        default=AUTO,
        choices=PRECISIONS,
        help="the run's cpu.precision and the floors' dtype (auto: bf16 where the CPU has bf16 instructions)",
    )
    parser.add_argument("--floor-repeats", type=int, default=2, help="measurements per floor (the fastest counts)")
    parser.add_argument("--label", help="write the results to bench/results/cpu_step/LABEL.json")
    parser.add_argument(
        "--set", dest="extra", action="append", default=[], metavar="KEY=VALUE", help="another trainer override"
    )
    args = parser.parse_args(argv)
    if args.workers % args.workers_per_server:
        parser.error(f"--workers-per-server {args.workers_per_server} must divide --workers {args.workers}")
    if args.floor_repeats < 1:
        parser.error(f"--floor-repeats must be >= 1, got {args.floor_repeats}")
    if not args.data.is_file():
        parser.error(f"--data {args.data} does not exist: give a verl-format GSM8K parquet file")
    return args


def overrides(args: argparse.Namespace, model: Path, data: Path, run_dir: Path) -> list[str]:
    return [
        "trainer.device=cpu",
        f"trainer.n_gpus_per_node={args.workers}",
        f"trainer.total_training_steps={args.steps}",
        "trainer.total_epochs=100",
        "trainer.logger=[console,file]",
        "trainer.val_before_train=false",
        "trainer.test_freq=-1",
        "trainer.save_freq=-1",
        "trainer.resume_mode=disable",
        f"trainer.default_local_dir={run_dir / 'checkpoints'}",
        f"trainer.rollout_data_dir={run_dir / 'rollouts'}",
        "trainer.project_name=verl_gain_bench",
        "trainer.experiment_name=cpu_step",
        f"data.train_files={data}",
        f"data.val_files={data}",
        f"data.train_batch_size={args.prompts}",
        f"data.max_prompt_length={MAX_PROMPT_LENGTH}",
        f"data.max_response_length={args.response_length}",
        "data.filter_overlong_prompts=true",
        "data.shuffle=false",
        "algorithm.adv_estimator=grpo",
        f"actor_rollout_ref.model.path={model}",
        "actor_rollout_ref.actor.optim.lr=1e-6",
        f"actor_rollout_ref.actor.ppo_mini_batch_size={args.prompts}",
        f"actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu={args.micro_batch}",
        "actor_rollout_ref.actor.use_kl_loss=true",
        "actor_rollout_ref.actor.kl_loss_coef=0.001",
        f"actor_rollout_ref.rollout.n={args.rollouts}",
        f"actor_rollout_ref.rollout.tensor_model_parallel_size={args.workers_per_server}",
        f"actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu={args.micro_batch}",
        f"actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu={args.micro_batch}",
        "+ray_kwargs.ray_init.include_dashboard=false",
        "gain.enable=true",  # the pre-pass runs before the first step
        f"cpu.precision={args.precision}",
        *args.extra,
    ]


# --- the run --------------------------------------------------------------------------------------------------------


class LineClock:
    """Echoes a run's output and notes when the first line containing each marker arrived (seconds, perf_counter)."""

    def __init__(self, markers: Sequence[str]):
        self.markers = markers
        self.seen: dict[str, float] = {}

    def __call__(self, line: str) -> None:
        print(line, end="", flush=True)
        for marker in self.markers:
            if marker in line and marker not in self.seen:
                self.seen[marker] = time.perf_counter()


@dataclass
class StepRows:
    """The rows of one training step: token ids of each prompt and of its response."""

    step: int
    prompts: list[list[int]]
    responses: list[list[int]]


def chat_prompt_ids(tokenizer, messages) -> list[int]:
    """A prompt as verl's agent loop tokenises it: the chat template with the generation prompt."""
    encoded = tokenizer.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=True)
    return list(encoded["input_ids"] if isinstance(encoded, Mapping) else encoded)


def rows_of_steps(dump_dir: Path, data: pd.DataFrame, tokenizer, max_response: int) -> list[StepRows]:
    """Each step's rows from verl's rollout dump (``trainer.rollout_data_dir``: decoded text, one file per step).

    Prompts are matched to the data's rows by their decoded text; responses are re-tokenised, with the end token
    appended when the response is shorter than the budget (the dump drops special tokens).
    """
    prompt_ids = {}
    for messages in data["prompt"]:
        ids = chat_prompt_ids(tokenizer, messages)
        prompt_ids[tokenizer.decode(ids, skip_special_tokens=True)] = ids
    steps = []
    for path in sorted(dump_dir.glob("*.jsonl"), key=lambda p: int(p.stem)):
        records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        prompts, responses = [], []
        for record in records:
            if record["input"] not in prompt_ids:
                raise RuntimeError(f"step {path.stem}: a dumped prompt matches no data row: {record['input'][:80]!r}")
            response = tokenizer.encode(record["output"], add_special_tokens=False)[:max_response]
            if len(response) < max_response:
                response.append(tokenizer.eos_token_id)
            prompts.append(prompt_ids[record["input"]])
            responses.append(response)
        steps.append(StepRows(int(path.stem), prompts, responses))
    return steps


# --- floors -----------------------------------------------------------------------------------------------------------


FLOOR_REPEATS = 1
"""Measurements per floor, the fastest kept (``main`` sets it from ``--floor-repeats``)."""


def timed(work: Callable[..., object], *args: object, threads: int = THREADS_PER_PROCESS) -> float:
    """Seconds ``work(*args)`` takes with ``threads`` torch threads: the fastest of ``FLOOR_REPEATS`` runs.

    ``work`` must leave its inputs as it found them (the update floor's AdamW steps are the exception: a step of
    lr 1e-6 does not change what the next one costs)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        seconds = []
        for _ in range(FLOOR_REPEATS):
            started = time.perf_counter()
            work(*args)
            seconds.append(time.perf_counter() - started)
        return min(seconds)
    finally:
        torch.set_num_threads(previous)


def shares(lengths: Sequence[int], parts: int) -> list[list[int]]:
    """Row indices split into ``parts`` shares of near-equal token count (verl balances its ranks' sequence lengths
    the same greedy way: longest row to the lightest share), each share in the original row order."""
    loads = [0] * parts
    assigned: list[list[int]] = [[] for _ in range(parts)]
    for index in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        lightest = loads.index(min(loads))
        assigned[lightest].append(index)
        loads[lightest] += lengths[index]
    return [sorted(share) for share in assigned]


def micro_batches(rows: Sequence[int], size: int) -> list[list[int]]:
    return [list(rows[start : start + size]) for start in range(0, len(rows), size)]


def sequence_batch(prompts, responses, rows, pad_id) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(input_ids, attention_mask, response_mask)`` [b, L] of prompt + response, right-padded to the longest."""
    sequences = [prompts[i] + responses[i] for i in rows]
    ids = pad_rows(sequences, pad_id, left=False)  # [b, L]
    attention = pad_rows([[1] * len(s) for s in sequences], 0, left=False)  # [b, L]
    response = pad_rows([[0] * len(prompts[i]) + [1] * len(responses[i]) for i in rows], 0, left=False)  # [b, L]
    return ids, attention, response


def response_log_probs(model, ids, attention, response_mask) -> torch.Tensor:
    """Sum of log pi(y_t) over the response tokens of a micro-batch (scalar)."""
    logits = model(input_ids=ids, attention_mask=attention).logits[:, :-1].float()  # [b, L-1, V]
    log_probs = torch.log_softmax(logits, dim=-1).gather(2, ids[:, 1:, None]).squeeze(2)  # [b, L-1]
    return (log_probs * response_mask[:, 1:]).sum()


def forward_floor(model, rows: StepRows, workers: int, micro: int, pad_id: int) -> float:
    """Slowest worker's bare forward (no grad) over its micro-batches, response log-probs included."""
    lengths = [len(p) + len(r) for p, r in zip(rows.prompts, rows.responses)]

    def work(share):
        with torch.no_grad():
            for batch in micro_batches(share, micro):
                response_log_probs(model, *sequence_batch(rows.prompts, rows.responses, batch, pad_id))

    return max(timed(work, share) for share in shares(lengths, workers))


def update_floor(model, optimizer, rows: StepRows, workers: int, micro: int, pad_id: int) -> float:
    """Slowest worker's forward + backward over its micro-batches and one AdamW step (one mini-batch per step)."""
    lengths = [len(p) + len(r) for p, r in zip(rows.prompts, rows.responses)]
    tokens = sum(len(r) for r in rows.responses)

    def work(share):
        for batch in micro_batches(share, micro):
            loss = -response_log_probs(model, *sequence_batch(rows.prompts, rows.responses, batch, pad_id)) / tokens
            loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return max(timed(work, share) for share in shares(lengths, workers))


def decode_floor(model, rows: StepRows, servers: int, pad_id: int) -> tuple[float, int]:
    """Slowest server's decode loop alone over its share of the requests (``StaticCacheDecoder``: one prefill per
    distinct prompt, then one cached forward per token), greedy, each row exactly its response's length.

    Returns (seconds, decode steps of that share).
    """
    register_decode_attention()
    model.set_attn_implementation(DECODE_ATTENTION)
    decoder = StaticCacheDecoder(model, pad_id)
    lengths = [len(r) for r in rows.responses]
    results = []
    try:
        for share in shares(lengths, servers):
            prompts = [rows.prompts[i] for i in share]
            budgets = [lengths[i] for i in share]

            def work(prompts=prompts, budgets=budgets):
                generators = [torch.Generator() for _ in prompts]  # greedy draws nothing from them
                decoder.decode(prompts, budgets, GREEDY, generators, eos_token_ids=[])

            results.append((timed(work), max(budgets)))
    finally:
        model.set_attn_implementation(FLOOR_ATTENTION)
    return max(results)


def copy_floor(model) -> float:
    """One copy of every parameter into another set of tensors (what loading a state dict must at least do)."""
    source = [p.detach().clone() for p in model.state_dict().values()]
    target = [torch.empty_like(p) for p in source]
    return timed(lambda: [t.copy_(s) for t, s in zip(target, source)])


def prepass_floor(model, prompts: list[list[int]], workers: int, micro: int, pad_id: int) -> float:
    """Slowest worker's bare forward of the base model (no LM head: the pre-pass needs hidden states) over its share
    of the training prompts, longest first, in micro-batches."""
    lengths = [len(p) for p in prompts]

    def work(share):
        ordered = sorted(share, key=lambda i: -lengths[i])
        with torch.no_grad():
            for batch in micro_batches(ordered, micro):
                sequences = [prompts[i] for i in batch]
                ids = pad_rows(sequences, pad_id, left=False)  # [b, L]
                attention = pad_rows([[1] * len(s) for s in sequences], 0, left=False)  # [b, L]
                model.model(input_ids=ids, attention_mask=attention)

    return max(timed(work, share) for share in shares(lengths, workers))


def measure_floors(args, model_path: Path, data: pd.DataFrame, steps: list[StepRows]) -> dict[str, dict]:
    """``{step: {phase: floor seconds}}`` (and ``{"prepass": seconds}``) for the run's steps."""
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    dtype = resolve_cpu_precision(args.precision, setting="--precision").dtype
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype, attn_implementation=FLOOR_ATTENTION)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6)
    servers = args.workers // args.workers_per_server
    floors: dict[str, dict] = {}
    prompts = [chat_prompt_ids(tokenizer, messages)[-MAX_PROMPT_LENGTH:] for messages in data["prompt"]]
    model.eval()
    floors[PREPASS] = prepass_floor(model, prompts, args.workers, args.micro_batch, pad_id)
    print(f"[bench] floor of the pre-pass ({len(prompts)} prompts): {floors[PREPASS]:.2f} s", flush=True)
    for rows in steps:
        model.eval()
        forward = forward_floor(model, rows, args.workers, args.micro_batch, pad_id)
        gen, decode_steps = decode_floor(model, rows, servers, pad_id)
        model.train()
        update = update_floor(model, optimizer, rows, args.workers, args.micro_batch, pad_id)
        floors[str(rows.step)] = {
            "gen": gen,
            "gen_decode_steps": decode_steps,
            "old_log_prob": forward,
            "ref": forward,  # the reference model is the actor's architecture on the same rows
            "update_actor": update,
            "update_weights": copy_floor(model),
        }
        print(f"[bench] floors of step {rows.step}: {floors[str(rows.step)]}", flush=True)
    return floors


# --- the report -------------------------------------------------------------------------------------------------------


def report(times: dict[str, dict], floors: dict[str, dict], steps: list[str]) -> str:
    """Every phase's time per step, and next to it the floor and the ratio time / floor where a floor was measured."""
    lines = [f"{'step':>5} {'phase':>15} {'time s':>9} {'floor s':>9} {'ratio':>7}"]
    lines.append(row("-", PREPASS, times[PREPASS], floors.get(PREPASS)))
    for step in steps:
        for phase in PHASES:
            lines.append(row(step, phase, times[step][phase], floors.get(step, {}).get(phase)))
        lines.append(row(step, "whole step", times[step]["step"], None))
    return "\n".join(lines)


def row(step: str, phase: str, time_s: float, floor_s: float | None) -> str:
    if floor_s is None:
        return f"{step:>5} {phase:>15} {time_s:9.2f}"
    return f"{step:>5} {phase:>15} {time_s:9.2f} {floor_s:9.2f} {time_s / floor_s:7.1f}"


def write_result(directory: Path, label: str, script: str, argv: list[str] | None, record: dict) -> Path:
    """``directory/label.json``: ``record`` with the label, the command that made it and the machine."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{label}.json"
    arguments = argv if argv is not None else sys.argv[1:]
    header = {
        "label": label,
        "command": f"python bench/{script} " + " ".join(arguments),
        "machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "torch": torch.__version__},
    }
    path.write_text(json.dumps({**header, **record}, indent=2) + "\n")
    print(f"[bench] results written to {path}")
    return path


def cpu_name() -> str:
    """The CPU's model name (Linux ``/proc/cpuinfo``), else the architecture."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.machine()


def main(argv: list[str] | None = None) -> int:
    global FLOOR_REPEATS
    args = parse_args(argv)
    FLOOR_REPEATS = args.floor_repeats
    model = resolve_model(args.model)
    started = time.perf_counter()
    loads = {"run_start": os.getloadavg()[0]}  # 1-minute load averages: how busy the shared machine was
    with tempfile.TemporaryDirectory(prefix="verl-gain-bench-") as tmp:
        tmp = Path(tmp)
        data_path = tmp / "gsm8k.parquet"
        data = pd.read_parquet(args.data).head(args.prompts * args.steps)
        data.to_parquet(data_path)
        print(
            f"[bench] {args.steps} steps x {args.prompts} prompts x {args.rollouts} rollouts x "
            f"{args.response_length} tokens, {args.workers} workers, model {model}",
            flush=True,
        )
        clock = LineClock([PREPASS_START, PREPASS_END])
        result = run_main(overrides(args, model, data_path, tmp), tmp / "metrics.jsonl", TIMEOUT_S, echo=clock)
        result.check()
        loads["run_end"] = os.getloadavg()[0]
        run_seconds = result.seconds
        logged = [entry for entry in result.steps if "timing_s/step" in entry["data"]]
        times: dict[str, dict] = {
            str(e["step"]): {name: e["data"][f"timing_s/{name}"] for name in (*PHASES, "step")} for e in logged
        }
        if PREPASS_START not in clock.seen or PREPASS_END not in clock.seen:
            raise RuntimeError(f"the run's output has no {PREPASS_START!r} / {PREPASS_END!r} lines: no pre-pass ran")
        times[PREPASS] = clock.seen[PREPASS_END] - clock.seen[PREPASS_START]
        tokenizer = AutoTokenizer.from_pretrained(model)
        steps = rows_of_steps(tmp / "rollouts", data, tokenizer, args.response_length)
    floors = measure_floors(args, model, data, steps[-1:])
    loads["floors_end"] = os.getloadavg()[0]
    step_names = [str(s.step) for s in steps if str(s.step) in times]
    table = report(times, floors, step_names)
    table += "\n1-minute load average: " + ", ".join(f"{name} {load:.1f}" for name, load in loads.items())
    bench_seconds = time.perf_counter() - started
    print(f"\nwall time of the run (start-up included): {run_seconds:.1f} s; whole bench {bench_seconds:.1f} s")
    print(table)
    if args.label:
        record = {
            "run_seconds": run_seconds,
            "load_average_1min": loads,
            "floor_repeats": args.floor_repeats,
            "times_s": times,
            "floors_s": floors,
            "response_tokens": {str(s.step): sum(len(r) for r in s.responses) for s in steps},
            "table": table,
        }
        write_result(RESULTS_DIR, args.label, Path(__file__).name, argv, record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
