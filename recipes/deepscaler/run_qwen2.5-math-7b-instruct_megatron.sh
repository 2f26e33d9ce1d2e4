#!/usr/bin/env bash
# GAIN-RL GRPO (arXiv 2506.02281): Qwen2.5-Math-7B-Instruct on DeepScaleR (validation: MATH-500, AIME 2024), with
# verl's Megatron engine for the actor and the reference model (model_engine=megatron): the GAIN pre-pass and the
# per-step angle run through the same Megatron actor (docs/megatron.md: supported parallel layouts).
# Paper setup: 1024 prompts per step, rollout n = 8, lr 1e-6, KL loss 0.001 (low_var_kl), max response
# 3000 tokens, 200 steps, vLLM rollout. Uniform-sampling baseline: run_qwen2.5-math-7b-instruct_megatron_uniform.sh
# (same settings, gain.enable=False). The FSDP variant of this setup: run_qwen2.5-math-7b-instruct.sh.
# Needs megatron-core, Megatron-Bridge and Transformer Engine on the GPU machine (pip install 'verl-gain[megatron]'
# brings megatron-core only; install the rest as verl's Megatron docs say, with your CUDA torch).
#
#   python recipes/deepscaler/prepare.py  # + recipes/math (MATH-500) and recipes/aime2024 for validation
#   bash recipes/deepscaler/run_qwen2.5-math-7b-instruct_megatron.sh [extra hydra overrides, e.g. trainer.save_freq=20]
#
# Environment overrides: MODEL_PATH, DATA_DIR (prepared parquet, default ~/data/verl-gain), TRAIN_FILES, VAL_FILES,
# N_GPUS (per node), NNODES, TP_SIZE (vLLM tensor parallel), GPU_MEM (vLLM memory fraction), MAX_RESPONSE_LENGTH,
# TOTAL_STEPS, OUTPUT_DIR, EXPERIMENT, LOGGER (hydra list, e.g. '[console,wandb]'), GAIN_ENABLE (True/False),
# REWARD_PATH/REWARD_NAME (your own verl reward function: a file path and a function name), PYTHON,
# ACTOR_TP / ACTOR_PP / ACTOR_CP (Megatron tensor / pipeline / context parallel sizes of the actor and reference
# model; sequence parallel is on with TP > 1), REF_TP.
set -euo pipefail

PYTHON=${PYTHON:-python3}
MODEL_PATH=${MODEL_PATH:-Qwen/Qwen2.5-Math-7B-Instruct}
DATA_DIR=${DATA_DIR:-$HOME/data/verl-gain}
TRAIN_FILES=${TRAIN_FILES:-"['$DATA_DIR/deepscaler/train.parquet']"}
VAL_FILES=${VAL_FILES:-"['$DATA_DIR/math/test.parquet','$DATA_DIR/aime2024/test.parquet']"}
N_GPUS=${N_GPUS:-8}
NNODES=${NNODES:-1}
TP_SIZE=${TP_SIZE:-2}
GPU_MEM=${GPU_MEM:-0.6}
MAX_PROMPT_LENGTH=${MAX_PROMPT_LENGTH:-1024}
MAX_RESPONSE_LENGTH=${MAX_RESPONSE_LENGTH:-3000}
TOTAL_STEPS=${TOTAL_STEPS:-200}
GAIN_ENABLE=${GAIN_ENABLE:-True}
REWARD_PATH=${REWARD_PATH:-$("$PYTHON" -m verl_gain.rewards math)}
REWARD_NAME=${REWARD_NAME:-compute_score}
LOGGER=${LOGGER:-[console]}
if [[ "$GAIN_ENABLE" == "True" ]]; then SAMPLING=gain; else SAMPLING=uniform; fi
EXPERIMENT=${EXPERIMENT:-qwen2.5-math-7b-instruct-deepscaler-megatron-$SAMPLING}
OUTPUT_DIR=${OUTPUT_DIR:-$HOME/checkpoints/verl-gain}
# Tokens per GPU per forward/backward micro-batch (dynamic batch size); at least prompt + response length.
MAX_TOKENS_PER_GPU=${MAX_TOKENS_PER_GPU:-12288}
# 7B in bf16 on 80 GB GPUs: TP 2 with sequence parallel keeps activations of 12k-token micro-batches in memory.
ACTOR_TP=${ACTOR_TP:-2}
ACTOR_PP=${ACTOR_PP:-1}
ACTOR_CP=${ACTOR_CP:-1}
REF_TP=${REF_TP:-$ACTOR_TP}

overrides=(
  model_engine=megatron
  algorithm.adv_estimator=grpo
  algorithm.use_kl_in_reward=False
  data.train_files="$TRAIN_FILES"
  data.val_files="$VAL_FILES"
  data.train_batch_size=1024
  data.max_prompt_length="$MAX_PROMPT_LENGTH"
  data.max_response_length="$MAX_RESPONSE_LENGTH"
  data.filter_overlong_prompts=True
  data.truncation=error
  data.dataloader_num_workers=0
  actor_rollout_ref.model.path="$MODEL_PATH"
  actor_rollout_ref.model.use_remove_padding=True
  actor_rollout_ref.model.enable_gradient_checkpointing=True
  actor_rollout_ref.actor.optim.lr=1e-6
  actor_rollout_ref.actor.ppo_mini_batch_size=256
  actor_rollout_ref.actor.use_dynamic_bsz=True
  actor_rollout_ref.actor.ppo_max_token_len_per_gpu="$MAX_TOKENS_PER_GPU"
  actor_rollout_ref.actor.use_kl_loss=True
  actor_rollout_ref.actor.kl_loss_coef=0.001
  actor_rollout_ref.actor.kl_loss_type=low_var_kl
  actor_rollout_ref.actor.entropy_coeff=0
  actor_rollout_ref.actor.megatron.tensor_model_parallel_size="$ACTOR_TP"
  actor_rollout_ref.actor.megatron.pipeline_model_parallel_size="$ACTOR_PP"
  actor_rollout_ref.actor.megatron.context_parallel_size="$ACTOR_CP"
  actor_rollout_ref.actor.megatron.sequence_parallel=True
  actor_rollout_ref.actor.megatron.param_offload=True
  actor_rollout_ref.actor.megatron.optimizer_offload=True
  actor_rollout_ref.ref.megatron.tensor_model_parallel_size="$REF_TP"
  actor_rollout_ref.ref.megatron.pipeline_model_parallel_size="$ACTOR_PP"
  actor_rollout_ref.ref.megatron.context_parallel_size="$ACTOR_CP"
  actor_rollout_ref.ref.megatron.param_offload=True
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
