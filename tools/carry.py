"""Keep a decoder that trains over several sessions in git, because `runs/` rarely outlives a session.

A cycle is one `tools/decexp.py` run: fresh images (a new `--pool-seed`), a cosine schedule that ends inside the
session, and `--init` from the carried UNet (none for the first). At its end this script stores the run's EMA
UNet in fp16 (diffusers format, `carry/NAME/unet`) and appends the cycle to `carry/NAME/cycles.jsonl`, so the next
session starts its cycle from here:

    python tools/decexp.py runs/wide38 --init carry/wide-decoder/unet --steps S --batch 32 --lr 6e-4 --warmup 300 \
        --pool 15000 --pool-seed 38 --snr-floor 1 --cache runs/wide38-cache.safetensors
    python tools/carry.py runs/wide38 --name wide-decoder --note "session 38" -- <the decexp arguments>

Usage: python tools/carry.py RUN [--name wide-decoder] [--note TEXT] [-- DECEXP_ARGS...]
"""
import argparse
import json
import sys
from pathlib import Path

CARRY = Path(__file__).resolve().parent.parent / "carry"

if __name__ == "__main__":
    argv = sys.argv[1:]
    cut = argv.index("--") if "--" in argv else len(argv)
    ap = argparse.ArgumentParser()
    ap.add_argument("run", help="a tools/decexp.py output folder with final/ (and oracle.json)")
    ap.add_argument("--name", default="wide-decoder")
    ap.add_argument("--note", default="")
    a = ap.parse_args(argv[:cut])
    run_args = argv[cut + 1:]
    import torch
    from diffusers import UNet2DConditionModel

    run = Path(a.run)
    if not (run / "final" / "config.json").is_file():
        raise SystemExit(f"{run} has no final/config.json: expected a finished tools/decexp.py run")
    # Loaded straight in fp16, the form it is carried in (decexp's --init reads it back as fp32).
    unet = UNet2DConditionModel.from_pretrained(run / "final", torch_dtype=torch.float16)
    dest = CARRY / a.name
    previous = sum(1 for _ in (dest / "cycles.jsonl").open()) if (dest / "cycles.jsonl").is_file() else 0
    unet.save_pretrained(dest / "unet", safe_serialization=True)
    oracle = json.loads((run / "oracle.json").read_text()) if (run / "oracle.json").is_file() else None
    row = {"cycle": previous + 1, "note": a.note, "decexp": run_args, "oracle": oracle,
           "parameters": sum(p.numel() for p in unet.parameters())}
    with (dest / "cycles.jsonl").open("a") as f:
        f.write(json.dumps(row) + "\n")
    print(f"carried cycle {row['cycle']} of {a.name} to {dest / 'unet'}")
