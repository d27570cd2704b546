"""Where shapes are lost, judged per caption form on rendered scenes (held-out pairs allowed):

- the MoVQ round trip, and the round trip with Gaussian noise of `--noise` latent stds added;
- `--x0 T,...`: the decoder UNet's one-step (guided) estimate of the clean latent from the latent noised to
  timestep T, decoded: what each noise level leaves of an object's outline;
- `--strengths S,...`: img2img from the true latent at strength S (1 is a variation), with the true CLIP
  image embedding and the default 20 DDPM steps.

Usage: python tools/shapediag.py [--n 24] [--strengths 0.2,1.0] [--x0 20,50,100] [--noise 0.1] [--model M]
"""
import argparse
import json

import numpy as np
import torch
from scenes import judge_per_form

import pintor
from pintor.eval.evaluate import movq_decode, movq_round_trip

if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=24)
    ap.add_argument("--seed", type=int, default=4242)
    ap.add_argument("--strengths", default="0.2,0.4,0.6,0.8,1.0")
    ap.add_argument("--noise", default="")
    ap.add_argument("--x0", default="")
    ap.add_argument("--figure", help="write a PNG of pair scenes whose t=50 estimate fails: scene, round trip, "
                                     "estimate (4x, nearest)")
    ap.add_argument("--quantize", action="store_true",
                    help="decode every latent through the MoVQ codebook (the pipelines skip it)")
    ap.add_argument("--model", default=None)
    ap.add_argument("--guidance", type=float, default=None)
    ap.add_argument("--unet", help="a bare decoder UNet folder (tools/decexp.py's OUT/final) to judge instead")
    a = ap.parse_args()
    torch.set_num_threads(2)
    painter = pintor.load(a.model)
    b = painter.backend
    if a.unet:
        from diffusers import UNet2DConditionModel

        b.decoder.unet = b._unets[None] = UNet2DConditionModel.from_pretrained(a.unet).eval()
    movq = painter.components["movq"]
    if a.quantize:
        decode = movq.decode
        movq.decode = lambda z, force_not_quantize=True, **kw: decode(z, force_not_quantize=False, **kw)
    g_scale = a.guidance if a.guidance is not None else 1.75
    out = {"round_trip": judge_per_form(lambda s, i: movq_round_trip(movq, s.image), a.n, a.seed, True)}
    print("round_trip", out["round_trip"], flush=True)

    def embeds(image, gen):
        with torch.inference_mode():
            emb = b._image_embed(image, "cpu")
            neg = b._prior("", None, 1, [gen], 10, 1.25)[1]
        return emb, neg

    def latent_of(image):
        x = torch.from_numpy(np.asarray(image, dtype=np.float32) / 127.5 - 1).permute(2, 0, 1)[None]
        with torch.no_grad():
            return movq.encode(x).latents

    for sigma in [float(x) for x in a.noise.split(",") if x]:
        def noisy(s, i, sigma=sigma):
            g = torch.Generator().manual_seed(i)
            z = latent_of(s.image)
            return movq_decode(movq, z + sigma * z.std() * torch.randn(z.shape, generator=g))
        out[f"noise_{sigma}"] = judge_per_form(noisy, a.n, a.seed, True)
        print(f"noise_{sigma}", out[f"noise_{sigma}"], flush=True)

    unet, sched = b.pipeline("generate").unet, b.pipeline("generate").scheduler

    def one_step(s, i, t):
        g = torch.Generator().manual_seed(i)
        emb, neg = embeds(s.image, g)
        z = latent_of(s.image)
        with torch.inference_mode():
            ab = sched.alphas_cumprod[t]
            zt = ab.sqrt() * z + (1 - ab).sqrt() * torch.randn(z.shape, generator=g)
            v = unet(torch.cat([zt, zt]), torch.tensor([t, t]), encoder_hidden_states=None,
                     added_cond_kwargs={"image_embeds": torch.cat([neg, emb])}).sample[:, :4]
            v = v[:1] + g_scale * (v[1:] - v[:1])
            x0 = ab.sqrt() * zt - (1 - ab).sqrt() * v
        return movq_decode(movq, x0)

    for t in [int(x) for x in a.x0.split(",") if x]:
        out[f"x0_{t}"] = judge_per_form(lambda s, i, t=t: one_step(s, i, t), a.n, a.seed, True)
        print(f"x0_{t}", out[f"x0_{t}"], flush=True)

    if a.figure:
        from PIL import Image

        from pintor.data.shapes import make_sample, sample_spec
        from pintor.eval.detector import judge

        rows = []
        for i in range(200):
            rng = np.random.default_rng([a.seed, i, 2])  # the "pair" form's scenes, as judge_per_form draws them
            s = make_sample(sample_spec(rng, form="pair", allow_held_out=True), rng)
            est = one_step(s, i, t=50)
            if not judge(est, s.caption).correct:
                rows.append(np.concatenate([np.asarray(s.image), movq_round_trip(movq, s.image), est], 1))
            if len(rows) == 4:
                break
        grid = Image.fromarray(np.concatenate(rows, 0))
        grid.resize((grid.width * 2, grid.height * 2), Image.NEAREST).save(a.figure)
        print("wrote", a.figure)

    for strength in [float(x) for x in a.strengths.split(",") if x]:
        if strength >= 1:
            pipe, extra = b.pipeline("generate"), {}
        else:
            pipe, extra = b.pipeline("img2img"), {"strength": strength}

        def paint(s, i, pipe=pipe, extra=extra, strength=strength):
            gen = torch.Generator().manual_seed(1000 + i)
            emb, neg = embeds(s.image, gen)
            kw = dict(extra)
            if strength < 1:
                kw["image"] = [s.image]
            with torch.inference_mode():
                return pipe(image_embeds=emb, negative_image_embeds=neg, num_inference_steps=20,
                            guidance_scale=g_scale, height=128, width=128, generator=gen, **kw).images[0]
        out[f"strength_{strength}"] = judge_per_form(paint, a.n, a.seed, True)
        print(f"strength_{strength}", out[f"strength_{strength}"], flush=True)
    print(json.dumps(out))
