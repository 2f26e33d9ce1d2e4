#!/usr/bin/env bash
# GPU smoke test of GAIN-RL on verl (for a machine with GPUs, verl 0.9.x and vLLM): 3 GRPO steps of
# Qwen2.5-0.5B-Instruct on GSM8K with GAIN sampling, checkpoints every step, then a resume from step 2 in a fresh
# process, then checks (recipes/smoke/check_smoke.py): the pre-pass scores are finite, the trace and the gain/ metrics
# are there, and the resumed run drew step 3's prompts from the same window state as the uninterrupted run.
#
#   python recipes/prepare_math.py gsm8k
#   bash recipes/smoke/gpu_smoke.sh            # ~10 min on one H100 incl. start-up (vLLM, pre-pass of 7,473 prompts)
#   bash recipes/smoke/gpu_smoke.sh actor_rollout_ref.model.path=/models/qwen recipe.data_dir=/data   # other inputs
#
# The runs are the gsm8k_qwen2.5-0.5b-instruct recipe (recipes/run.sh) made small; extra arguments are hydra
# overrides for both runs. Environment overrides: N_GPUS (default 1), SMOKE_DIR (default /tmp/verl-gain-smoke),
# PYTHON.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PYTHON=${PYTHON:-python3}
export PYTHON
SMOKE_DIR=${SMOKE_DIR:-/tmp/verl-gain-smoke}
N_GPUS=${N_GPUS:-1}
rm -rf "$SMOKE_DIR"
mkdir -p "$SMOKE_DIR"

small=(
  trainer.n_gpus_per_node="$N_GPUS"
  trainer.total_training_steps=3
  trainer.experiment_name=run
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

run() {  # run <checkpoint dir> <metrics file> [hydra overrides]
  local checkpoints=$1 metrics=$2
  shift 2
  VERL_FILE_LOGGER_PATH="$metrics" \
    bash "$HERE/../run.sh" gsm8k_qwen2.5-0.5b-instruct "${small[@]}" trainer.default_local_dir="$checkpoints" "$@"
}

run "$SMOKE_DIR/first" "$SMOKE_DIR/first.jsonl" "$@"

# A crash after step 2: keep that checkpoint, point the tracker at it, resume in a fresh process.
cp -r "$SMOKE_DIR/first" "$SMOKE_DIR/resumed"
rm -rf "$SMOKE_DIR/resumed/global_step_3"
echo 2 > "$SMOKE_DIR/resumed/latest_checkpointed_iteration.txt"
run "$SMOKE_DIR/resumed" "$SMOKE_DIR/resumed.jsonl" "$@"

"$PYTHON" "$HERE/check_smoke.py" "$SMOKE_DIR"
