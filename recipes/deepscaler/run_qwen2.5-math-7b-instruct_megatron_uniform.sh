#!/usr/bin/env bash
# Uniform-sampling GRPO baseline for run_qwen2.5-math-7b-instruct_megatron.sh: the same command line with gain.enable=False.
#   bash recipes/deepscaler/run_qwen2.5-math-7b-instruct_megatron_uniform.sh [extra hydra overrides]
set -euo pipefail
GAIN_ENABLE=False exec bash "$(dirname "${BASH_SOURCE[0]}")/run_qwen2.5-math-7b-instruct_megatron.sh" "$@"
