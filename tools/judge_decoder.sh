#!/usr/bin/env bash
# Judge a decoder UNet folder inside the shipped model, on the n=96 run's prompts against v9's report:
#   bash tools/judge_decoder.sh runs/wide3/final
# Builds runs/cand-judge (the shipped model with that decoder, fp16, via tools/candidate.py), checks the
# 30 MB budget, then writes runs/eval-judge/ (report JSON with v9's case-by-case McNemar counts, contact sheet).
set -euo pipefail
src=$(realpath "$1")
rm -rf runs/judge-part runs/cand-judge runs/eval-judge
mkdir -p runs/judge-part/decoder
ln -s "$src" runs/judge-part/decoder/unet
python tools/candidate.py runs/cand-judge --take decoder/unet=runs/judge-part
python - <<'PY'
from pathlib import Path
t = sum(p.stat().st_size for p in Path("runs/cand-judge").rglob("*.safetensors"))
print(f"safetensors bytes {t}:", "within 30e6" if t <= 30e6 else "OVER 30e6")
PY
pintor eval --model runs/cand-judge --only prompts --n 96 --baseline docs/pintor-shapes-eval-n96-v9-candidates3.json \
  --out runs/eval-judge
