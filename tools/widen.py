"""Double a trained decoder UNet's full-resolution channels (`pintor.training.components.wider_unet_from`) and
say how far the grown UNet's predictions are from the old one's, by timestep.

The 16x16 level of the shipped decoder has 32 channels, one a GroupNorm group, and a decoder trained from
scratch with 64 there keeps outlines far better (docs/pintor-shapes-log.md, session 15); this grows the
trained one instead of training one from scratch (`tools/decexp.py OUT --init DIR` trains it on).

Usage: python tools/widen.py OUT [--base DIR] [--seed 0]
"""
import argparse

import torch

from pintor.registry import embedded_path

BASE = embedded_path() / "decoder/unet"

if __name__ == "__main__":
    from diffusers import UNet2DConditionModel

    from pintor.training.components import wider_unet_from

    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--base", default=str(BASE))
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    torch.set_num_threads(1)
    base = UNet2DConditionModel.from_pretrained(a.base, torch_dtype=torch.float32).eval()
    new = wider_unet_from(base, seed=a.seed).eval()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(8, base.config.in_channels, 16, 16, generator=g)
    t = torch.tensor([5, 20, 50, 100, 200, 400, 700, 950])
    emb = torch.randn(8, base.config.encoder_hid_dim, generator=g)
    kw = dict(encoder_hidden_states=None, added_cond_kwargs={"image_embeds": emb})
    with torch.no_grad():
        a0, a1 = base(x, t, **kw).sample, new(x, t, **kw).sample
    err = ((a0 - a1) ** 2).mean(dim=(1, 2, 3)) / (a0 ** 2).mean(dim=(1, 2, 3))
    print("relative squared difference of the predictions by timestep:",
          {int(ti): round(float(e), 4) for ti, e in zip(t, err, strict=True)})
    n_old, n_new = (sum(p.numel() for p in m.parameters()) / 1e6 for m in (base, new))
    print(f"weights {n_old:.3f}M -> {n_new:.3f}M")
    new.save_pretrained(a.out)
