#!/usr/bin/env bash
# The GPU measurements of issue #4, in parts that each fit one 10-minute device call.
#
# Prepare once, on the development machine (the GPU machine has no network and no diffusers):
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#       -d .whl diffusers==0.42.1 importlib_metadata          # .whl/ is git-ignored
# Then, with the device tool (carry the wheels; one session has 30 device minutes, so A-D is the budget):
#   run(command="bash bench/gpu_run.sh A", carry=[".whl"], timeout_s=600)   # stock vs defaults; exact set, cold compile
#   run(command="bash bench/gpu_run.sh B", carry=[".whl"], timeout_s=600)   # exact set, warm compile cache; bf16
#   run(command="bash bench/gpu_run.sh C", carry=[".whl"], timeout_s=600)   # step-changing: DeepCache, DPM++ 25 steps
#   run(command="bash bench/gpu_run.sh D", carry=[".whl"], timeout_s=600)   # --low-vram, --lowest-vram
#   (E, optional: Kandinsky 2.1 and batch 4.) Call the next part right after the previous returns: the machine
#   stays warm 30 s, and a warm one keeps the random-weights model and the compile cache.
# Each part rebuilds the random-weights model if the machine is fresh (about a minute) and writes its JSON and
# log to $OUT; copy the JSON files into bench/results/ and regenerate the README table with
#   python -m pintor.bench.report bench/results/*.json
# Settings can be changed with environment variables: SIZE (768x768), STEPS (50), PRIOR_STEPS (25), REPEAT (3),
# MODEL (kandinsky-2.2), DEVICE (cuda), FAST (the exact options of the fast configuration). A dry run on a CPU:
#   DEVICE=cpu MODEL=pintor-shapes SIZE=128x128 STEPS=2 PRIOR_STEPS=2 REPEAT=1 OUT=/tmp/gpu bash bench/gpu_run.sh D
set -uo pipefail
PART=${1:-A}
OUT=${OUT:-bench/results/gpu}
mkdir -p "$OUT"
source bench/gpu_env.sh
export TORCHINDUCTOR_CACHE_DIR=${TORCHINDUCTOR_CACHE_DIR:-$HOME/.cache/pintor/inductor}

SIZE=${SIZE:-768x768}
STEPS=${STEPS:-50}
PRIOR_STEPS=${PRIOR_STEPS:-25}
REPEAT=${REPEAT:-3}
MODEL=${MODEL:-kandinsky-2.2}
DEVICE=${DEVICE:-cuda}
FAST=${FAST:-compile,cuda_graphs,fuse_qkv,channels_last,cudnn_benchmark}
COMMON=(--random-weights --model "$MODEL" --device "$DEVICE" --size "$SIZE" --steps "$STEPS" --prior-steps "$PRIOR_STEPS"
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
    # Every exact option, fp16 like stock; the first run includes compiling (cold cache on a fresh machine).
    bench exact-fast --opt "$FAST" --no-cold-start
    ;;
  B)
    # Again, with the compile cache part A filled if this is its machine: compile time and cold start, warm.
    bench exact-fast-warm --opt "$FAST"
    # bf16 instead of fp16 (own kernels: a cold compile).
    bench exact-fast-bf16 --dtype bfloat16 --opt "$FAST" --no-cold-start
    ;;
  C)
    # Step-changing, on top of the exact set: DeepCache (whole UNet every 3rd step), DPM-Solver++ 2M at 25 steps.
    bench fast-deepcache3 --opt "$FAST,deepcache=3" --no-cold-start
    bench fast-dpmpp25 --opt "$FAST" --pintor-scheduler dpm++2m --pintor-steps 25 --no-cold-start
    ;;
  D)
    # Memory modes against the resident stock run: text to image at 768x768 must fit 4 GB (low) and 2 GB (lowest),
    # low VRAM in at most 1.5x the time of the resident run.
    bench low-vram --low-vram --no-cold-start
    bench low-vram-sliced --low-vram --opt attention_slicing=1 --no-cold-start --no-baseline --repeat 1
    bench lowest-vram --lowest-vram --no-cold-start --no-baseline --repeat 1
    ;;
  E)
    # Optional: Kandinsky 2.1, and batch 4.
    COMMON=(--random-weights --model kandinsky-2.1 --device "$DEVICE" --size "$SIZE" --steps "$STEPS"
            --prior-steps "$PRIOR_STEPS" --batch 1 --repeat "$REPEAT")
    bench k21-exact-fast --opt "$FAST" --no-cold-start
    COMMON=(--random-weights --model "$MODEL" --device "$DEVICE" --size "$SIZE" --steps "$STEPS"
            --prior-steps "$PRIOR_STEPS" --batch 4 --repeat 2)
    bench batch4-exact-fast --opt "$FAST" --no-cold-start
    ;;
  *) echo "usage: bench/gpu_run.sh A|B|C|D|E"; exit 2 ;;
esac
tail -n 5 "$OUT/gpu-$PART.err" 2>/dev/null
