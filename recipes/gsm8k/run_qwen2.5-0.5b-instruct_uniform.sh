#!/usr/bin/env bash
# Uniform-sampling GRPO baseline for run_qwen2.5-0.5b-instruct.sh: the same command line with gain.enable=False.
#   bash recipes/gsm8k/run_qwen2.5-0.5b-instruct_uniform.sh [extra hydra overrides]
set -euo pipefail
GAIN_ENABLE=False exec bash "$(dirname "${BASH_SOURCE[0]}")/run_qwen2.5-0.5b-instruct.sh" "$@"
