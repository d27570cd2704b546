"""Best-of-K self-distillation of the embedded decoder (as RAFT does for language models).

`gen`: for captions of the training distribution (`ShapesGenerator(seed)`, no held-out pairs), draws
`--candidates` images each at the model's defaults and keeps the one the model's own score picks (its CLIP image
embedding nearest the embedding it was painted from), with that prior embedding. No judge is consulted.
`train`: a decoder cycle on those (prior embedding, image) pairs mixed with fresh renders and their true
embeddings, so the decoder learns to paint, from the embeddings text to image gives it, what its best draws look
like, without forgetting crisp renders.

    python tools/selfdistil.py gen --out runs/raft_gen.pt [--n 1500] [--seed 31] [--candidates 4]
    python tools/selfdistil.py train --gen runs/raft_gen.pt --out runs/raft1 [--renders 3000] [--render-seed 32]
                                     [--steps 2500] [--lr 2e-4] [--seed 23]
    python tools/candidate.py runs/cand --take decoder/unet=runs/raft1/model
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch


def gen(a) -> None:
    from tqdm.auto import tqdm

    import pintor
    from pintor.data.shapes import ShapesGenerator

    m = pintor.load(a.model)
    be = m.backend
    pick = be._best_candidates
    kept = {}

    # The backend keeps the embeddings it painted from to itself; wrap its pick to see the chosen one.
    def wrapped(images, embeds, req):
        out = pick(images, embeds, req)
        kept["emb"] = embeds[out[0].info["pintor_candidate"]["index"]].float().clone()
        return out

    be._best_candidates = wrapped
    shapes = ShapesGenerator(a.seed, allow_held_out=False)
    imgs, embs, caps = [], [], []
    with torch.inference_mode():
        for i in tqdm(range(a.n), desc="best-of draws", mininterval=10):
            caption = shapes.sample(i).caption
            im = m.generate(caption, seed=1000 + i, candidates=a.candidates, show_progress=False)[0]
            imgs.append(torch.from_numpy(np.array(im.convert("RGB"), dtype=np.uint8)).permute(2, 0, 1))
            embs.append(kept["emb"])
            caps.append(caption)
            if i % 250 == 249 or i == a.n - 1:  # a checkpoint of the slow part
                torch.save((torch.stack(imgs), torch.stack(embs), caps), a.out)


def train(a) -> None:
    from pintor.registry import embedded_path
    from pintor.training.clip import image_embeddings
    from pintor.training.components import load_components, save_trained
    from pintor.training.data import ImagePool, build_shapes_pool, clip_resize
    from pintor.training.decoder import DecoderConfig, train_decoder

    torch.manual_seed(0)
    gi, ge, gc = torch.load(a.gen)
    c = load_components(a.model or embedded_path())
    renders = build_shapes_pool(a.renders, seed=a.render_seed)
    true = image_embeddings(c.image_encoder, clip_resize(renders, c.image_processor), c.image_processor, device=a.device)
    pool = ImagePool(torch.cat([gi, renders.images]), list(gc) + renders.captions)
    cfg = DecoderConfig(kind="text2img", steps=a.steps, batch_size=32, lr=a.lr, snr_floor=1.0, seed=a.seed,
                        warmup_steps=100, checkpoint_every=500, device=a.device)
    cfg.validate()
    out = Path(a.out)
    r = train_decoder(c.unet, c.movq, c.image_encoder, c.image_processor, c.scheduler, pool, cfg, out,
                      image_embeds=torch.cat([ge, true]))
    c.unet = r.model.cpu()
    print(save_trained(c, out / "model", name=out.name))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="phase", required=True)
    g = sub.add_parser("gen")
    g.add_argument("--out", required=True)
    g.add_argument("--n", type=int, default=1500)
    g.add_argument("--seed", type=int, default=31)
    g.add_argument("--candidates", type=int, default=4)
    g.add_argument("--model", default=None)
    t = sub.add_parser("train")
    t.add_argument("--gen", required=True)
    t.add_argument("--out", required=True)
    t.add_argument("--renders", type=int, default=3000)
    t.add_argument("--render-seed", type=int, default=32)
    t.add_argument("--steps", type=int, default=2500)
    t.add_argument("--lr", type=float, default=2e-4)
    t.add_argument("--seed", type=int, default=23)
    t.add_argument("--model", default=None)
    t.add_argument("--device", default="cpu")
    a = ap.parse_args()
    gen(a) if a.phase == "gen" else train(a)


if __name__ == "__main__":
    main()
