#!/usr/bin/env bash
# Fine-tunes the embedded pintor-shapes model on a lent GPU (issue #5), each part inside one 10-minute device call.
#
# The GPU machine has no network and no diffusers: fetch the wheels once as bench/gpu_run.sh's header says, then
#   run(command="bash tools/gpu_train.sh probe", carry=[".whl"])   # seconds per step of each trainer at a few batches
#   run(command="STEPS=... bash tools/gpu_train.sh decoders", carry=[".whl"])   # decoder, then inpaint and ControlNet
#                                                                             # fine-tuned from it
#   run(command="bash tools/gpu_train.sh prior", carry=[".whl"])     # prior fine-tune with the layout loss
#   run(command="bash tools/gpu_train.sh wide", carry=[".whl"])     # a decoder from scratch with 64 channels at 16x16
#       (session 15's lead) on the shipped CLIP and MoVQ; comes back as wide-unet.safetensors + wide-unet-config.json,
#       to ship beside the old-width inpaint and ControlNet decoders (a new config: copy both in whole)
#   run(command="bash tools/gpu_train.sh parallel", carry=[".whl"])  # a decoder cycle, and inpaint and ControlNet
#       decoders started over from the shipped decoder, all three at once (one small UNet leaves the GPU mostly
#       idle); each is stopped at LIMIT seconds and then exported from its newest checkpoint's EMA weights
# What comes back under $OUT: each trained UNet / prior as fp16 safetensors (the shipped configs are unchanged),
# the training logs (logs-PART.tgz) and this script's log. A candidate model is a copy of the shipped folder with
# those files in place of decoder/unet, inpaint/unet, controlnet-depth/unet and prior/prior's
# diffusion_pytorch_model.safetensors (same keys, shapes and dtype).
# A dry run on a CPU: DEVICE=cpu STEPS=4 FT_STEPS=2 POOL=64 PRIOR_STEPS=4 OUT=/tmp/g bash tools/gpu_train.sh decoders
set -uo pipefail
PART=${1:-probe}
OUT=${OUT:-runs/gpu}
mkdir -p "$OUT"
source bench/gpu_env.sh
DEVICE=${DEVICE:-cuda}
MODEL=${MODEL:-src/pintor/weights/pintor-shapes}
WORK=${WORK:-/tmp/pintor-gpu}
LOG="$OUT/gpu-train-$PART.log"
POOL=${POOL:-40000}
mkdir -p "$WORK"

train() {  # train TARGET OUTDIR ARGS...
  local target=$1 dir=$2; shift 2
  echo "=== $(date +%T) pintor train $target --out $dir $*" | tee -a "$LOG"
  python3 -m pintor train "$target" --out "$dir" --device "$DEVICE" "$@" 2>&1 | tr '\r' '\n' | grep -v '^\s*$' \
    | grep -E -v 'it/s\]$|s/it\]$' | tee -a "$LOG"
  python3 - "$dir" <<'EOF' | tee -a "$LOG"
import csv, sys
rows = list(csv.DictReader(open(f"{sys.argv[1]}/loss.csv")))
if len(rows) > 10:
    a, b = rows[len(rows) // 10], rows[-1]
    per = (float(b["seconds"]) - float(a["seconds"])) / (int(b["step"]) - int(a["step"]))
    print(f"{sys.argv[1]}: {len(rows)} steps, {per * 1000:.1f} ms/step, last loss {float(b['loss']):.4f}")
EOF
}

from_checkpoint() {  # from_checkpoint RUNDIR DEST: the newest checkpoint's EMA weights as fp16 (a run cut short)
  local ck; ck=$(ls -d "$1"/checkpoints/step-* 2>/dev/null | tail -1)
  [ -n "$ck" ] && echo "$1 was cut short: exporting $ck" | tee -a "$LOG" && half "$ck/ema.safetensors" "$2"
}

half() {  # half SRC DEST: an fp16 copy of a safetensors file
  python3 -c "import sys, safetensors.torch as s, torch; d = s.load_file(sys.argv[1]); \
s.save_file({k: (v.half() if v.is_floating_point() else v) for k, v in d.items()}, sys.argv[2])" "$1" "$2"
}

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null
  python3 -c "import torch, diffusers, transformers; print('torch', torch.__version__, 'diffusers', diffusers.__version__, 'transformers', transformers.__version__)"
} | tee -a "$LOG"

case "$PART" in
  probe)
    for b in 32 128; do
      train decoder "$WORK/probe-dec-$b" --model "$MODEL" --steps 120 --batch-size "$b" --pool-size 3000 --snr-floor 1
    done
    train inpaint "$WORK/probe-inp" --model "$MODEL" --steps 120 --batch-size 128 --pool-size 3000
    train prior "$WORK/probe-prior" --model "$MODEL" --steps 120 --batch-size 512 --pool-size 3000 --layout-weight 4
    ;;
  decoders)
    # The decoder with the truncated-SNR weighting (session 8: it reads positions better than min-SNR alone),
    # then the inpaint and ControlNet UNets started over from it.
    STEPS=${STEPS:-20000}; FT_STEPS=${FT_STEPS:-4000}; BATCH=${BATCH:-128}
    train decoder "$WORK/decoder" --model "$MODEL" --steps "$STEPS" --batch-size "$BATCH" --lr "${LR:-6e-4}" \
      --pool-size "$POOL" --seed "${SEED:-3}" --snr-floor 1
    half "$WORK/decoder/model/decoder/unet/diffusion_pytorch_model.safetensors" "$OUT/decoder-unet.safetensors"
    [ "$FT_STEPS" -gt 0 ] || { echo "FT_STEPS=0: no inpaint / ControlNet fine-tune" | tee -a "$LOG"; PART=decoder; }
    [ "$PART" = decoder ] || train inpaint "$WORK/inpaint" --model "$WORK/decoder/model" --from-decoder --steps "$FT_STEPS" \
      --batch-size "$BATCH" --lr "${FT_LR:-5e-4}" --pool-size "$POOL" --seed 5 --snr-floor 1
    [ "$PART" = decoder ] || half "$WORK/inpaint/model/inpaint/unet/diffusion_pytorch_model.safetensors" \
      "$OUT/inpaint-unet.safetensors"
    [ "$PART" = decoder ] || train controlnet "$WORK/controlnet" --model "$WORK/decoder/model" --from-decoder --steps "$FT_STEPS" \
      --batch-size "$BATCH" --lr "${FT_LR:-5e-4}" --pool-size "$POOL" --seed 6 --snr-floor 1
    [ "$PART" = decoder ] || half "$WORK/controlnet/model/controlnet-depth/unet/diffusion_pytorch_model.safetensors" \
      "$OUT/controlnet-unet.safetensors"
    ;;
  prior)
    PRIOR_STEPS=${PRIOR_STEPS:-6000}
    train prior "$WORK/prior" --model "$MODEL" --steps "$PRIOR_STEPS" --batch-size "${PRIOR_BATCH:-512}" \
      --lr "${PRIOR_LR:-3e-4}" --pool-size "$POOL" --seed 7 --layout-weight "${LAYOUT_WEIGHT:-4}" \
      --relation-weight "${RELATION_WEIGHT:-2}"
    half "$WORK/prior/model/prior/prior/diffusion_pytorch_model.safetensors" "$OUT/prior.safetensors"
    ;;
  parallel)
    LIMIT=${LIMIT:-530}; BATCH=${BATCH:-128}
    job() {  # job TARGET NAME UNET_FILE ARGS...
      local target=$1 name=$2 file=$3; shift 3
      ( timeout "$LIMIT" python3 -m pintor train "$target" --out "$WORK/$name" --device "$DEVICE" --model "$MODEL" \
          --batch-size "$BATCH" --pool-size "$POOL" --snr-floor 1 --sync-every "${SYNC_EVERY:-50}" "$@" \
          > "$WORK/$name.log" 2>&1
        if [ -f "$WORK/$name/model/$file" ]; then half "$WORK/$name/model/$file" "$OUT/$name-unet.safetensors"
        else from_checkpoint "$WORK/$name" "$OUT/$name-unet.safetensors"; fi
        tr '\r' '\n' < "$WORK/$name.log" | grep -v '^\s*$' | grep -E -v 'it/s\]$|s/it\]$' | tail -5 | sed "s|^|$name: |" ) &
    }
    job decoder decoder decoder/unet/diffusion_pytorch_model.safetensors --steps "${STEPS:-6000}" --lr "${LR:-6e-4}" --seed 4
    job inpaint inpaint inpaint/unet/diffusion_pytorch_model.safetensors --from-decoder --steps "${FT_STEPS:-5000}" \
      --lr "${FT_LR:-5e-4}" --seed 5
    job controlnet controlnet controlnet-depth/unet/diffusion_pytorch_model.safetensors --from-decoder \
      --steps "${FT_STEPS:-5000}" --lr "${FT_LR:-5e-4}" --seed 6
    wait
    for d in decoder inpaint controlnet; do
      python3 - "$WORK/$d" <<'EOF' | tee -a "$LOG"
import csv, sys
rows = list(csv.DictReader(open(f"{sys.argv[1]}/loss.csv")))
if len(rows) > 100:
    a, b = rows[len(rows) // 10], rows[-1]
    per = (float(b["seconds"]) - float(a["seconds"])) / (int(float(b["step"])) - int(float(a["step"])))
    print(f"{sys.argv[1]}: {len(rows)} steps, {per * 1000:.1f} ms/step, last loss {float(b['loss']):.4f}")
EOF
    done
    ;;
  wide)
    STEPS=${STEPS:-7000}; BATCH=${BATCH:-128}; LIMIT=${LIMIT:-540}  # ~57 ms a step at 128 on an H100 (session 9)
    echo "=== $(date +%T) decexp wide: $STEPS steps at batch $BATCH, stopped at $LIMIT s" | tee -a "$LOG"
    timeout "$LIMIT" python3 tools/decexp.py "$WORK/wide" --steps "$STEPS" --batch "$BATCH" --lr "${LR:-1.2e-3}" \
      --channels 64,64,128 --device "$DEVICE" --pool "$POOL" --snr-floor 1 --cache "$WORK/cache-$POOL.safetensors" \
      2>&1 | tr '\r' '\n' | grep -v '^\s*$' | grep -E -v 'it/s\]$|s/it\]$' | tee -a "$LOG"
    if [ -f "$WORK/wide/final/diffusion_pytorch_model.safetensors" ]; then
      half "$WORK/wide/final/diffusion_pytorch_model.safetensors" "$OUT/wide-unet.safetensors"
      cp "$WORK/wide/final/config.json" "$OUT/wide-unet-config.json"
    else
      from_checkpoint "$WORK/wide" "$OUT/wide-unet.safetensors"
      python3 -c "import sys; sys.path.insert(0, 'src'); from dataclasses import replace; \
from pintor.architectures import SHAPES, build_unet; \
build_unet(replace(SHAPES, unet_channels=(64, 64, 128))).save_config(sys.argv[1])" "$WORK/wide-config"
      cp "$WORK/wide-config/config.json" "$OUT/wide-unet-config.json"
    fi
    ;;
  *) echo "usage: tools/gpu_train.sh probe|decoders|prior|parallel|wide"; exit 2 ;;
esac
tar -czf "$OUT/logs-$PART.tgz" -C "$WORK" $(cd "$WORK" && ls -d */loss.csv */loss.png */config.json 2>/dev/null)
