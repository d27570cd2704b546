"""Decoder guidance only above a timestep (below it the conditional prediction alone), judged on a prompt set.

Session 15 found the UNet's guided estimates keep fewer outlines at low noise than unguided ones, hence this
test of guidance limited to the noisier steps (Kynkaanniemi et al. 2024 limit it to the middle of the schedule).
Usage: python tools/guidance_interval.py [--n 24] [--seed 20262125] [--below 0,200,300]
"""
import argparse
import json

import torch

import pintor
from pintor.eval.evaluate import EvalConfig, default_prompts, evaluate_prompts

if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=24)
    ap.add_argument("--seed", type=int, default=20261125 + 1000)
    ap.add_argument("--below", default="0,200,300", help="timesteps under which guidance is off (0: never off)")
    ap.add_argument("--model", default=None)
    a = ap.parse_args()
    torch.set_num_threads(2)
    painter = pintor.load(a.model)
    pipe = painter.backend.decoder
    base_call = type(pipe).__call__
    state = {"below": 0}

    def stop_guidance(p, i, t, kw):
        if p._guidance_scale > 1 and int(t) < state["below"]:
            p._guidance_scale = 1.0  # do_classifier_free_guidance turns off: keep the conditional half only
            return {"image_embeds": kw["image_embeds"].chunk(2)[1]}
        return {}

    class Interval(type(pipe)):
        def __call__(self, *args, **kw):
            return base_call(self, *args, callback_on_step_end=stop_guidance,
                             callback_on_step_end_tensor_inputs=["image_embeds"], **kw)

    pipe.__class__ = Interval
    cfg = EvalConfig(n=a.n, seed=a.seed, modes=False)
    prompts = default_prompts(a.n, a.seed)
    out = {}
    for below in [int(x) for x in a.below.split(",")]:
        state["below"] = below
        r = evaluate_prompts(painter, prompts, cfg, [])
        out[below] = {k: round(v, 3) for k, v in r["accuracy"].items()}
        print(below, out[below], flush=True)
    print(json.dumps(out))
