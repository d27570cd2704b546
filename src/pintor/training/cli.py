"""The `pintor train` command: `add_parser(subparsers)` registers it, `run(args)` executes it.

    pintor train shapes --out runs/pintor-shapes [--resume]        # the whole embedded model from scratch
    pintor train clip|movq --out DIR [--model REF] [--data DIR]     # one stage; fresh SHAPES sizes without --model
    pintor train movq --decoder-only --model REF ...   # the MoVQ's decoder alone, its latents unchanged
    pintor train prior|decoder|inpaint|controlnet --out DIR --model REF [--data DIR]   # fine-tune
    pintor train inpaint|controlnet --from-decoder ...   # start over from the model's decoder

Every target writes a complete model folder to `OUT/model` (the starting model with the trained part
replaced), plus `OUT/checkpoints/`, `OUT/loss.csv` and `OUT/loss.png`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

TARGETS = ("shapes", "clip", "movq", "prior", "decoder", "inpaint", "controlnet")

_HELP = {
    "shapes": "train the embedded pintor-shapes model from scratch (all stages)",
    "clip": "CLIP text and image towers (contrastive)",
    "movq": "MoVQ autoencoder",
    "prior": "diffusion prior: text -> CLIP image embedding",
    "decoder": "decoder UNet: image embedding -> image",
    "inpaint": "inpainting decoder (starts from the model's decoder when it has none)",
    "controlnet": "depth ControlNet decoder (starts from the model's decoder when it has none)",
}


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Registers `train` and its targets on an `argparse` sub-parsers object; returns the `train` parser."""
    p = subparsers.add_parser("train", help="train or fine-tune models",
                              description="Train the embedded model from scratch, or train / fine-tune one part.")
    sub = p.add_subparsers(dest="target", metavar="TARGET", parser_class=type(p))
    sub.required = True
    for target in TARGETS:
        t = sub.add_parser(target, help=_HELP[target], description=_HELP[target])
        t.add_argument("--out", required=True, help="output folder (model in OUT/model)")
        t.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
        t.add_argument("--seed", type=int, default=0, help="seed for data, initialisation and noise")
        t.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")
        if target == "shapes":
            t.add_argument("--budget-minutes", type=float, default=90.0,
                           help="wall-time budget on the reference 2-core CPU (default: 90)")
            t.add_argument("--plan", metavar="JSON",
                           help="'shipped' for the shipped weights' plan, or a JSON object overriding plan fields, "
                                "e.g. '{\"decoder_steps\": 11000}' (see ShapesPlan)")
            t.add_argument("--sizes", metavar="JSON",
                           help="a JSON object overriding the model sizes, e.g. '{\"embed_dim\": 128, "
                                "\"text_hidden\": 128}' (see Kandinsky22Sizes; default: the shipped SHAPES)")
            continue
        t.add_argument("--data", metavar="DIR", help="imagefolder with metadata.jsonl (file_name, text); "
                                                     "default: the shapes world")
        t.add_argument("--model", metavar="REF", help="model folder or registry name to start from "
                                                      "(default: fresh SHAPES sizes for clip/movq, the "
                                                      "embedded pintor-shapes otherwise)")
        t.add_argument("--steps", type=int, help="optimizer steps")
        t.add_argument("--batch-size", type=int, help="samples per step")
        t.add_argument("--lr", type=float, help="peak learning rate")
        t.add_argument("--sync-every", type=int, metavar="N",
                       help="steps whose losses are read back together (default: 1 on a CPU, 50 on a GPU)")
        t.add_argument("--resolution", type=int, default=128, help="training image size for --data (default 128)")
        t.add_argument("--pool-size", type=int, default=10000,
                       help="shapes-world images to render when --data is not given (default 10000)")
        if target in ("decoder", "inpaint", "controlnet"):
            t.add_argument("--snr-gamma", type=float, metavar="G",
                           help="min-SNR-gamma loss weighting (default 5); 0 trains the plain loss, which weighs "
                                "the noisiest steps, where the layout is decided, far more")
            t.add_argument("--snr-floor", type=float, metavar="F",
                           help="least weight of a step under min-SNR (e.g. 1: truncated SNR); default none")
            t.add_argument("--low-noise", type=float, nargs=2, metavar=("FRACTION", "T"),
                           help="draw this fraction of timesteps from [0, T) instead of the whole schedule "
                                "(the last steps, which draw outlines; default: none)")
            t.add_argument("--background-balance", type=float, metavar="B",
                           help="even out the backgrounds captions name when drawing images: 0 (default) draws "
                                "images uniformly, 1 each background equally often")
            t.add_argument("--object-weight", type=float, metavar="W",
                           help="extra loss weight of latent cells covered by objects (from the depth maps): "
                                "1 + W * coverage; default 0")
            if target != "inpaint":
                t.add_argument("--prior-embeds", type=float, metavar="P",
                               help="paint from the prior's embedding of each image's caption a fraction P of "
                                    "the time, as at inference, instead of the image's own (default 0)")
            t.add_argument("--full-attention", action="store_true",
                           help="grow cross-attention on the image embedding at the full latent resolution too "
                                "(new blocks start as no-ops, so training starts from the model's predictions)")
            t.add_argument("--widen", action="store_true",
                           help="double the UNet's channels at the full latent resolution (Net2WiderNet: the "
                                "grown UNet starts from nearly the model's predictions)")
        if target == "movq":
            t.add_argument("--decoder-only", action="store_true",
                           help="train only the decoder, on round trips through the frozen encoder: the latents "
                                "stay the same, so the model's decoder UNets keep working (v9's MoVQ)")
            t.add_argument("--background-share", nargs=2, metavar=("NAME", "P"),
                           help="with --decoder-only: draw a fraction P of each batch from images whose caption "
                                "names that background, e.g. 'gray 0.6' (default: uniform)")
        if target == "prior":
            t.add_argument("--layout-weight", type=float, metavar="W",
                           help="weight of the layout loss (shapes world: asks the prior to place objects where "
                                "the caption says); default 0, the plain diffusers objective")
            t.add_argument("--relation-weight", type=float, metavar="R",
                           help="draw captions with a relation ('to the left of', ...) R times as often as the "
                                "others (default 1)")
        if target in ("inpaint", "controlnet"):
            t.add_argument("--from-decoder", action="store_true",
                           help=f"start a new {target} decoder from the model's decoder, even when the model "
                                "already has one (default: continue the existing one)")
    return p


# The prior settings `--prior-embeds` samples with when the model's pintor.json names none (diffusers' defaults).
_PRIOR_SAMPLING = {"prior_steps": 25, "prior_guidance_scale": 4.0}


def _positive(name: str, v):
    if v is not None and not v > 0:
        raise ValueError(f"--{name} must be positive, got {v}")
    return v


def _config(args, cls, **fixed):
    kw = dict(fixed, device=args.device, seed=args.seed, resume=args.resume)
    for flag, field in (("steps", "steps"), ("batch_size", "batch_size"), ("lr", "lr"), ("sync_every", "sync_every")):
        v = _positive(flag.replace("_", "-"), getattr(args, flag, None))
        if v is not None:
            kw[field] = v
    cfg = cls(**kw)
    cfg.checkpoint_every = max(1, min(cfg.checkpoint_every, cfg.steps))
    cfg.warmup_steps = min(cfg.warmup_steps, max(0, cfg.steps // 10))
    cfg.validate()
    return cfg


def _start_model(args):
    from pintor.architectures import SHAPES, build_kandinsky22
    from pintor.training.components import load_components

    if args.model:
        return load_components(args.model, need=("prior",) if args.target == "clip" else
                               ("decoder",) if args.target == "movq" else ("prior", "decoder"))
    if args.target in ("clip", "movq"):
        return build_kandinsky22(SHAPES, seed=args.seed)
    from pintor import registry

    if not (registry.embedded_path() / "prior").is_dir():
        raise ValueError(f"train {args.target} needs --model (a model folder with trained CLIP towers and MoVQ, "
                         "e.g. OUT/model of 'pintor train clip'); the embedded pintor-shapes weights are not installed")
    return load_components(registry.embedded_path())


def _pool(args):
    from pintor.training.data import build_shapes_pool, load_imagefolder_pool

    if args.data:
        return load_imagefolder_pool(args.data, resolution=args.resolution)
    return build_shapes_pool(args.pool_size, seed=args.seed)


def run(args) -> int:
    """Runs a parsed `pintor train ...` command; returns the exit code.

    Raises:
        pintor.errors.PintorError: bad input (a `ValueError` with a one-line message).
    """
    from pintor.errors import PintorError

    try:
        return _run(args)
    except PintorError:
        raise
    except ValueError as e:
        raise PintorError(str(e)) from None


def _run(args) -> int:
    if args.target == "shapes":
        # shapes_main re-runs the process with passive OpenMP waits before torch loads (see there).
        from pintor.training.shapes_main import main as shapes_main

        argv = ["--out", args.out, "--device", args.device, "--seed", str(args.seed),
                "--budget-minutes", str(args.budget_minutes)]
        argv += ["--resume"] * args.resume + (["--plan", args.plan] if args.plan else [])
        argv += ["--sizes", args.sizes] if args.sizes else []
        return shapes_main(argv)

    import torch

    from pintor.training.loop import check_device

    check_device(args.device)
    out = Path(args.out)

    from pintor.training.clip import ClipConfig, train_clip
    from pintor.training.components import (
        controlnet_unet_from,
        full_attention_unet_from,
        inpaint_unet_from,
        save_trained,
        wider_unet_from,
    )
    from pintor.training.decoder import DecoderConfig, train_decoder
    from pintor.training.movq import MovqConfig, train_movq
    from pintor.training.prior import PriorConfig, train_prior

    kind = {"decoder": "text2img", "inpaint": "inpaint", "controlnet": "controlnet"}.get(args.target)
    # Check every setting before the slow work (loading the model, rendering data).
    if kind is not None:
        extra = {}
        if args.snr_gamma is not None:
            if args.snr_gamma < 0:
                raise ValueError(f"--snr-gamma must be 0 (plain loss) or positive, got {args.snr_gamma}")
            extra["snr_gamma"] = args.snr_gamma or None
        if args.snr_floor is not None:
            gamma = extra.get("snr_gamma", DecoderConfig.snr_gamma)
            if gamma is None or not 0 < args.snr_floor <= gamma:
                raise ValueError(f"--snr-floor must be positive and at most the min-SNR gamma ({gamma}), "
                                 f"got {args.snr_floor}")
            extra["snr_floor"] = args.snr_floor
        if args.low_noise is not None:
            fraction, t_max = args.low_noise
            if not (0 < fraction <= 1 and t_max >= 1 and t_max == int(t_max)):
                raise ValueError(f"--low-noise takes a fraction in (0, 1] and a whole number of timesteps, got "
                                 f"{fraction:g} {t_max:g}")
            extra.update(low_noise_fraction=fraction, low_noise_max=int(t_max))
        if args.background_balance is not None:
            if not 0 <= args.background_balance <= 1:
                raise ValueError(f"--background-balance must be in [0, 1], got {args.background_balance:g}")
            extra["background_balance"] = args.background_balance
        if args.object_weight is not None:
            if not args.object_weight >= 0:
                raise ValueError(f"--object-weight must be >= 0, got {args.object_weight:g}")
            extra["object_weight"] = args.object_weight
        if getattr(args, "prior_embeds", None) is not None:
            if not 0 <= args.prior_embeds <= 1:
                raise ValueError(f"--prior-embeds must be in [0, 1], got {args.prior_embeds:g}")
            extra["p_prior_embeds"] = args.prior_embeds
        cfg = _config(args, DecoderConfig, kind=kind, **extra)
    elif args.target == "prior":
        extra = {}
        if args.layout_weight is not None:
            if not args.layout_weight >= 0:
                raise ValueError(f"--layout-weight must be 0 or positive, got {args.layout_weight}")
            extra["layout_weight"] = args.layout_weight
        if args.relation_weight is not None:
            extra["relation_weight"] = _positive("relation-weight", args.relation_weight)
        cfg = _config(args, PriorConfig, **extra)
    elif args.target == "movq":
        extra = {}
        if args.background_share is not None:
            if not args.decoder_only:
                raise ValueError("--background-share needs --decoder-only")
            name, share = args.background_share
            try:
                share = float(share)
            except ValueError:
                raise ValueError(f"--background-share takes a background name and a share in [0, 1], got "
                                 f"{name} {share}") from None
            extra["background_share"] = (name.lower(), share)
        if args.decoder_only and not args.model:
            raise ValueError("--decoder-only fine-tunes a trained MoVQ's decoder: name the model with --model")
        cfg = _config(args, MovqConfig, decoder_only=args.decoder_only, **extra)
    else:
        cfg = _config(args, ClipConfig)
    _positive("pool-size", args.pool_size)
    c = _start_model(args)
    pool = _pool(args)
    torch.manual_seed(args.seed)
    if args.target == "clip":
        r = train_clip(c.text_encoder, c.image_encoder, c.tokenizer, c.image_processor, pool, cfg, out)
        c.text_encoder, c.image_encoder = r.model.text_encoder.cpu(), r.model.image_encoder.cpu()
    elif args.target == "movq":
        c.movq = train_movq(c.movq, pool, cfg, out).model.cpu()
    elif args.target == "prior":
        c.prior = train_prior(c.prior, c.text_encoder, c.image_encoder, c.tokenizer, c.image_processor,
                              c.prior_scheduler, pool, cfg, out).model.cpu()
    else:
        if kind == "text2img":
            unet = c.unet
        else:
            # Continue the model's own inpaint / ControlNet UNet unless asked to start over from its decoder
            # (after a better decoder has been trained, say).
            existing = c.inpaint_unet if kind == "inpaint" else c.controlnet_unet
            start_from = inpaint_unet_from if kind == "inpaint" else controlnet_unet_from
            unet = existing if existing is not None and not args.from_decoder else start_from(c.unet, seed=args.seed)
        if args.widen:
            unet = wider_unet_from(unet, seed=args.seed)
        if args.full_attention:
            unet = full_attention_unet_from(unet, seed=args.seed)
        prior_embeds = None
        if cfg.p_prior_embeds:
            from pintor.training.cache import fingerprint, load_or_compute
            from pintor.training.prior import sample_prior_embeddings

            d = {**_PRIOR_SAMPLING, **(c.extra.get("_meta", {}).get("defaults") or {})}
            settings = dict(num_inference_steps=d["prior_steps"], guidance_scale=d["prior_guidance_scale"],
                            seed=args.seed, device=cfg.device)
            key = fingerprint("prior_embeds", pool.captions, c.prior, c.text_encoder, c.image_encoder,
                              sorted(c.tokenizer.get_vocab().items()), c.prior_scheduler.config,
                              sorted(settings.items()))
            prior_embeds = load_or_compute(out / "cache" / "prior_embeds.safetensors", key, lambda: {
                "prior_embeds": sample_prior_embeddings(
                    c.prior, c.text_encoder, c.tokenizer, c.image_encoder, c.image_processor, c.prior_scheduler,
                    pool.captions, **settings)})["prior_embeds"]
        r = train_decoder(unet, c.movq, c.image_encoder, c.image_processor, c.scheduler, pool, cfg, out,
                          prior_embeds=prior_embeds)
        setattr(c, {"text2img": "unet", "inpaint": "inpaint_unet", "controlnet": "controlnet_unet"}[kind], r.model.cpu())
    print(save_trained(c, out / "model", name=out.name))
    return 0
