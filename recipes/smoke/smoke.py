"""The GAIN smoke test: preflight checks, short GAIN runs of the gsm8k recipe on verl's V1 and legacy trainers, on 1
and 2 GPUs, a resume, the pre-pass against ``verl-gain score``, and ``gain.enable=False`` against verl itself; one
PASS / FAIL / SKIP table at the end (exit code 0 when nothing failed).

    bash recipes/smoke/gpu_smoke.sh                       # what users run (this script, with the environment below)
    python recipes/smoke/smoke.py --help

On a machine without GPUs it runs on verl-gain's CPU backend (the device choice of ``python -m verl_gain.main``):
small sizes, V1 on 2 data-parallel workers and legacy on 1, every check that needs a GPU (vLLM, flash-attention,
GPU count, bf16) skipped with its reason. CI runs it that way on a tiny model (tests/recipes/test_gpu_smoke.py).

Checks, in order (a run's checks are skipped when the run failed):

- preflight: verl importable (the supported release), vLLM importable, GPUs visible, the model resolvable (a local
  folder or a hub id, downloaded once when the hub is reachable, else from the Hugging Face cache), the data present,
  flash-attention importable (else the runs fall back to sdpa attention, without remove-padding);
- runs: V1 and legacy GAIN runs of ``--steps`` steps on each GPU count, a finite ``gain/step_angle`` on every step;
- the first V1 run's pre-pass keys rank the prompts as ``verl-gain score`` does (Spearman >= 0.999);
- the first V1 run resumed from step 1 in a fresh process continues the curriculum (the uninterrupted run's batch);
- ``python -m verl_gain.main gain.enable=False`` hands verl's ``run_ppo`` the config ``python -m
  verl.trainer.main_ppo`` does (``resolved_config.py``; on CPU resolved for ``trainer.device=cuda``).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
if str(REPO) not in sys.path:  # run as a script: the checks live next to it
    sys.path.insert(0, str(REPO))

from recipes.smoke.check_smoke import (  # noqa: E402
    SMOKE_RESUMED_FROM,
    CheckFailed,
    check_runs,
    finite_step_angles,
    prepass_agrees_with_scorer,
)

SETUP = "gsm8k_qwen2.5-0.5b-instruct"
DEFAULT_MODEL = "Qwen/Qwen2.5-0.5B-Instruct"
DEFAULT_DATA_DIR = Path("~/data/verl-gain/gsm8k").expanduser()
PREPARE_HINT = "python recipes/prepare_math.py gsm8k"
GPU_SUBSET_ROWS = 512
"""Training prompts the GPU runs use (the first rows of the file): enough for the rank correlation, a short pre-pass."""
RUN_TIMEOUT_S = 3600.0
PASS, FAIL, SKIP = "PASS", "FAIL", "SKIP"


@dataclass(frozen=True)
class Sizes:
    """A run's size on one kind of machine."""

    prompts_per_step: int
    rollouts_per_prompt: int
    response_length: int
    prompt_length: int
    dtype: str
    """``verl-gain score --dtype`` matching the actor's forward."""


GPU_SIZES = Sizes(prompts_per_step=16, rollouts_per_prompt=4, response_length=256, prompt_length=512, dtype="bfloat16")
CPU_SIZES = Sizes(prompts_per_step=4, rollouts_per_prompt=2, response_length=8, prompt_length=192, dtype="float32")
CPU_RUNS = (("v1", 2), ("legacy", 1))
"""(trainer, data-parallel workers) on the CPU backend: both trainers and both sizes, in two runs."""


@dataclass
class Table:
    """The PASS / FAIL / SKIP rows, printed as they come and once more at the end."""

    rows: list[tuple[str, str, str]] = field(default_factory=list)

    def add(self, check: str, result: str, detail: str) -> str:
        self.rows.append((check, result, detail))
        print(f"[smoke] {result} {check}: {detail}", flush=True)
        return result

    def run(self, check: str, function: Callable[[], str]) -> str:
        try:
            return self.add(check, PASS, function())
        except (CheckFailed, FileNotFoundError, OSError, ValueError) as error:
            return self.add(check, FAIL, str(error).splitlines()[0] if str(error) else type(error).__name__)

    def render(self) -> str:
        width = max(len(check) for check, _, _ in self.rows)
        lines = [f"{'check':<{width}}  result  detail", f"{'-' * width}  ------  ------"]
        lines += [f"{check:<{width}}  {result:<6}  {detail}" for check, result, detail in self.rows]
        return "\n".join(lines)

    @property
    def failed(self) -> bool:
        return any(result == FAIL for _, result, _ in self.rows)


def gpu_count() -> int:
    try:
        import torch

        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except ImportError:
        return 0


def check_verl() -> str:
    from verl_gain.verl_version import SUPPORTED_VERL_RANGE, check_verl_version

    version = check_verl_version()
    import verl  # noqa: F401

    return f"verl {version} (supported {SUPPORTED_VERL_RANGE})"


def check_vllm() -> str:
    if importlib.util.find_spec("vllm") is None:
        raise CheckFailed("vLLM is not installed: pip install 'verl[vllm]' (the recipes' rollout)")
    import vllm

    return f"vllm {vllm.__version__}"


def resolve_model(name: str) -> str:
    from verl_gain.model_sources import resolve_model as resolve

    return str(resolve(name))


def subset(source: Path, target: Path, rows: int) -> Path:
    import pandas as pd

    target.parent.mkdir(parents=True, exist_ok=True)
    pd.read_parquet(source).head(rows).to_parquet(target)
    return target


def sized_overrides(sizes: Sizes, steps: int, workers: int, model: str, train: Path, val: Path) -> list[str]:
    """The recipe made small: ``steps`` steps, a checkpoint each step, the metrics in verl's file logger."""
    batch = sizes.prompts_per_step
    return [
        f"actor_rollout_ref.model.path={model}",
        f"data.train_files=[{train}]",
        f"data.val_files=[{val}]",
        f"trainer.n_gpus_per_node={workers}",
        f"trainer.total_training_steps={steps}",
        "trainer.total_epochs=100",
        "trainer.experiment_name=smoke",
        f"data.train_batch_size={batch}",
        f"actor_rollout_ref.actor.ppo_mini_batch_size={batch}",
        f"actor_rollout_ref.rollout.n={sizes.rollouts_per_prompt}",
        f"data.max_prompt_length={sizes.prompt_length}",
        f"data.max_response_length={sizes.response_length}",
        "trainer.save_freq=1",
        "trainer.test_freq=-1",
        "trainer.val_before_train=False",
        "trainer.logger=[console,file]",
        "trainer.resume_mode=auto",
        "gain.sigma_fraction=0.25",
        "gain.n_fraction=0.05",
        "gain.adj_max_fraction=0.1",
        "+ray_kwargs.ray_init.include_dashboard=false",
    ]


class Smoke:
    """One smoke test: its settings, its folder, its table."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.out = Path(args.out).expanduser().resolve()
        self.gpus = gpu_count() if args.device != "cpu" else 0
        self.on_gpu = args.device == "gpu" or (args.device == "auto" and self.gpus > 0)
        self.sizes = GPU_SIZES if self.on_gpu else CPU_SIZES
        self.table = Table()
        self.model_dir: str | None = None
        self.attention: list[str] = []
        self.train = self.val = Path()

    # ------------------------------------------------------------------------------------------------ preflight
    def preflight(self) -> bool:
        t = self.table
        ok = t.run("verl importable", check_verl) == PASS
        if self.on_gpu:
            ok &= t.run("vLLM importable", check_vllm) == PASS
            found = f"{self.gpus} GPU(s): {self._gpu_names()}"
            ok &= t.add("GPUs visible", PASS if self.gpus else FAIL, found if self.gpus else "no CUDA device") == PASS
        else:
            t.add("vLLM importable", SKIP, "no GPU: the CPU backend's hf rollout stands in for vLLM")
            t.add("GPUs visible", SKIP, "no GPU: verl-gain runs on its CPU backend (trainer.device=cpu)")
        ok &= t.run("model resolvable", self._resolve_model) == PASS
        ok &= t.run("data present", self._data) == PASS
        if self.on_gpu:
            t.run("flash-attention or sdpa", self._attention)
        else:
            t.add("flash-attention or sdpa", SKIP, "no GPU: the CPU backend uses sdpa attention")
        return ok

    def _gpu_names(self) -> str:
        import torch

        return ", ".join(sorted({torch.cuda.get_device_name(i) for i in range(self.gpus)}))

    def _resolve_model(self) -> str:
        self.model_dir = resolve_model(self.args.model)
        return f"{self.args.model} -> {self.model_dir}"

    def _data(self) -> str:
        train, val = Path(self.args.train).expanduser(), Path(self.args.val).expanduser()
        for path in (train, val):
            if not path.is_file():
                raise CheckFailed(f"{path} is missing: {PREPARE_HINT} (or pass --train/--val)")
        if self.on_gpu:
            train = subset(train, self.out / "data" / "train.parquet", GPU_SUBSET_ROWS)
        self.train, self.val = train, val
        import pandas as pd

        return f"{len(pd.read_parquet(train))} training prompts ({train}), validation {val}"

    def _attention(self) -> str:
        if importlib.util.find_spec("flash_attn") is not None:
            return "flash_attn importable: flash_attention_2"
        self.attention = [
            "+actor_rollout_ref.model.override_config.attn_implementation=sdpa",
            "actor_rollout_ref.model.use_remove_padding=False",  # packed sequences need flash-attention's kernels
        ]
        return "flash_attn not installed (verl[vllm] does not install it): falling back to sdpa, no remove-padding"

    # ----------------------------------------------------------------------------------------------------- runs
    def run_matrix(self) -> list[tuple[str, int]]:
        if not self.on_gpu:
            return list(CPU_RUNS)
        counts = [n for n in self.args.gpus if n <= self.gpus]
        for n in self.args.gpus:
            if n > self.gpus:
                self.table.add(f"runs on {n} GPUs", SKIP, f"only {self.gpus} GPU(s) visible")
        return [(trainer, n) for n in counts for trainer in ("v1", "legacy")]

    def launch(self, name: str, trainer: str, workers: int, fresh: bool = True) -> tuple[bool, str]:
        """``python -m verl_gain.main`` on the recipe in ``<out>/<name>`` (emptied first unless ``fresh`` is off)."""
        from verl_gain.demo.launcher import run_main

        folder = self.out / name
        if fresh:
            shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True, exist_ok=True)
        overrides = [
            "--config-dir",
            str(REPO / "recipes" / "config"),
            "--config-name",
            "recipe",
            f"setup={SETUP}",
            *sized_overrides(self.sizes, self.args.steps, workers, self.args.model, self.train, self.val),
            f"trainer.use_v1={trainer == 'v1'}",
            # On CPU the runs' precision is the scorer check's --dtype (CPU_SIZES); ++ since recipes have no cpu group.
            *([] if self.on_gpu else ["++cpu.precision=fp32"]),
            f"trainer.default_local_dir={folder / 'checkpoints'}",
            *self.attention,
            *self.args.overrides,
        ]
        env = {
            "HF_HUB_OFFLINE": "1",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        }
        result = run_main(overrides, folder / "metrics.jsonl", RUN_TIMEOUT_S, env=env, cwd=folder)
        (folder / "run.log").write_text(result.output)
        if result.returncode != 0:
            last = [line for line in result.output.strip().splitlines() if line.strip()][-1:] or ["no output"]
            return (
                False,
                f"exit {result.returncode} after {result.seconds:.0f} s ({folder / 'run.log'}): {last[0][:200]}",
            )
        return True, f"{result.seconds:.0f} s"

    def runs(self) -> str | None:
        """Every run of the matrix; returns the folder name of the first V1 run (for the resume and the scorer)."""
        first_v1 = None
        steps = range(1, self.args.steps + 1)
        for trainer, workers in self.run_matrix():
            name = f"{trainer}_{workers}"
            label = (
                f"{'V1' if trainer == 'v1' else 'legacy'} run, {workers} {'GPU' if self.on_gpu else 'CPU worker'}(s)"
            )
            ok, detail = self.launch(name, trainer, workers)
            if not ok:
                self.table.add(label, FAIL, detail)
                continue
            metrics = self.out / name / "metrics.jsonl"
            self.table.run(label, lambda m=metrics, d=detail: f"{finite_step_angles(m, steps)} ({d})")
            if trainer == "v1" and first_v1 is None:
                first_v1 = name
        return first_v1

    def scorer_agreement(self, run: str) -> str:
        out = self.out / "scorer" / "scores.parquet"
        device = "cuda" if self.on_gpu else "cpu"
        command = [
            sys.executable, "-m", "verl_gain.cli", "score", "--data", str(self.train), "--model", self.args.model,
            "--out", str(out), "--dtype", self.sizes.dtype, "--device", device, "--quiet", "--overwrite",
            "--max-length", str(self.sizes.prompt_length),
        ]  # fmt: skip
        proc = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        if proc.returncode != 0:
            raise CheckFailed(f"verl-gain score failed: {proc.stderr.strip().splitlines()[-1:]}")
        return prepass_agrees_with_scorer(self.out / run / "checkpoints", out)

    def resume(self, run: str) -> str:
        first = self.out / run
        resumed = self.out / "resumed"
        shutil.rmtree(resumed, ignore_errors=True)
        shutil.copytree(first / "checkpoints", resumed / "checkpoints")
        for folder in (resumed / "checkpoints").glob("global_step_*"):
            if int(folder.name.rsplit("_", 1)[1]) > SMOKE_RESUMED_FROM:
                shutil.rmtree(folder)
        (resumed / "checkpoints" / "latest_checkpointed_iteration.txt").write_text(str(SMOKE_RESUMED_FROM))
        trainer, workers = run.split("_")
        ok, detail = self.launch("resumed", trainer, int(workers), fresh=False)
        if not ok:
            raise CheckFailed(detail)
        return check_runs(
            first / "checkpoints",
            resumed / "checkpoints",
            first / "metrics.jsonl",
            resumed / "metrics.jsonl",
            self.args.steps,
            SMOKE_RESUMED_FROM,
        )

    def equivalence(self) -> str:
        """``gain.enable=False`` resolves to verl's own config (verl's plain entry config, the run's main values)."""
        sizes = self.sizes
        workers = min(self.gpus, 2) if self.on_gpu else 2
        overrides = [
            f"actor_rollout_ref.model.path={self.args.model}",
            f"data.train_files=[{self.train}]",
            f"data.val_files=[{self.val}]",
            "algorithm.adv_estimator=grpo",
            "actor_rollout_ref.rollout.name=vllm",
            f"data.train_batch_size={sizes.prompts_per_step}",
            f"actor_rollout_ref.actor.ppo_mini_batch_size={sizes.prompts_per_step}",
            "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2",
            "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=2",
            "actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=2",
            f"trainer.n_gpus_per_node={workers}",
            *([] if self.on_gpu else ["trainer.device=cuda"]),
        ]
        texts = {}
        for entry in ("verl", "verl-gain"):
            folder = self.out / "equivalence" / entry
            folder.mkdir(parents=True, exist_ok=True)
            extra = ["gain.enable=False"] if entry == "verl-gain" else []
            command = [sys.executable, str(HERE / "resolved_config.py"), entry, str(folder / "config.yaml")]
            proc = subprocess.run([*command, *overrides, *extra], cwd=folder, capture_output=True, text=True)
            if proc.returncode != 0:
                raise CheckFailed(f"{entry}: {proc.stderr.strip().splitlines()[-1:]}")
            texts[entry] = (folder / "config.yaml").read_text()
        if texts["verl"] != texts["verl-gain"]:
            raise CheckFailed(f"the resolved configs differ: diff {self.out / 'equivalence'}/*/config.yaml")
        where = "" if self.on_gpu else ", resolved for trainer.device=cuda on this CPU machine"
        return f"identical resolved config and task runner ({len(texts['verl'].splitlines())} lines{where})"

    # ------------------------------------------------------------------------------------------------------ all
    def main(self) -> int:
        self.out.mkdir(parents=True, exist_ok=True)
        where = f"{self.gpus} GPU(s)" if self.on_gpu else "the CPU backend (no GPU)"
        print(f"[smoke] GAIN smoke test on {where}, results in {self.out}", flush=True)
        ready = self.preflight()
        if ready:
            first_v1 = self.runs()
            if first_v1 is None:
                self.table.add("pre-pass vs verl-gain score", SKIP, "no V1 run finished")
                self.table.add("save + resume", SKIP, "no V1 run finished")
            else:
                self.table.run("pre-pass vs verl-gain score", lambda: self.scorer_agreement(first_v1))
                self.table.run("save + resume continues the curriculum", lambda: self.resume(first_v1))
            if not self.on_gpu:
                self.table.add("bf16 rank agreement", SKIP, "no GPU: the CPU backend computes in fp32")
            self.table.run("gain.enable=False is verl exactly", self.equivalence)
        else:
            self.table.add("runs", SKIP, "a preflight check failed")
        print("\n" + self.table.render(), flush=True)
        verdict = "FAILED" if self.table.failed else "PASSED"
        print(f"\n[smoke] {verdict} ({sum(r == PASS for _, r, _ in self.table.rows)} passed, "
              f"{sum(r == SKIP for _, r, _ in self.table.rows)} skipped)", flush=True)  # fmt: skip
        return 1 if self.table.failed else 0


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog="Extra arguments: hydra overrides.")
    parser.add_argument("--device", choices=("auto", "gpu", "cpu"), default=os.environ.get("SMOKE_DEVICE", "auto"))
    parser.add_argument("--out", default=os.environ.get("SMOKE_DIR", "/tmp/verl-gain-smoke"))
    parser.add_argument("--model", default=os.environ.get("SMOKE_MODEL", DEFAULT_MODEL), help="folder or hub id")
    parser.add_argument("--train", default=os.environ.get("SMOKE_TRAIN", str(DEFAULT_DATA_DIR / "train.parquet")))
    parser.add_argument("--val", default=os.environ.get("SMOKE_VAL", str(DEFAULT_DATA_DIR / "test.parquet")))
    parser.add_argument(
        "--gpus", type=int, nargs="+", default=[int(n) for n in os.environ.get("N_GPUS", "1 2").split()]
    )
    parser.add_argument("--steps", type=int, default=int(os.environ.get("SMOKE_STEPS", "2")))
    args, overrides = parser.parse_known_args(argv)
    args.overrides = overrides
    if args.steps <= SMOKE_RESUMED_FROM:
        parser.error(f"--steps must exceed {SMOKE_RESUMED_FROM} (the run resumes from step {SMOKE_RESUMED_FROM})")
    return args


if __name__ == "__main__":
    sys.exit(Smoke(parse_args(sys.argv[1:])).main())
