#!/usr/bin/env bash
# Run a GAIN-RL recipe: python -m verl_gain.main with recipes/config/recipe.yaml and the setup's file
# (recipes/config/setup/<setup>.yaml); extra arguments are hydra overrides and win over the recipe's values.
#
#   bash recipes/run.sh gsm8k_qwen2.5-0.5b-instruct                      # GAIN
#   bash recipes/run.sh gsm8k_qwen2.5-0.5b-instruct gain.enable=False    # the uniform-sampling baseline
#   bash recipes/run.sh gsm8k_qwen2.5-0.5b-instruct --cfg job            # print the composed config, run nothing
#
# PYTHON picks the interpreter (default python3).
set -euo pipefail

config_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/config"
if [[ $# -lt 1 || ! -f "$config_dir/setup/$1.yaml" ]]; then
  echo "usage: bash $0 SETUP [hydra overrides]; setups:" $(cd "$config_dir/setup" && ls | sed 's/\.yaml$//') >&2
  exit 2
fi
setup=$1
shift
exec "${PYTHON:-python3}" -m verl_gain.main --config-dir "$config_dir" --config-name recipe "setup=$setup" "$@"
