"""Seconds the trainers spend encoding a pool (MoVQ latents and CLIP image embeddings) at their default batches.

    python bench/encode_pool.py --n 40000 [--compare-n 2048] [--label L]

Writes `bench/results/<date>-pintor-shapes-cpu-encode-pool[-L].json` with the host and versions. `--compare-n`
images are also encoded at the batches used before session 30 (64 and 256), to give the per-image ratio.
"""

import argparse
import datetime as dt
import json
import time
from pathlib import Path

import torch
from diffusers import VQModel
from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

from pintor.host import host_info, versions
from pintor.registry import embedded_path
from pintor.training.clip import image_embeddings
from pintor.training.data import build_shapes_pool, clip_resize
from pintor.training.movq import encode_latents


def timed(fn, *args, **kwargs):
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=40000)
    ap.add_argument("--compare-n", type=int, default=2048)
    ap.add_argument("--label", default="")
    a = ap.parse_args()
    torch.set_num_threads(2)
    w = embedded_path()
    movq = VQModel.from_pretrained(w / "decoder/movq", torch_dtype=torch.float32).eval()
    enc = CLIPVisionModelWithProjection.from_pretrained(w / "prior/image_encoder", torch_dtype=torch.float32).eval()
    proc = CLIPImageProcessor.from_pretrained(w / "prior/image_processor")
    report = {"host": host_info("cpu"), "versions": versions(), "date": dt.date.today().isoformat(), "n": a.n,
              "compare_n": a.compare_n}

    small = build_shapes_pool(a.compare_n, seed=0)
    px = clip_resize(small, proc)
    cmp = {}
    for name, lat_batch, emb_batch in (("old", 64, 256), ("default", None, None)):
        lat, s_lat = timed(encode_latents, movq, small, device="cpu", batch_size=lat_batch, progress=False)
        emb, s_emb = timed(image_embeddings, enc, px, proc, device="cpu", batch_size=emb_batch, progress=False)
        cmp[name] = {"latents_ms_per_image": 1000 * s_lat / len(small), "embeds_ms_per_image": 1000 * s_emb / len(small),
                     "latents": lat, "embeds": emb}
    report["compare"] = {k: {m: round(v[m], 2) for m in ("latents_ms_per_image", "embeds_ms_per_image")}
                         for k, v in cmp.items()}
    report["compare"]["bit_identical"] = bool(torch.equal(cmp["old"]["latents"], cmp["default"]["latents"])
                                              and torch.equal(cmp["old"]["embeds"], cmp["default"]["embeds"]))

    pool, s_render = timed(build_shapes_pool, a.n, seed=0)
    _, s_lat = timed(encode_latents, movq, pool, device="cpu")
    px, s_resize = timed(clip_resize, pool, proc)
    _, s_emb = timed(image_embeddings, enc, px, proc, device="cpu")
    report["seconds"] = {"render": round(s_render, 1), "latents": round(s_lat, 1), "clip_resize": round(s_resize, 1),
                         "embeds": round(s_emb, 1), "encoding_total": round(s_lat + s_resize + s_emb, 1)}
    out = Path("bench/results") / (f"{report['date']}-pintor-shapes-cpu-encode-pool"
                                   + (f"-{a.label}" if a.label else "") + ".json")
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report["compare"]), json.dumps(report["seconds"]))
    print(out)


if __name__ == "__main__":
    main()
