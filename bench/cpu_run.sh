#!/usr/bin/env bash
# The CPU measurements of issue #4 on the embedded pintor-shapes model (128x128). Run on an otherwise idle
# machine (not while `pintor train` runs): every figure is a side-by-side ratio, but contention makes them noisy.
#   bash bench/cpu_run.sh            # speed: stock vs each option, JSON in bench/results/
#   bash bench/cpu_run.sh quality    # pintor eval: 50-step stock vs each step-changing configuration
# MODEL=path/to/folder, or RANDOM_WEIGHTS=1 (random weights of the same architecture) when the embedded weights are missing.
set -euo pipefail
MODEL=${MODEL:-pintor-shapes}
REPEAT=${REPEAT:-5}
RESULTS=${RESULTS:-bench/results}
EXTRA=()
if [ "${RANDOM_WEIGHTS:-0}" = 1 ]; then EXTRA+=(--random-weights); fi
bench() { local label=$1; shift
  python -m pintor bench --model "$MODEL" --device cpu --repeat "$REPEAT" "${EXTRA[@]}" "$@" --label "cpu-$label" -q \
    --json "$RESULTS/$(date +%F)-pintor-shapes-cpu-$label.json"; }

if [ "${1:-speed}" = quality ]; then
  # Step-changing options must keep `pintor eval` accuracy within 1 point of 50-step stock.
  python -m pintor bench --quality --model "$MODEL" --device cpu --quality-n "${N:-24}" \
    --quality-configs "ddpm-20=@20/10/ddpm;deepcache2=deepcache=2@20/10/ddpm;dpm++2m-10=@10/10/dpm++2m;unipc-10=@10/10/unipc;prior-ddim-5=prior_scheduler=ddim@20/5/ddpm;fast=prior_scheduler=ddim@10/5/dpm++2m;fast-deepcache2=prior_scheduler=ddim,deepcache=2@10/5/dpm++2m" \
    --json "$RESULTS/$(date +%F)-pintor-shapes-cpu-quality.json"
  exit
fi
bench defaults                                   # stock and pintor at the model's defaults, with cold starts
bench compile --opt compile --no-cold-start      # exact: inductor C++ kernels (first run = compile time)
bench fused --opt fuse_qkv,channels_last --no-cold-start
bench deepcache2 --opt deepcache=2 --no-cold-start
bench dpm10 --pintor-scheduler dpm++2m --pintor-steps 10 --no-cold-start
bench fast --opt prior_scheduler=ddim --pintor-scheduler dpm++2m --pintor-steps 10 --pintor-prior-steps 5 --no-cold-start
bench fast-deepcache2 --opt prior_scheduler=ddim,deepcache=2 --pintor-scheduler dpm++2m --pintor-steps 10 --pintor-prior-steps 5 --no-cold-start
bench batch4 --batch 4 --no-cold-start
python -m pintor.bench.report "$RESULTS"/*-cpu-*.json
