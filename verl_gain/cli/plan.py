"""``verl-gain plan``: where the GAIN window will be, step by step, before a run spends any compute.

    verl-gain plan --rows 7473 --batch 256 --steps 200 --accuracy linear:0.3:0.8
    verl-gain plan --recipe gsm8k_qwen2.5-0.5b-instruct --rows 7473 gain.n_fraction=0.02
    verl-gain plan --scores gain_scores.parquet --batch 8 --steps 10 --accuracy runs/demo/checkpoints/gain_trace.jsonl

The real controller (``verl_gain.core.planner.simulate``) runs with the ``gain:`` settings (the defaults, ``--preset
paper``, a recipe's, plus ``gain.*`` overrides as on the trainer's command line), an assumed accuracy curve and an
angle signal (what a scores file's keys give the prompts drawn, or a constant); it prints the window per step, the
step where it reaches the end of the order, the coverage and the distinct prompts per 10 steps, and plots them.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from verl_gain.cli.shared import finite_float, positive_int

ACCURACY_HELP = (
    "flat:A | linear:A:B (from A at step 1 to B at the last step) | a gain_trace.jsonl or verl metrics.jsonl of a "
    "real run (its per-step accuracy and angle signal)"
)
TABLE_ROWS = 20
"""Steps printed (evenly spaced, the first and last included); the plot shows them all."""


class PlanInputError(ValueError):
    """Bad input to ``verl-gain plan`` (one line, with the fix)."""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "plan",
        help="simulate the GAIN window of a run: where it is per step, when it reaches the end, coverage",
        description=__doc__.split("\n\n")[0],
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--rows", type=positive_int, help="training set size N (the order itself does not matter)")
    source.add_argument("--scores", help="a scores file (verl-gain score, or a run's gain_scores.parquet): N and keys")
    parser.add_argument("--recipe", help="a recipes/config/setup name: its gain settings, batch size and steps")
    parser.add_argument("--preset", choices=("default", "paper"), default="default", help="the gain group preset")
    parser.add_argument("--batch", type=positive_int, help="prompts per step (data.train_batch_size)")
    parser.add_argument("--steps", type=positive_int, help="training steps (trainer.total_training_steps)")
    parser.add_argument("--accuracy", default="flat:0.6", help=ACCURACY_HELP + " (default flat:0.6)")
    parser.add_argument(
        "--angle", type=finite_float, default=None, help="a constant angle signal a (default: 0, or from --scores keys)"
    )
    parser.add_argument("--out-dir", default=None, help="where plan.png and plan.json go (default: no files)")
    parser.add_argument("overrides", nargs="*", help="gain.* overrides, e.g. gain.n_fraction=0.02 gain.at_end=hold")
    parser.set_defaults(func=run)


def _gain_settings(args: argparse.Namespace) -> tuple[object, int | None, int | None]:
    """(GainSettings, batch size, total steps) from the preset or recipe plus the overrides (hydra composition)."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    import verl_gain
    from verl_gain.trainer.settings import GainSettings

    bad = [o for o in args.overrides if not o.startswith("gain.") or "=" not in o]
    if bad:
        raise PlanInputError(f"overrides must be gain.<field>=<value>, got {bad[0]!r}")
    overrides = list(args.overrides)
    if args.recipe:
        config_dir = Path(verl_gain.__file__).resolve().parents[1] / "recipes" / "config"
        if not (config_dir / "setup" / f"{args.recipe}.yaml").is_file():
            names = sorted(p.stem for p in (config_dir / "setup").glob("*.yaml")) if config_dir.is_dir() else []
            raise PlanInputError(f"no recipe {args.recipe!r} (recipes/config/setup): choose one of {names}")
        config_name, overrides = "recipe", [f"setup={args.recipe}", *overrides]
    else:
        config_dir = Path(verl_gain.__file__).parent / "trainer" / "config"
        config_name = "verl_gain_trainer"
    if args.preset != "default":
        overrides.insert(0, f"gain={args.preset}")
    try:
        with initialize_config_dir(config_dir=str(config_dir), version_base=None):
            config = compose(config_name, overrides=overrides)
        settings = GainSettings.from_config(config.gain)
    except (HydraException, OmegaConfBaseException, ValueError) as error:
        raise PlanInputError(str(error).splitlines()[0]) from None
    steps = config.trainer.get("total_training_steps") if args.recipe else None
    batch = config.data.get("train_batch_size") if args.recipe else None
    return settings, batch, steps


def _accuracy_and_angle(spec: str, steps: int):
    """(accuracy curve, logged angle signals or None) from ``--accuracy``."""
    from verl_gain.core.planner import flat_accuracy, linear_accuracy, logged_accuracy

    kind, _, rest = spec.partition(":")
    try:
        if kind == "flat" and rest:
            return flat_accuracy(_fraction(rest)), None
        if kind == "linear" and rest.count(":") == 1:
            start, end = (_fraction(v) for v in rest.split(":"))
            return linear_accuracy(start, end, steps), None
    except ValueError:
        raise PlanInputError(f"--accuracy {spec!r}: accuracies are numbers in [0, 1]") from None
    path = Path(spec)
    if not path.is_file():
        raise PlanInputError(f"--accuracy {spec!r} is neither flat:A, linear:A:B nor an existing file; {ACCURACY_HELP}")
    accs, angles = _read_accuracy_log(path)
    return logged_accuracy(accs), angles


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise ValueError(text)
    return value


def _read_accuracy_log(path: Path) -> tuple[list[float], list[float | None]]:
    """Per-step accuracy and angle signal of a run: its gain trace (``step_acc``) or metrics (``gain/step_acc``)."""
    accs: list[float] = []
    angles: list[float | None] = []
    try:
        lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        lines = None
    for record in lines or []:
        if not isinstance(record, dict):
            lines = None
            break
        values = record.get("data", record)  # verl's file logger nests the metrics under "data"
        acc = values.get("step_acc", values.get("gain/step_acc")) if isinstance(values, dict) else None
        if acc is None:
            continue
        angle = values.get("angle_signal", values.get("gain/angle_signal"))
        accs.append(float(acc))
        angles.append(None if angle is None else float(angle))
    if not lines or not accs:
        raise PlanInputError(
            f"{path} is not a GAIN trace (gain_trace.jsonl) or a verl metrics file (metrics.jsonl) of a GAIN run: "
            "no line has step_acc or gain/step_acc"
        )
    return accs, angles


def run(args: argparse.Namespace) -> int:
    from verl_gain.output_paths import check_output_dir

    try:
        if args.out_dir:
            check_output_dir(args.out_dir)
        plan, settings = _plan(args)
    except (PlanInputError, ValueError) as error:
        print(f"verl-gain plan: error: {error}", file=sys.stderr)
        return 2
    _print(plan, settings)
    if args.out_dir and not _write(plan, Path(args.out_dir)):
        return 1
    return 0


def _plan(args: argparse.Namespace):
    import numpy as np
    from tqdm.auto import tqdm

    from verl_gain.core.planner import constant_angle, prepass_angle, simulate

    settings, recipe_batch, recipe_steps = _gain_settings(args)
    batch = args.batch if args.batch is not None else recipe_batch
    steps = args.steps if args.steps is not None else recipe_steps
    if batch is None or steps is None:
        raise PlanInputError("give --batch and --steps (or --recipe, which has them)")
    if not isinstance(steps, int) or steps <= 0:
        raise PlanInputError(f"--steps must be a positive integer, got {steps}")
    if batch <= 0:
        raise PlanInputError(f"--batch must be a positive integer, got {batch}")
    cosines = None
    if args.scores:
        keys, cosines = _scores_keys(args.scores, settings.inter_weight)
    elif args.rows is not None:
        if args.rows < batch:
            raise PlanInputError(f"--rows {args.rows} is smaller than the batch ({batch} distinct prompts per step)")
        keys = np.arange(args.rows, 0, -1, dtype=np.float64)  # only N matters without a scores file
    else:
        raise PlanInputError("give the training set size (--rows N) or a scores file (--scores FILE)")
    if batch > len(keys):
        raise PlanInputError(f"--batch {batch} is larger than the training set ({len(keys)} prompts)")
    accuracy, logged_angles = _accuracy_and_angle(args.accuracy, steps)
    if settings.step_angle == "none":
        angle = constant_angle(None)
    elif args.angle is not None:
        angle = constant_angle(args.angle)
    elif logged_angles is not None:
        count = [0]

        def angle(positions):  # the run's own signal, step by step
            count[0] += 1
            return logged_angles[min(count[0], len(logged_angles)) - 1]
    elif args.scores:
        angle = prepass_angle(settings.angle_signal, keys, cosines)
    else:
        angle = constant_angle(0.0)
    with tqdm(total=steps, desc="simulating", unit="step", disable=steps * batch < 1_000_000) as bar:
        plan = simulate(keys, settings.window(), batch, steps, accuracy, angle, progress=lambda _: bar.update())
    return plan, settings


def _scores_keys(path: str, inter_weight: float):
    from verl_gain.scoring.errors import ScoringInputError
    from verl_gain.scoring.scores_file import read_scores, table_keys

    try:
        table, _, _ = read_scores(path)
    except (FileNotFoundError, ScoringInputError) as error:
        raise PlanInputError(f"--scores: {error}") from None
    if len(table) == 0:
        raise PlanInputError(f"--scores {path} holds no scored prompt: re-run `verl-gain score`")
    cosines = table["mean_cosine"].to_numpy() if "mean_cosine" in table.columns else None
    return table_keys(table, inter_weight), cosines


def _print(plan, settings) -> None:
    n = plan.num_samples
    picks = sorted({round(i * (len(plan.steps) - 1) / max(TABLE_ROWS - 1, 1)) for i in range(TABLE_ROWS)})
    print(f"GAIN window over {n} prompts, {plan.batch_size} per step, {len(plan.steps)} steps")
    print("  step      mu   sigma   band lo-hi     acc   angle  delta_acc  delta_angle   delta  distinct")
    for index in picks:
        s = plan.steps[index]
        angle = "     -" if s.angle is None else f"{s.angle:6.2f}"
        print(
            f"  {s.step:4d} {s.mu:7.0f} {s.sigma:7.0f} {s.lo:6.0f}-{s.hi:<6.0f} {s.acc:6.2f} {angle} "
            f"{s.acc_term:10.1f} {s.angle_term:12.1f} {s.delta:7.1f} {s.distinct:9d}"
        )
    end = plan.end_step
    where = f"step {end} of {len(plan.steps)}" if end else f"not reached (mu = {plan.final_mu:.0f} of {n - 1})"
    print(f"end of the order: {where}; coverage {plan.coverage:.1%}; at_end = {settings.at_end}")
    print("distinct prompts per 10 steps: " + ", ".join(str(d) for d in plan.block_distinct))


def _write(plan, out_dir: Path) -> bool:
    """plan.json and plan.png in ``out_dir``; False (after a one-line error) when they cannot be written."""
    from dataclasses import asdict

    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "plan.json").write_text(
            json.dumps(
                {
                    "num_samples": plan.num_samples,
                    "batch_size": plan.batch_size,
                    "end_step": plan.end_step,
                    "coverage": plan.coverage,
                    "block_distinct": plan.block_distinct,
                    "steps": [asdict(s) for s in plan.steps],
                },
                indent=1,
            )
        )
        path = plot_plan(plan, out_dir / "plan.png")
    except OSError as error:
        print(f"verl-gain plan: error: cannot write to {out_dir}: {error.strerror}", file=sys.stderr)
        return False
    print(f"wrote {out_dir / 'plan.json'} and {path}")
    return True


def plot_plan(plan, path: Path) -> Path:
    """mu and its one-sigma band per step, the update's two terms, and the distinct prompts per 10 steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [s.step for s in plan.steps]
    fig, (top, middle, bottom) = plt.subplots(3, 1, figsize=(7, 8), sharex=True)
    top.plot(steps, [s.mu for s in plan.steps], color="tab:red", label="mu (batch drawn around it)")
    top.fill_between(steps, [s.lo for s in plan.steps], [s.hi for s in plan.steps], alpha=0.2, color="tab:red")
    top.axhline(plan.num_samples - 1, color="0.5", linestyle=":", label="end of the order")
    top.set_ylabel("rank (0 = highest\nangle concentration)")
    top.legend(loc="upper left", fontsize=8)
    middle.plot(steps, [s.acc_term for s in plan.steps], label="n tanh(alpha (acc - beta))")
    middle.plot(steps, [s.angle_term for s in plan.steps], label="n tanh(alpha a)")
    middle.plot(steps, [s.delta for s in plan.steps], color="black", linestyle="--", label="delta (clamped)")
    middle.set_ylabel("ranks per step")
    middle.legend(loc="upper right", fontsize=8)
    block_ends = [min((i + 1) * 10, len(steps)) for i in range(len(plan.block_distinct))]
    bottom.bar(block_ends, plan.block_distinct, width=6, color="tab:blue")
    bottom.set_ylabel("distinct prompts\nper 10 steps")
    bottom.set_xlabel("training step")
    fig.suptitle(f"GAIN window plan: {plan.num_samples} prompts, {plan.batch_size} per step")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
