#!/usr/bin/env bash
# The GPU measurements of issue #4, in parts that each fit one 10-minute device call.
#
# Prepare once, on the development machine (the GPU machine has no network and no diffusers):
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#       -d .whl diffusers==0.42.1 importlib_metadata          # .whl/ is git-ignored
# Then, with the device tool (carry the wheels):
#   run(command="bash bench/gpu_run.sh A", carry=[".whl"], timeout_s=600)   # stock vs pintor defaults; exact-fast (cold compile)
#   run(command="bash bench/gpu_run.sh B", carry=[".whl"], timeout_s=600)   # exact-fast again (warm compile cache), step-changing
#   run(command="bash bench/gpu_run.sh C", carry=[".whl"], timeout_s=600)   # --low-vram, --lowest-vram
# Each part rebuilds the random-weights model if the machine is fresh (about a minute) and writes its JSON and
# log to $OUT; copy the JSON files into bench/results/ and regenerate the README table with
#   python -m pintor.bench.report bench/results/*.json
# Settings can be changed with environment variables: SIZE (768x768), STEPS (50), PRIOR_STEPS (25), REPEAT (3),
# MODEL (kandinsky-2.2), FAST (the exact options of the fast configuration).
set -uo pipefail
PART=${1:-A}
OUT=${OUT:-bench/results/gpu}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
if ! python3 -c "import diffusers" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "install the wheels first (see the header of this script)"; exit 1; }
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
export TORCHINDUCTOR_CACHE_DIR=${TORCHINDUCTOR_CACHE_DIR:-$HOME/.cache/pintor/inductor}

SIZE=${SIZE:-768x768}
STEPS=${STEPS:-50}
PRIOR_STEPS=${PRIOR_STEPS:-25}
REPEAT=${REPEAT:-3}
MODEL=${MODEL:-kandinsky-2.2}
FAST=${FAST:-compile,cuda_graphs,fuse_qkv,channels_last,cudnn_benchmark}
COMMON=(--random-weights --model "$MODEL" --device cuda --size "$SIZE" --steps "$STEPS" --prior-steps "$PRIOR_STEPS"
        --batch 1 --repeat "$REPEAT")

bench() {  # bench LABEL ARGS...: one `pintor bench` run, its table in the log, its JSON in $OUT
  local label=$1; shift
  echo "=== $label: pintor bench ${COMMON[*]} $*" | tee -a "$OUT/gpu-$PART.log"
  python3 -m pintor bench "${COMMON[@]}" "$@" --label "$label" --json "$OUT/$label.json" 2>>"$OUT/gpu-$PART.err" \
    | tee -a "$OUT/gpu-$PART.log"
}

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import torch, diffusers, transformers; print('torch', torch.__version__, 'diffusers', diffusers.__version__, 'transformers', transformers.__version__)"
} | tee -a "$OUT/gpu-$PART.log"

case "$PART" in
  A)
    # Stock diffusers fp16 (SDPA) against pintor's defaults, with cold starts.
    bench stock-vs-defaults
    # Every exact option, bf16; the first run includes compiling (cold cache on a fresh machine).
    bench exact-fast-bf16 --dtype bfloat16 --opt "$FAST" --no-cold-start
    ;;
  B)
    # Again: warm compile cache (if this is the machine of part A), and the cold start with that cache.
    bench exact-fast-bf16-warm --dtype bfloat16 --opt "$FAST"
    # Step-changing: DeepCache (whole UNet every 3rd step) and DPM-Solver++ 2M at 25 steps, on top of the exact set.
    bench fast-deepcache3 --dtype bfloat16 --opt "$FAST,deepcache=3" --no-cold-start
    bench fast-dpmpp25 --dtype bfloat16 --opt "$FAST" --pintor-scheduler dpm++2m --pintor-steps 25 --no-cold-start
    ;;
  C)
    # Memory modes against the resident stock run: text to image at 768x768 must fit 4 GB (low) and 2 GB (lowest).
    bench low-vram --low-vram --no-cold-start
    bench low-vram-sliced --low-vram --opt attention_slicing=1 --no-cold-start --no-baseline
    bench lowest-vram --lowest-vram --no-cold-start --no-baseline --repeat 1
    ;;
  D)
    # Optional: Kandinsky 2.1 and batch 4, defaults and exact-fast.
    COMMON=(--random-weights --model kandinsky-2.1 --device cuda --size "$SIZE" --steps "$STEPS"
            --prior-steps "$PRIOR_STEPS" --batch 1 --repeat "$REPEAT")
    bench k21-exact-fast-bf16 --dtype bfloat16 --opt "$FAST" --no-cold-start
    COMMON=(--random-weights --model "$MODEL" --device cuda --size "$SIZE" --steps "$STEPS"
            --prior-steps "$PRIOR_STEPS" --batch 4 --repeat 2)
    bench batch4-exact-fast-bf16 --dtype bfloat16 --opt "$FAST" --no-cold-start
    ;;
  *) echo "usage: bench/gpu_run.sh A|B|C|D"; exit 2 ;;
esac
tail -n 5 "$OUT/gpu-$PART.err" 2>/dev/null
