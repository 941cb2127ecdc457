#!/usr/bin/env bash
# The real-model experiment of docs/real-models.md: for each task, `slm-mux run`
# (validation + test, k=3), then `search` (the best pair on validation).
#   scripts/real_experiment.sh POOL OUT_DIR [TASK...]   (tasks: arith wordprob facts gsm8k)
# The question sets come from scripts/fetch_real_pool.py (make_real_sets.py; folder below).
set -euo pipefail
pool=$1 out=$2
shift 2
[ $# -gt 0 ] || set -- arith wordprob facts gsm8k
sets=${SLM_MUX_REAL_SETS:-$HOME/.cache/slm-mux/real-pool/sets}
limit=${LIMIT:-30}
mkdir -p "$out"
for task in "$@"; do
  case $task in
    arith) args=(--task arith) ;;
    wordprob | facts) args=(--task custom --data "$sets/$task-test.jsonl" --validation-data "$sets/$task-validation.jsonl") ;;
    gsm8k) args=(--task gsm8k --data "$sets/gsm8k-test.json" --validation-data "$sets/gsm8k-validation.json") ;;
    *) echo "unknown task $task" >&2; exit 2 ;;
  esac
  echo "== $task"
  python -m slm_mux run --pool "$pool" "${args[@]}" --store "$out/$task.db" --limit "$limit" --samples 3 --quiet
  python -m slm_mux search --store "$out/$task.db" --k 3
done
