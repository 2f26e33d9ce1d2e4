#!/usr/bin/env bash
# GAIN-RL GRPO (arXiv 2506.02281): Qwen2.5-0.5B-Instruct on GSM8K.
# Paper setup: 256 prompts per step, rollout n = 8, lr 1e-6, KL loss 0.001 (low_var_kl), max response
# 512 tokens, 200 steps, vLLM rollout. Uniform-sampling baseline: run_qwen2.5-0.5b-instruct_uniform.sh (same settings, gain.enable=False).
#
#   python recipes/gsm8k/prepare.py --output-dir ~/data/verl-gain/gsm8k
#   bash recipes/gsm8k/run_qwen2.5-0.5b-instruct.sh [extra hydra overrides, e.g. trainer.save_freq=20]
#
# Environment overrides: MODEL_PATH, DATA_DIR (prepared parquet, default ~/data/verl-gain), TRAIN_FILES, VAL_FILES,
# N_GPUS (per node), NNODES, TP_SIZE (vLLM tensor parallel), GPU_MEM (vLLM memory fraction), MAX_RESPONSE_LENGTH,
# TOTAL_STEPS, OUTPUT_DIR, EXPERIMENT, LOGGER (hydra list, e.g. '[console,wandb]'), GAIN_ENABLE (True/False),
# REWARD_PATH/REWARD_NAME (your own verl reward function: a file path and a function name), PYTHON.
set -euo pipefail

PYTHON=${PYTHON:-python3}
MODEL_PATH=${MODEL_PATH:-Qwen/Qwen2.5-0.5B-Instruct}
DATA_DIR=${DATA_DIR:-$HOME/data/verl-gain}
TRAIN_FILES=${TRAIN_FILES:-"['$DATA_DIR/gsm8k/train.parquet']"}
VAL_FILES=${VAL_FILES:-"['$DATA_DIR/gsm8k/test.parquet']"}
N_GPUS=${N_GPUS:-8}
NNODES=${NNODES:-1}
TP_SIZE=${TP_SIZE:-1}
GPU_MEM=${GPU_MEM:-0.6}
MAX_PROMPT_LENGTH=${MAX_PROMPT_LENGTH:-512}
MAX_RESPONSE_LENGTH=${MAX_RESPONSE_LENGTH:-512}
TOTAL_STEPS=${TOTAL_STEPS:-200}
GAIN_ENABLE=${GAIN_ENABLE:-True}
REWARD_PATH=${REWARD_PATH:-$("$PYTHON" -m verl_gain.rewards math)}
REWARD_NAME=${REWARD_NAME:-compute_score}
LOGGER=${LOGGER:-[console]}
if [[ "$GAIN_ENABLE" == "True" ]]; then SAMPLING=gain; else SAMPLING=uniform; fi
EXPERIMENT=${EXPERIMENT:-qwen2.5-0.5b-instruct-gsm8k-$SAMPLING}
OUTPUT_DIR=${OUTPUT_DIR:-$HOME/checkpoints/verl-gain}
# Tokens per GPU per forward/backward micro-batch (dynamic batch size); at least prompt + response length.
MAX_TOKENS_PER_GPU=${MAX_TOKENS_PER_GPU:-24576}

overrides=(
  algorithm.adv_estimator=grpo
  algorithm.use_kl_in_reward=False
  data.train_files="$TRAIN_FILES"
  data.val_files="$VAL_FILES"
  data.train_batch_size=256
  data.max_prompt_length="$MAX_PROMPT_LENGTH"
  data.max_response_length="$MAX_RESPONSE_LENGTH"
  data.filter_overlong_prompts=True
  data.truncation=error
  data.dataloader_num_workers=0
  actor_rollout_ref.model.path="$MODEL_PATH"
  actor_rollout_ref.model.use_remove_padding=True
  actor_rollout_ref.model.enable_gradient_checkpointing=True
  actor_rollout_ref.actor.optim.lr=1e-6
  actor_rollout_ref.actor.ppo_mini_batch_size=64
  actor_rollout_ref.actor.use_dynamic_bsz=True
  actor_rollout_ref.actor.ppo_max_token_len_per_gpu="$MAX_TOKENS_PER_GPU"
  actor_rollout_ref.actor.use_kl_loss=True
  actor_rollout_ref.actor.kl_loss_coef=0.001
  actor_rollout_ref.actor.kl_loss_type=low_var_kl
  actor_rollout_ref.actor.entropy_coeff=0
  actor_rollout_ref.actor.fsdp_config.param_offload=False
  actor_rollout_ref.actor.fsdp_config.optimizer_offload=False
  actor_rollout_ref.ref.fsdp_config.param_offload=True
  actor_rollout_ref.ref.log_prob_max_token_len_per_gpu="$MAX_TOKENS_PER_GPU"
  actor_rollout_ref.rollout.name=vllm
  actor_rollout_ref.rollout.n=8
  actor_rollout_ref.rollout.tensor_model_parallel_size="$TP_SIZE"
  actor_rollout_ref.rollout.gpu_memory_utilization="$GPU_MEM"
  actor_rollout_ref.rollout.max_num_batched_tokens="$MAX_TOKENS_PER_GPU"
  actor_rollout_ref.rollout.log_prob_max_token_len_per_gpu="$MAX_TOKENS_PER_GPU"
  reward.custom_reward_function.path="$REWARD_PATH"
  reward.custom_reward_function.name="$REWARD_NAME"
  trainer.logger="$LOGGER"
  trainer.project_name=verl-gain
  trainer.experiment_name="$EXPERIMENT"
  trainer.default_local_dir="$OUTPUT_DIR/$EXPERIMENT"
  trainer.n_gpus_per_node="$N_GPUS"
  trainer.nnodes="$NNODES"
  trainer.total_training_steps="$TOTAL_STEPS"
  trainer.val_before_train=True
  trainer.test_freq=10
  trainer.save_freq=50
  trainer.critic_warmup=0
  gain.enable="$GAIN_ENABLE"
)

exec "$PYTHON" -m verl_gain.main "${overrides[@]}" "$@"
