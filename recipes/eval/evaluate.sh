#!/usr/bin/env bash
# pass@1 of one or more checkpoints on the paper's evaluation sets, scored by the training rewards (verl-gain eval).
#
#   bash recipes/eval/evaluate.sh CHECKPOINT [CHECKPOINT ...]
#
# A checkpoint is a Hugging Face model folder or a verl checkpoint folder (global_step_N). The benchmark files come
# from the prepare scripts (run them first): python recipes/prepare_math.py {gsm8k,math,amc,aime2024,minerva,
# olympiadbench} (math: MATH-500) and python recipes/prepare_code.py {humaneval,humanevalplus,livecodebench}, each
# as $DATA_DIR/<name>/test.parquet.
# Environment overrides: DATA_DIR (default ~/data/verl-gain), BENCHMARKS (space-separated names, default the math
# sets and HumanEval), OUTPUT_DIR, MAX_NEW_TOKENS (match the training run's max response length), BATCH_SIZE,
# N_SAMPLES and TEMPERATURE (pass@1 over N samples; default greedy), LIMIT (first N problems), PYTHON.
set -euo pipefail

if [[ $# -lt 1 ]]; then
  echo "usage: bash $0 CHECKPOINT [CHECKPOINT ...]" >&2
  exit 2
fi
PYTHON=${PYTHON:-python3}
DATA_DIR=${DATA_DIR:-$HOME/data/verl-gain}
BENCHMARKS=${BENCHMARKS:-gsm8k math500 amc aime2024 minerva olympiadbench humaneval}
OUTPUT_DIR=${OUTPUT_DIR:-$HOME/eval/verl-gain/$(date +%Y%m%d-%H%M%S)}
MAX_NEW_TOKENS=${MAX_NEW_TOKENS:-3000}
BATCH_SIZE=${BATCH_SIZE:-16}
N_SAMPLES=${N_SAMPLES:-1}
TEMPERATURE=${TEMPERATURE:-0}

data=()
for name in $BENCHMARKS; do
  folder=$name
  [[ $name == math500 ]] && folder=math  # prepare_math.py math writes MATH-500 as math/test.parquet
  family=math
  [[ $folder == humaneval* || $folder == livecodebench ]] && family=code
  file="$DATA_DIR/$folder/test.parquet"
  if [[ ! -f $file ]]; then
    echo "missing $file: run python recipes/prepare_$family.py $folder --output-dir $DATA_DIR/$folder first" >&2
    exit 2
  fi
  data+=("$name=$file")
done

extra=()
[[ -n ${LIMIT:-} ]] && extra+=(--limit "$LIMIT")
exec "$PYTHON" -m verl_gain.cli eval --model "$@" --data "${data[@]}" --output-dir "$OUTPUT_DIR" \
  --max-new-tokens "$MAX_NEW_TOKENS" --batch-size "$BATCH_SIZE" --n-samples "$N_SAMPLES" \
  --temperature "$TEMPERATURE" "${extra[@]}"
