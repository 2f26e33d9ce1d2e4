#!/usr/bin/env bash
# GAIN-RL smoke test on verl, for a fresh GPU machine (verl 0.9.1 with vLLM): preflight checks, then short GAIN runs
# of the gsm8k_qwen2.5-0.5b-instruct recipe on verl's V1 and legacy trainers on 1 and 2 GPUs, a resume, the pre-pass
# against `verl-gain score` (rank correlation >= 0.999 in bf16) and `gain.enable=False` against verl's own entry
# point; one PASS/FAIL/SKIP table at the end, exit code 0 when nothing failed (recipes/smoke/smoke.py says more).
#
#   python recipes/prepare_math.py gsm8k       # the data, once (~/data/verl-gain/gsm8k)
#   bash recipes/smoke/gpu_smoke.sh            # the model from the Hugging Face cache, or downloaded once
#   bash recipes/smoke/gpu_smoke.sh actor_rollout_ref.rollout.gpu_memory_utilization=0.4   # hydra overrides
#
# Without a GPU it runs on verl-gain's CPU backend, GPU-only checks skipped with their reason (CI does this with a
# tiny model). Environment: SMOKE_DIR (default /tmp/verl-gain-smoke), SMOKE_MODEL (default
# Qwen/Qwen2.5-0.5B-Instruct: a hub id or a folder), SMOKE_TRAIN / SMOKE_VAL (parquet files), N_GPUS (GPU counts to
# run, default "1 2"), SMOKE_STEPS (default 2), SMOKE_DEVICE (auto | gpu | cpu), PYTHON.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
exec "${PYTHON:-python3}" "$HERE/smoke.py" "$@"
