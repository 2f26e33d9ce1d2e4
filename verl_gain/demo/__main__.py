"""``make demo``: verl's GRPO trainer with GAIN sampling trains a real model on this machine, with a report.

    python -m verl_gain.demo [--out runs/demo] [--steps 10] [--sampling gain|uniform] [--model smollm2-135m-instruct]
                             [--precision auto|bf16|fp32]

SmolLM2-135M-Instruct (bundled), the embedded arithmetic task, ``python -m verl_gain.main gain.enable=True
trainer.device=cpu ...`` (verl's V1 GRPO trainer on the CPU backend, held-out accuracy from verl's validation), then
PNG plots and ``report.md`` in ``<out>/report/``. ``--sampling uniform`` runs the same with verl's own sampler.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from verl_gain.demo.report import write_report
from verl_gain.demo.run import EXPECTED_MINUTES, DemoSettings, run_training
from verl_gain.demo.run_folder import LOG_FILE
from verl_gain.inference import PRECISIONS
from verl_gain.model_sources import SMOLLM2_NAME


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=DemoSettings.out_dir)
    parser.add_argument("--model", default=SMOLLM2_NAME)
    parser.add_argument("--sampling", choices=("gain", "uniform"), default="gain")
    parser.add_argument("--steps", type=int, default=DemoSettings.steps)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-size", type=int, default=DemoSettings.train_size)
    parser.add_argument("--test-size", type=int, default=DemoSettings.test_size)
    parser.add_argument("--prompts-per-step", type=int, default=DemoSettings.prompts_per_step)
    parser.add_argument("--test-freq", type=int, default=DemoSettings.test_freq)
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default=DemoSettings.precision,
        help="the CPU backend's precision (default auto: bf16 where the CPU has bf16 instructions, else fp32)",
    )
    args = parser.parse_args(argv)
    settings = DemoSettings(
        out_dir=args.out,
        model=args.model,
        sampling=args.sampling,
        steps=args.steps,
        seed=args.seed,
        train_size=args.train_size,
        test_size=args.test_size,
        prompts_per_step=args.prompts_per_step,
        test_freq=args.test_freq,
        precision=args.precision,
    )
    print(
        f"[verl-gain demo] verl GRPO + {settings.sampling} sampling, {settings.steps} steps of "
        f"{settings.prompts_per_step} prompts x {settings.rollouts} rollouts on {settings.model}; expected "
        f"~{EXPECTED_MINUTES[0]}-{EXPECTED_MINUTES[1]} min on 2 CPU cores by their load (set-up included). "
        f"Output: {settings.out_dir}",
        flush=True,
    )
    started = time.perf_counter()
    result = run_training(settings)
    if result.returncode != 0:
        print(f"[verl-gain demo] training failed (exit {result.returncode}); see {settings.out_dir / LOG_FILE}")
        print(result.output[-3000:])
        return 1
    report = write_report(settings.out_dir)
    print(f"[verl-gain demo] done in {(time.perf_counter() - started) / 60:.1f} min; report: {report}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
