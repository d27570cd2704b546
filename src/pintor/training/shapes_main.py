"""`python -m pintor.training.shapes_main`: train the embedded pintor-shapes model, or probe step timings.

    python -m pintor.training.shapes_main --out runs/pintor-shapes [--budget-minutes 90] [--resume]
    python -m pintor.training.shapes_main --probe          # time a few steps of every stage, print a plan
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path


def probe(*, device: str = "cpu", steps: int = 8, budget_minutes: float = 90.0, pool_size: int = 20000) -> dict:
    """Times `steps` steps of every stage with the plan's batch sizes on `SHAPES` models; returns the costs.

    The first two steps of each stage are warm-up and not counted.
    """
    import torch

    from pintor.architectures import SHAPES, build_kandinsky22
    from pintor.training.clip import image_embeddings, train_clip
    from pintor.training.components import controlnet_unet_from, frozen, inpaint_unet_from
    from pintor.training.data import build_shapes_pool, clip_resize
    from pintor.training.decoder import train_decoder
    from pintor.training.movq import encode_latents, train_movq
    from pintor.training.shapes import STAGES, ShapesPlan, _stage_cfgs, plan_for_budget

    torch.manual_seed(0)
    c = build_kandinsky22(SHAPES, seed=0)
    n = 1024
    t0 = time.time()
    pool = build_shapes_pool(n, seed=0, progress=False)
    t_render = (time.time() - t0) / n
    t0 = time.time()
    pixels = clip_resize(pool, c.image_processor, progress=False)
    t_resize = (time.time() - t0) / n
    plan = replace(ShapesPlan(), **{f"{s}_steps": steps for s in STAGES})
    cfgs = _stage_cfgs(plan, device, 0, False, False)
    for cfg in cfgs.values():
        cfg.checkpoint_every = 10_000
        cfg.warmup_steps = 1
    costs = {}

    def cost(r) -> float:
        sec = [row["seconds"] for row in r.history]
        return (sec[-1] - sec[1]) / (len(sec) - 2)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        r = train_clip(c.text_encoder, c.image_encoder, c.tokenizer, c.image_processor, pool, cfgs["clip"], tmp / "c")
        costs["clip"] = cost(r)
        r = train_movq(c.movq, pool, cfgs["movq"], tmp / "m")
        costs["movq"] = cost(r)
        t0 = time.time()
        latents = encode_latents(frozen(c.movq, device), pool, device=device, progress=False)
        t_encode = (time.time() - t0) / n
        t0 = time.time()
        embeds = image_embeddings(c.image_encoder, pixels, c.image_processor, device=device, progress=False)
        t_embed = (time.time() - t0) / n
        from pintor.training.prior import train_prior

        r = train_prior(c.prior, c.text_encoder, c.image_encoder, c.tokenizer, c.image_processor, c.prior_scheduler,
                        pool, cfgs["prior"], tmp / "p", image_embeds=embeds)
        costs["prior"] = cost(r)
        for stage, unet in (("decoder", c.unet), ("inpaint", inpaint_unet_from(c.unet)),
                            ("controlnet", controlnet_unet_from(c.unet))):
            r = train_decoder(unet, c.movq, c.image_encoder, c.image_processor, c.scheduler, pool, cfgs[stage],
                              tmp / stage, latents=latents, image_embeds=embeds)
            costs[stage] = cost(r)
    per_image = t_render + t_resize + t_encode + t_embed
    fixed = per_image * pool_size + 90.0  # + loading, saving and the final export
    plan = plan_for_budget(budget_minutes, seconds_per_step=costs, fixed_seconds=fixed)
    return {"seconds_per_step": {k: round(v, 4) for k, v in costs.items()},
            "per_image_seconds": {"render": round(t_render, 5), "clip_resize": round(t_resize, 5),
                                  "encode": round(t_encode, 5), "embed": round(t_embed, 5)},
            "fixed_seconds": round(fixed, 1), "plan": asdict(plan),
            "plan_minutes": round((fixed + sum(costs[s] * getattr(plan, f"{s}_steps") for s in STAGES)) / 60, 1)}


def _passive_openmp(argv: list[str] | None) -> None:
    # OpenMP threads that spin-wait while another process holds a core can make a step 40x slower on a
    # shared CPU (measured here); sleeping instead costs almost nothing. The setting only takes effect
    # before torch loads, and importing this package loads it, so re-run the process with it set.
    if os.environ.get("OMP_WAIT_POLICY") is None:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
        os.execv(sys.executable, [sys.executable, "-m", "pintor.training.shapes_main",
                                  *(sys.argv[1:] if argv is None else argv)])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pintor.training.shapes_main", description=__doc__.splitlines()[0])
    p.add_argument("--out", help="run folder (the model goes to OUT/model)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--budget-minutes", type=float, default=90.0)
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    p.add_argument("--plan", help="'shipped' (the shipped weights' plan) or a JSON object overriding plan "
                                  "fields, e.g. '{\"decoder_steps\": 9000}'")
    p.add_argument("--sizes", help="a JSON object overriding fields of the SHAPES model sizes, e.g. "
                                   "'{\"embed_dim\": 128, \"text_hidden\": 128}'")
    p.add_argument("--probe", action="store_true", help="time a few steps per stage and print a plan")
    p.add_argument("--probe-steps", type=int, default=8)
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    _passive_openmp(argv)
    try:
        if args.probe:
            print(json.dumps(probe(device=args.device, steps=args.probe_steps, budget_minutes=args.budget_minutes),
                             indent=1))
            return 0
        if not args.out:
            raise ValueError("--out is required (the run folder), got nothing")
        from pintor.training.shapes import parse_plan, parse_sizes, train_shapes

        plan = parse_plan(args.plan, args.budget_minutes)
        sizes = parse_sizes(args.sizes)
        path = train_shapes(args.out, device=args.device, seed=args.seed, resume=args.resume, plan=plan,
                            sizes=sizes, progress=not args.no_progress)
        print(path)
        return 0
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
