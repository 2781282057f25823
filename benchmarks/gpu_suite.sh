#!/usr/bin/env bash
# The GPU measurements of issue #7 (and the SparseMoE GPU timing of #3) in one call, for a
# short device lease: every step gets a time limit, steps run most-important first and are
# skipped once the overall budget is spent, and each step's output goes to its own log.
#
# Usage (JAX with CUDA; keras on PYTHONPATH):
#     KERAS_BACKEND=jax bash benchmarks/gpu_suite.sh OUT_DIR [BUDGET_SECONDS]
# Overrides for a dry run on a CPU: BIG=tiny MID=tiny BATCH=128 PEAK=256 PYTHON=python.
# SUITE=levers runs the second round (GELU tanh, cuBLASLt epilogues, batch, repeat of infer).
# The JSON line of each step is the last line of OUT_DIR/<step>.log; summary.jsonl has them all.
set -u
OUT_DIR=${1:?usage: gpu_suite.sh OUT_DIR [BUDGET_SECONDS]}
BUDGET=${2:-520}
BIG=${BIG:-rankmixer_1b}
MID=${MID:-rankmixer_100m}
BATCH=${BATCH:-4096}
PEAK=${PEAK:-8192}
PYTHON=${PYTHON:-python3}
export KERAS_BACKEND=jax PYTHONUNBUFFERED=1
export JAX_COMPILATION_CACHE_DIR=${JAX_COMPILATION_CACHE_DIR:-/tmp/jax_cache}
mkdir -p "$OUT_DIR"
DEADLINE=$(($(date +%s) + BUDGET))
MFU="benchmarks/mfu.py --batch-size $BATCH --peak-size $PEAK --repeats 5 --dtype mixed_bfloat16"

step() { # step NAME LIMIT_SECONDS COMMAND...
  local name=$1 limit=$2 left
  shift 2
  left=$((DEADLINE - $(date +%s)))
  if ((left < 40)); then
    echo "== $name: skipped, ${left}s of the budget left" | tee -a "$OUT_DIR/steps.txt"
    return
  fi
  ((limit > left)) && limit=$left
  local t0=$(date +%s)
  timeout "$limit" "$@" >"$OUT_DIR/$name.log" 2>&1
  local rc=$?
  echo "== $name: rc=$rc $(($(date +%s) - t0))s (limit ${limit}s)" | tee -a "$OUT_DIR/steps.txt"
  grep -v '^{' "$OUT_DIR/$name.log" | grep -E '^(#|\||[ 0-9.a-z-]+ +(dense|sparse))' | tail -12
  tail -n 1 "$OUT_DIR/$name.log" | grep '^{' >>"$OUT_DIR/summary.jsonl" || tail -n 5 "$OUT_DIR/$name.log"
}

nvidia-smi -L 2>/dev/null | tee "$OUT_DIR/steps.txt"
if [[ ${SUITE:-main} == levers ]]; then # the second round: levers for the gaps of the first
  step mfu_mid_gelu_tanh 90 $PYTHON $MFU --preset "$MID" --mode train --ffn-activation gelu_tanh
  step mfu_mid_b2x 90 $PYTHON $MFU --preset "$MID" --mode train --batch-size $((2 * BATCH))
  step mfu_big_infer_r9 90 $PYTHON $MFU --preset "$BIG" --mode infer --repeats 9
  step mfu_mid_tanh_cublaslt 90 env XLA_FLAGS=--xla_gpu_enable_cublaslt=true \
    $PYTHON $MFU --preset "$MID" --mode train --ffn-activation gelu_tanh --tag cublaslt
  step mfu_big_infer_tanh 90 $PYTHON $MFU --preset "$BIG" --mode infer --ffn-activation gelu_tanh
  echo "== done; $((DEADLINE - $(date +%s)))s of the budget left" | tee -a "$OUT_DIR/steps.txt"
  exit 0
fi
step mfu_big_train 150 $PYTHON $MFU --preset "$BIG" --mode train --tag "adam donate"
step mfu_mid_train 100 $PYTHON $MFU --preset "$MID" --mode train --tag "adam donate"
step mfu_big_infer 100 $PYTHON $MFU --preset "$BIG" --mode infer
step moe_inference 60 $PYTHON benchmarks/moe_inference.py --backend jax --repeats 5
step latency 120 $PYTHON benchmarks/latency_vs_size.py --presets "tiny,small,$MID,$BIG" \
  --batch-size "$BATCH" --dtype mixed_bfloat16 --peak-size "$PEAK"
step mfu_big_rmsprop 100 $PYTHON $MFU --preset "$BIG" --mode train --optimizer rmsprop --tag rmsprop
step mfu_big_nodonate 100 $PYTHON $MFU --preset "$BIG" --mode train --no-donate --tag "no donate"
step mfu_big_b2x 100 $PYTHON $MFU --preset "$BIG" --mode train --batch-size $((2 * BATCH)) --tag "2x batch"
step mfu_mid_breakdown 150 $PYTHON $MFU --preset "$MID" --mode train --breakdown --tag breakdown
step moe_inference_wide 60 $PYTHON benchmarks/moe_inference.py --backend jax --repeats 5 \
  --token-dim 256 --expert-dim 1024
echo "== done; $((DEADLINE - $(date +%s)))s of the budget left" | tee -a "$OUT_DIR/steps.txt"
