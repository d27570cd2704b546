"""MoVQ experiments: train (from scratch or from the shipped MoVQ) and judge round trips with the detector.

Usage: python tools/movqexp.py OUT --steps N [--init shipped] [--lr LR] [--pool N] [--eval-only]
"""
import argparse
import json
from pathlib import Path

import torch
from scenes import judge_per_form

from pintor.eval.evaluate import movq_round_trip


def round_trip(movq, n=40, seed=777):
    movq = movq.float().eval()
    return judge_per_form(lambda s, i: movq_round_trip(movq, s.image), n, seed, allow_held_out=True)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--init", default="scratch")
    ap.add_argument("--lr", type=float, default=8e-4)
    ap.add_argument("--pool", type=int, default=15000)
    ap.add_argument("--eval-only", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(2)
    from diffusers import VQModel

    from pintor.architectures import SHAPES, build_movq
    from pintor.training.data import build_shapes_pool
    from pintor.training.movq import MovqConfig, train_movq

    if a.eval_only:
        movq = VQModel.from_pretrained(a.out)
        print(json.dumps(round_trip(movq)))
        raise SystemExit
    if a.init == "shipped":
        import pintor
        movq = VQModel.from_pretrained(Path(pintor.__file__).parent / "weights/pintor-shapes/decoder/movq",
                                       torch_dtype=torch.float32)
    else:
        torch.manual_seed(0)
        movq = build_movq(SHAPES)
    pool = build_shapes_pool(a.pool, seed=0)
    cfg = MovqConfig(steps=a.steps, batch_size=16, lr=a.lr, seed=2,
                     checkpoint_every=max(50, min(500, a.steps // 10)), resume=True,
                     standardize=a.init != "shipped")
    r = train_movq(movq, pool, cfg, a.out)
    r.model.save_pretrained(Path(a.out) / "final")
    rt = round_trip(r.model)
    print(json.dumps(rt))
    (Path(a.out) / "roundtrip.json").write_text(json.dumps(rt))
