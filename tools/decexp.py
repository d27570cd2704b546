"""Decoder experiments on the shipped model's CLIP and MoVQ: train a decoder of given sizes, decode true
CLIP image embeddings ("oracle") and judge them per form.

Usage: python tools/decexp.py OUT --steps N [--channels 32,64,128] [--layers 1] [--attn-full] [--lr 4e-4] [--batch 32]
                              [--device cuda] [--pool 15000] [--snr-floor 1] [--cache runs/v2cache.safetensors]
                              [--init UNET_DIR] [--warmup 200]
       python tools/decexp.py OUT --eval-only [--n 24]
"""
import argparse
import json
from pathlib import Path

import torch
from scenes import judge_per_form

from pintor.registry import embedded_path

WEIGHTS = embedded_path()
CACHE = Path("runs/v2cache.safetensors")


def shipped():
    from diffusers import DDPMScheduler, VQModel
    from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

    f32 = dict(torch_dtype=torch.float32)
    enc = CLIPVisionModelWithProjection.from_pretrained(WEIGHTS / "prior/image_encoder", **f32).eval()
    proc = CLIPImageProcessor.from_pretrained(WEIGHTS / "prior/image_processor")
    movq = VQModel.from_pretrained(WEIGHTS / "decoder/movq", **f32).eval()
    sched = DDPMScheduler.from_pretrained(WEIGHTS / "decoder/scheduler")
    return enc, proc, movq, sched


def oracle(unet, enc, proc, movq, sched, n=24, steps=20, seed=4242):
    from diffusers import KandinskyV22Pipeline

    pipe = KandinskyV22Pipeline(unet=unet.eval(), scheduler=sched, movq=movq)
    pipe.set_progress_bar_config(disable=True)
    with torch.no_grad():
        zero = enc(torch.zeros(1, 3, enc.config.image_size, enc.config.image_size)).image_embeds

    def paint(s, i):
        with torch.no_grad():
            emb = enc(**proc(s.image, return_tensors="pt")).image_embeds
        return pipe(image_embeds=emb, negative_image_embeds=zero, num_inference_steps=steps, guidance_scale=1.0,
                    height=128, width=128, generator=torch.Generator().manual_seed(i)).images[0]

    return judge_per_form(paint, n, seed, allow_held_out=False)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--steps", type=int, default=5000)
    ap.add_argument("--channels", default="32,64,128")
    ap.add_argument("--layers", type=int, default=1)
    ap.add_argument("--attn-full", action="store_true",
                    help="cross-attention at the full latent resolution too (Kandinsky22Sizes.unet_full_attention)")
    ap.add_argument("--lr", type=float, default=4e-4)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--n", type=int, default=24)
    ap.add_argument("--eval-only", action="store_true")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--pool", type=int, default=15000, help="rendered images; a new size or seed needs a new --cache")
    ap.add_argument("--pool-seed", type=int, default=0, help="seed of the rendered pool (0 is the one earlier runs used)")
    ap.add_argument("--snr-floor", type=float, default=None)
    ap.add_argument("--cache", default=str(CACHE), help="latents and embeddings of the pool, made once")
    ap.add_argument("--init", default=None,
                    help="start from this UNet (e.g. tools/widen.py's) instead of scratch; its config then sets the "
                         "sizes, not --channels / --layers / --attn-full")
    ap.add_argument("--warmup", type=int, default=200)
    a = ap.parse_args()
    torch.set_num_threads(2)
    from dataclasses import replace

    from diffusers import UNet2DConditionModel
    from safetensors.torch import load_file, save_file

    from pintor.architectures import SHAPES, build_unet
    from pintor.training.data import build_shapes_pool
    from pintor.training.decoder import DecoderConfig, train_decoder

    enc, proc, movq, sched = shipped()
    out = Path(a.out)
    if a.eval_only:
        unet = UNet2DConditionModel.from_pretrained(out if (out / "config.json").is_file() else out / "final")
        print(json.dumps(oracle(unet, enc, proc, movq, sched, n=a.n)))
        raise SystemExit
    pool = build_shapes_pool(a.pool, seed=a.pool_seed)
    cache = Path(a.cache)
    if not cache.is_file():
        from pintor.training.clip import image_embeddings
        from pintor.training.data import clip_resize
        from pintor.training.movq import encode_latents

        lat = encode_latents(movq.to(a.device), pool, device=a.device)
        emb = image_embeddings(enc, clip_resize(pool, proc), proc, device=a.device)
        movq.to("cpu"), enc.to("cpu")
        cache.parent.mkdir(parents=True, exist_ok=True)
        save_file({"latents": lat.contiguous(), "image_embeds": emb.contiguous()}, cache)
    c = load_file(cache)
    if len(c["latents"]) != len(pool):
        raise SystemExit(f"{cache} holds {len(c['latents'])} latents for a pool of {len(pool)}: name a new --cache")
    sizes = replace(SHAPES, unet_channels=tuple(int(v) for v in a.channels.split(",")), unet_layers_per_block=a.layers,
                    unet_full_attention=a.attn_full)
    torch.manual_seed(0)
    unet = UNet2DConditionModel.from_pretrained(a.init, torch_dtype=torch.float32) if a.init else build_unet(sizes)
    print("unet params %.2fM" % (sum(p.numel() for p in unet.parameters()) / 1e6), flush=True)
    cfg = DecoderConfig(steps=a.steps, batch_size=a.batch, lr=a.lr, seed=4, resume=True, device=a.device,
                        snr_floor=a.snr_floor, warmup_steps=a.warmup,
                        checkpoint_every=max(50, min(500, a.steps // 10)))
    r = train_decoder(unet, movq, enc, proc, sched, pool, cfg, out, latents=c["latents"], image_embeds=c["image_embeds"])
    r.model.to("cpu").save_pretrained(out / "final")
    enc, movq = enc.to("cpu"), movq.to("cpu")
    res = oracle(r.model, enc, proc, movq, sched, n=a.n)
    res["minutes"] = round(r.seconds / 60, 1)
    print(json.dumps(res))
    (out / "oracle.json").write_text(json.dumps(res))
