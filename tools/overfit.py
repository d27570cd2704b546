"""Does the shipped decoder decode its own training images' embeddings better than fresh ones (overfitting)?"""
import sys

import numpy as np
import torch
from diffusers import KandinskyV22Pipeline, UNet2DConditionModel

sys.path.insert(0, "tools")
import decexp  # noqa: E402

from pintor.data.shapes import ShapesGenerator  # noqa: E402
from pintor.eval.detector import judge  # noqa: E402

torch.set_num_threads(1)
enc, proc, movq, sched = decexp.shipped()
unet = UNet2DConditionModel.from_pretrained(sys.argv[1] if len(sys.argv) > 1 and sys.argv[1] else decexp.WEIGHTS / "decoder/unet",
                                            torch_dtype=torch.float32)
pipe = KandinskyV22Pipeline(unet=unet, scheduler=sched, movq=movq)
pipe.set_progress_bar_config(disable=True)
zero = enc(torch.zeros(1, 3, 64, 64)).image_embeds
n = int(sys.argv[2]) if len(sys.argv) > 2 else 48
for name, gen, start in (("train", ShapesGenerator(0), 0), ("fresh", ShapesGenerator(0), 10**6)):
    ok = {}
    for i in range(n):
        s = gen.sample(start + i)
        with torch.no_grad():
            emb = enc(**proc(s.image, return_tensors="pt")).image_embeds
        out = pipe(image_embeds=emb, negative_image_embeds=zero, num_inference_steps=20, guidance_scale=1.0,
                   height=128, width=128, generator=torch.Generator().manual_seed(i)).images[0]
        ok.setdefault(s.spec.form, []).append(judge(out, s.caption).correct)
    print(name, {k: round(float(np.mean(v)), 2) for k, v in ok.items()},
          f"all {np.mean([x for v in ok.values() for x in v]):.2f}", flush=True)
