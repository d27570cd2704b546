"""Seconds per decoder / MoVQ training step: fp32 vs bf16 autocast vs channels_last (interleaved)."""
import sys
import time

import torch
import torch.nn.functional as F

from pintor.architectures import SHAPES, build_unet

torch.set_num_threads(int(sys.argv[1]) if len(sys.argv) > 1 else 2)
torch.manual_seed(0)
unet = build_unet(SHAPES)
print("unet params %.1fM" % (sum(p.numel() for p in unet.parameters()) / 1e6))
opt = torch.optim.AdamW(unet.parameters(), 1e-4)
x = torch.randn(32, 4, 16, 16)
t = torch.randint(1000, (32,))
emb = torch.randn(32, 64)


def step(mode):
    opt.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=mode == "bf16"):
        xx = x.to(memory_format=torch.channels_last) if mode == "cl" else x
        out = unet(xx, t, encoder_hidden_states=None, added_cond_kwargs={"image_embeds": emb}).sample[:, :4]
        loss = F.mse_loss(out.float(), x)
    loss.backward()
    opt.step()


modes = ["fp32", "bf16", "cl"]
times = {m: [] for m in modes}
for _r in range(6):
    for m in modes:
        if m == "cl":
            unet.to(memory_format=torch.channels_last)
        t0 = time.time()
        for _ in range(5):
            step(m)
        times[m].append((time.time() - t0) / 5)
        if m == "cl":
            unet.to(memory_format=torch.contiguous_format)
for m in modes:
    print(m, f"median {sorted(times[m])[len(times[m]) // 2]:.3f} s/step")
