"""Where is an object's shape lost: in the CLIP image embedding, in the prior, or in the decoder?

Fits an MLP probe on true CLIP image embeddings of rendered scenes that reads, for each palette colour, the
shape of the object of that colour (or "absent"), then reads fresh scenes' true embeddings and the prior's
embeddings of their captions with it. Shape accuracy is over the objects present, per caption form. Compare
with the decoder's variations (true embedding -> image) in `pintor eval`.

Usage: python tools/bindprobe.py [--model pintor-shapes] [--train 24000] [--test 400] [--out probe.json]
"""
import argparse
import json

import numpy as np
import torch
from tqdm.auto import tqdm

import pintor
from pintor.data.shapes import COLOURS, FORMS, SHAPES, make_sample, sample_spec

CLASSES = ("absent",) + tuple(SHAPES)


def scenes(n: int, seed: int, form: str | None = None) -> list:
    """Rendered samples whose colours each name one shape (so "the shape of the red object" is defined)."""
    out, i = [], 0
    while len(out) < n:
        rng = np.random.default_rng([seed, i])
        i += 1
        s = make_sample(sample_spec(rng, form=form), rng)
        shapes = {}
        if all(shapes.setdefault(o.colour, o.shape) == o.shape for o in s.objects):
            out.append(s)
    return out


def targets(samples) -> torch.Tensor:
    t = torch.zeros(len(samples), len(COLOURS), dtype=torch.long)
    for k, s in enumerate(samples):
        for o in s.objects:
            t[k, COLOURS.index(o.colour)] = CLASSES.index(o.shape)
    return t


@torch.no_grad()
def true_embeddings(painter, samples, batch: int = 256) -> torch.Tensor:
    enc = painter.backend._ensure_image_encoder()
    proc = painter.backend.prior.image_processor
    out = []
    for s in tqdm(range(0, len(samples), batch), desc="embed", mininterval=5):
        px = proc([x.image for x in samples[s:s + batch]], return_tensors="pt").pixel_values
        out.append(enc(px.to(enc.dtype)).image_embeds.float())
    return torch.cat(out)


@torch.no_grad()
def prior_embeddings(painter, samples, batch: int = 64, seed: int = 0) -> torch.Tensor:
    prior = painter.backend.prior
    d = painter.defaults
    out = []
    for s in tqdm(range(0, len(samples), batch), desc="prior", mininterval=5):
        caps = [x.caption for x in samples[s:s + batch]]
        g = torch.Generator().manual_seed(seed + s)
        r = prior(caps, num_inference_steps=d["prior_steps"], guidance_scale=d["prior_guidance_scale"], generator=g)
        out.append(r.image_embeds.float())
    return torch.cat(out)


def fit(x: torch.Tensor, y: torch.Tensor, epochs: int = 60, seed: int = 0):
    """A probe `z -> (len(z), colours)` class indices, fitted on embeddings `x` and targets `y`."""
    torch.manual_seed(seed)
    mu, sd = x.mean(0), x.std(0) + 1e-6
    net = torch.nn.Sequential(torch.nn.Linear(x.shape[1], 512), torch.nn.GELU(), torch.nn.Linear(512, 512),
                              torch.nn.GELU(), torch.nn.Linear(512, len(COLOURS) * len(CLASSES)))
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=1e-2)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 1e-3, total_steps=epochs * ((len(x) + 255) // 256))
    xn = (x - mu) / sd
    for _ in tqdm(range(epochs), desc="probe", mininterval=5):
        for idx in torch.randperm(len(x)).split(256):
            logits = net(xn[idx]).view(-1, len(COLOURS), len(CLASSES))
            loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), y[idx].flatten())
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    net.eval()

    @torch.no_grad()
    def probe(z: torch.Tensor) -> torch.Tensor:
        return net((z - mu) / sd).view(-1, len(COLOURS), len(CLASSES)).argmax(-1)

    return probe


def shape_accuracy(pred: torch.Tensor, y: torch.Tensor) -> dict:
    present = y > 0
    per_object = float((pred == y)[present].float().mean())
    # A scene is read right when every colour's class is right: shapes and which colours are absent.
    scene = float((pred == y).all(1).float().mean())
    return {"object_shape": round(per_object, 3), "scene": round(scene, 3)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--train", type=int, default=24000)
    ap.add_argument("--test", type=int, default=400, help="test scenes per form")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    painter = pintor.load(a.model, device="cpu", dtype="float32")
    train = scenes(a.train, seed=101)
    xt, yt = true_embeddings(painter, train), targets(train)
    probe = fit(xt, yt)
    report = {"model": a.model or "pintor-shapes", "train_scenes": a.train,
              "train": shape_accuracy(probe(xt), yt)}
    for form in FORMS:
        test = scenes(a.test, seed=202 + FORMS.index(form), form=form)
        y = targets(test)
        report[form] = {"true_embedding": shape_accuracy(probe(true_embeddings(painter, test)), y),
                        "prior_embedding": shape_accuracy(probe(prior_embeddings(painter, test)), y)}
        print(form, report[form], flush=True)
    print(json.dumps(report, indent=2))
    if a.out:
        with open(a.out, "w") as f:
            json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
