#!/usr/bin/env bash
# GPU smoke test of GAIN-RL on verl (for a machine with GPUs, verl 0.9.x and vLLM): 3 GRPO steps of
# Qwen2.5-0.5B-Instruct on GSM8K with GAIN sampling, checkpoints every step, then a resume from step 2 in a fresh
# process, then checks (recipes/smoke/check_smoke.py): the pre-pass scores are finite, the trace and the gain/ metrics
# are there, and the resumed run drew step 3's prompts from the same window state as the uninterrupted run.
#
#   python recipes/gsm8k/prepare.py --output-dir ~/data/verl-gain/gsm8k
#   bash recipes/smoke/gpu_smoke.sh            # ~10 min on one H100 incl. start-up (vLLM, pre-pass of 7,473 prompts)
#
# Environment overrides: as recipes/gsm8k/run_qwen2.5-0.5b-instruct.sh (MODEL_PATH, DATA_DIR, N_GPUS, ...), plus
# SMOKE_DIR (default /tmp/verl-gain-smoke).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PYTHON=${PYTHON:-python3}
SMOKE_DIR=${SMOKE_DIR:-/tmp/verl-gain-smoke}
export N_GPUS=${N_GPUS:-1}
export TOTAL_STEPS=3
rm -rf "$SMOKE_DIR"
mkdir -p "$SMOKE_DIR"

small=(
  data.train_batch_size=16
  actor_rollout_ref.actor.ppo_mini_batch_size=16
  actor_rollout_ref.rollout.n=4
  data.max_response_length=256
  trainer.save_freq=1
  trainer.test_freq=-1
  trainer.val_before_train=False
  trainer.logger=[console,file]
  gain.sigma=64
  gain.n=32
  gain.adj_max=64
)

run() {  # run <checkpoint dir> <metrics file>
  OUTPUT_DIR="$SMOKE_DIR" EXPERIMENT=run VERL_FILE_LOGGER_PATH="$2" \
    bash "$HERE/../gsm8k/run_qwen2.5-0.5b-instruct.sh" "${small[@]}" trainer.default_local_dir="$1"
}

run "$SMOKE_DIR/first" "$SMOKE_DIR/first.jsonl"

# A crash after step 2: keep that checkpoint, point the tracker at it, resume in a fresh process.
cp -r "$SMOKE_DIR/first" "$SMOKE_DIR/resumed"
rm -rf "$SMOKE_DIR/resumed/global_step_3"
echo 2 > "$SMOKE_DIR/resumed/latest_checkpointed_iteration.txt"
run "$SMOKE_DIR/resumed" "$SMOKE_DIR/resumed.jsonl"

"$PYTHON" "$HERE/check_smoke.py" "$SMOKE_DIR"
