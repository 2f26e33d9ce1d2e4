#!/usr/bin/env bash
# Uniform-sampling GRPO baseline for run_llama3.2-3b-instruct.sh: the same command line with gain.enable=False.
#   bash recipes/deepscaler/run_llama3.2-3b-instruct_uniform.sh [extra hydra overrides]
set -euo pipefail
GAIN_ENABLE=False exec bash "$(dirname "${BASH_SOURCE[0]}")/run_llama3.2-3b-instruct.sh" "$@"
