"""Training the embedded `pintor-shapes` model from scratch, stage by stage.

Stages: CLIP towers -> MoVQ -> prior -> decoder -> inpaint and depth-ControlNet decoders. Each stage
trains in its own folder under `out_dir/work/` with its own checkpoints, and exports its weights to
`work/<stage>/final/` when done, so an interrupted run resumes inside the stage it stopped in.
Step counts come from a fixed plan (`plan_for_budget`), never from the clock, so the same seed gives
the same model on the same machine.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from pintor.architectures import SHAPES, Kandinsky22Sizes, build_kandinsky22, save_kandinsky22

# "refine" is a second cosine cycle of the decoder (a warm restart at half the learning rate): 0 steps in
# the 90-minute plan, 11000 in the shipped model, whose decoder was still learning at the end of its first cycle.
STAGES = ("clip", "movq", "prior", "decoder", "refine", "inpaint", "controlnet")
# What each stage is trained from: a re-planned stage makes the stages that depend on it, directly or not,
# train again, and leaves the others (a longer prior does not touch the decoders, which learn from images).
DEPENDS = {"clip": (), "movq": (), "prior": ("clip",), "decoder": ("clip", "movq"), "refine": ("decoder",),
           "inpaint": ("decoder", "refine"), "controlnet": ("decoder", "refine")}

# Seconds per step of each stage at the plan's batch sizes, measured on the shared 2-core CPU this model
# is trained on (`python -m pintor.training.shapes_main --probe`), and seconds of fixed work for a
# 15000-image pool (rendering, MoVQ-encoding it (22 ms an image), CLIP embeddings, saving).
SECONDS_PER_STEP = {"clip": 0.55, "movq": 0.56, "prior": 0.27, "decoder": 0.30, "refine": 0.30, "inpaint": 0.29, "controlnet": 0.60}
FIXED_SECONDS = 420.0
# Share of the step budget per stage: the decoder does the hardest job; the ControlNet's hint encoder
# runs at full image resolution, which makes its steps twice as dear.
STAGE_SHARES = {"clip": 0.113, "movq": 0.228, "prior": 0.085, "decoder": 0.342, "refine": 0.0, "inpaint": 0.083, "controlnet": 0.148}
# Fraction of the budget planned for (other jobs on a shared CPU slow everything down further).
BUDGET_SAFETY = 1.0
# Weight of the prior's layout loss in the planned runs. With plain MSE the prior placed the two objects of a
# relation caption on the named sides 0.49 of the time (a position probe reading its embeddings; the true
# image embeddings: 0.93); with this loss at 1.0, 0.65 (v3's CLIP, 1560 steps; 4680 plain steps: 0.57).
PRIOR_LAYOUT_WEIGHT = 1.0

# Default generation settings written to pintor.json (pintor's setting names). Tuned with `pintor eval`
# on a tuning prompt set (not eval's): decoder guidance above 3 lowered accuracy (7: 0.14 overall against
# 0.36 at 1), and so did prior guidance 8; at 1 the decoder skips its unconditional pass, half the work.
# Re-checked for v2 (refined decoder): 50 steps, guidance 2, prior guidance 1 or 4, 25 prior steps all lower.
# A fresh 90-minute model keeps these; the shipped weights read their own pintor.json: for v5 (three decoder
# cycles) decoder guidance 1.75 took the tuning set from 0.64 to 0.81 (1.5-2 all 0.79-0.81, 3 gave 0.70), and
# v6 (a position-reading decoder) samples its prior at guidance 1.25 (README).
DEFAULTS = {"steps": 20, "prior_steps": 10, "guidance_scale": 1.0, "prior_guidance_scale": 2.0, "width": 128,
            "height": 128, "scheduler": "ddpm"}


@dataclass
class ShapesPlan:
    """Step counts and batch sizes of every stage of `train_shapes` (the defaults fill about 88 minutes)."""

    pool_size: int = 15000
    clip_steps: int = 1000
    clip_batch: int = 128
    movq_steps: int = 2000
    movq_batch: int = 16
    prior_steps: int = 1500
    prior_batch: int = 128
    # The prior's auxiliary layout loss (`PriorConfig.layout_weight`); 0, the plain objective, is what plans
    # written before the field existed ran with. `plan_for_budget` and `SHIPPED_PLAN` use PRIOR_LAYOUT_WEIGHT.
    prior_layout_weight: float = 0.0
    decoder_steps: int = 5500
    decoder_batch: int = 32
    refine_steps: int = 0
    refine_batch: int = 32
    inpaint_steps: int = 1400
    inpaint_batch: int = 32
    controlnet_steps: int = 1200
    controlnet_batch: int = 24

    def seconds(self) -> float:
        """Estimated wall time on the reference CPU."""
        return FIXED_SECONDS + sum(getattr(self, f"{s}_steps") * SECONDS_PER_STEP[s] for s in STAGES)


# The plan of the shipped weights from v3 on, sized to train from scratch in one sitting on the 2-core CPU (v3: 106
# min on the idle CPU; over the 90-minute budget because accuracy comes first): CLIP twice as long as the 90-minute
# plan's (2040 steps: held-out pairs and colour binding retrieve better), a longer MoVQ (its round trip is the
# ceiling of every decoder: 2020 steps reconstructed 0.84 of the scenes the detector can read, 3000 steps 0.90), a
# prior with the layout loss, one decoder cycle of 7500 steps, then the inpaint and ControlNet decoders. Later
# versions go on from the shipped weights (`pintor train decoder --model pintor-shapes ...`, a further cosine
# cycle), as v2's refine stage did.
SHIPPED_PLAN = ShapesPlan(clip_steps=2040, movq_steps=3000, prior_steps=1560, prior_layout_weight=PRIOR_LAYOUT_WEIGHT,
                          decoder_steps=7500, refine_steps=0, inpaint_steps=1600, controlnet_steps=1200)


def parse_sizes(text: str | None) -> Kandinsky22Sizes:
    """The model sizes a `--sizes` argument names: `SHAPES` with the JSON object's fields replaced.

    For example `'{"embed_dim": 128, "text_hidden": 128}'` widens the CLIP embedding, which is all the
    decoder sees of a caption; lists become tuples (`"unet_channels": [32, 64, 128]`).

    Raises:
        ValueError: `text` is not a JSON object of `Kandinsky22Sizes` fields, or the sizes do not fit together.
    """
    if not text:
        return SHAPES
    sizes = _overridden(SHAPES, text, "--sizes must be a JSON object")
    if sizes.text_hidden != sizes.embed_dim:
        # The prior projects the text tower's hidden states with a Linear(embed_dim, ...).
        raise ValueError(f"--sizes: text_hidden must equal embed_dim (the prior reads text hidden states at the "
                         f"embedding width), got text_hidden {sizes.text_hidden} and embed_dim {sizes.embed_dim}")
    return sizes


def parse_plan(text: str | None, budget_minutes: float = 90.0) -> ShapesPlan:
    """The plan a `--plan` argument names.

    Args:
        text (`str`, *optional*): `"shipped"` (`SHIPPED_PLAN`), or a JSON object overriding fields of the
            budget's plan, e.g. `'{"decoder_steps": 9000}'`; `None` for the budget's plan.
        budget_minutes (`float`): the budget `plan_for_budget` fills.

    Raises:
        ValueError: `text` is neither `"shipped"` nor a JSON object of `ShapesPlan` fields.
    """
    if text == "shipped":
        return SHIPPED_PLAN
    plan = plan_for_budget(budget_minutes)
    if not text:
        return plan
    return _overridden(plan, text, "--plan must be 'shipped' or a JSON object")


def _overridden(base, text: str, what: str):
    # `base` (a dataclass) with the fields of the JSON object `text` replaced; lists become tuples.
    fields = list(asdict(base))
    try:
        overrides = json.loads(text)
        if not isinstance(overrides, dict):
            raise TypeError("not an object")
        overrides = {k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()}
        new = replace(base, **overrides)
    except (json.JSONDecodeError, TypeError) as e:
        raise ValueError(f"{what} of {fields}, got {text!r} ({e})") from None
    for k, v in overrides.items():
        # replace() takes any value: "no" for a bool would switch it on. An int stands for a float.
        want = type(getattr(base, k))
        ok = type(v) is want or (want is float and type(v) is int) or getattr(base, k) is None
        if not ok:
            raise ValueError(f"{what}: {k} must be a {want.__name__} like {getattr(base, k)!r}, got {v!r}")
    return new


def _check_resume(old: dict, new: dict, work: Path, out: Path) -> list[str]:
    """Checks that a run started with `old` settings can go on with `new` ones; returns the stages to redo.

    Seed, sizes and pool must match, and so must the steps and batch of every finished stage; a stage
    that has not finished may get a new plan (e.g. a longer decoder, or a refine stage), which is logged.
    Stages started (finished or not) on what a re-planned stage replaces (see `DEPENDS`) are returned to redo.

    Raises:
        ValueError: the runs differ in seed, sizes, pool or the plan of a finished stage.
    """
    for key in ("seed", "sizes"):
        if old.get(key) != new[key]:
            raise ValueError(f"cannot resume {str(out)!r}: it was started with {key} {old.get(key)}, not {new[key]}")
    op, np_ = old.get("plan", {}), new["plan"]
    if op.get("pool_size") != np_["pool_size"]:
        raise ValueError(f"cannot resume {str(out)!r}: it was started with pool_size {op.get('pool_size')}, "
                         f"not {np_['pool_size']}")
    # Plans written before a field existed ran with its default.
    op = {**asdict(ShapesPlan()), **op}
    redo: list[str] = []
    changed: set[str] = set()
    for stage in STAGES:
        finished = (work / stage / "final" / "done.json").is_file()
        keys = [k for k in np_ if k.startswith(stage + "_")]
        if all(op.get(k) == np_[k] for k in keys):
            if changed.intersection(DEPENDS[stage]) and (work / stage).exists():
                redo.append(stage)
                changed.add(stage)
            continue
        changed_keys = ", ".join(f"{k} {op.get(k)} -> {np_[k]}" for k in keys if op.get(k) != np_[k])
        if finished:
            raise ValueError(f"cannot resume {str(out)!r}: stage {stage} finished with another plan ({changed_keys}); "
                             f"to train it again with the new one, move {str(work / stage)!r} aside first")
        _log(f"resuming with a new plan for unfinished stage {stage}: {changed_keys}")
        changed.add(stage)
    if redo:
        _log(f"stages {', '.join(redo)} were built on a re-planned stage: they are trained again")
    return redo


def plan_for_budget(budget_minutes: float, *, seconds_per_step: dict[str, float] | None = None,
                    fixed_seconds: float = FIXED_SECONDS) -> ShapesPlan:
    """The plan whose estimated time fills `budget_minutes`.

    Args:
        budget_minutes (`float`): wall-time budget.
        seconds_per_step (`dict`, *optional*): per-stage step costs; `SECONDS_PER_STEP` by default.
        fixed_seconds (`float`): time that is not training steps.
    """
    sps = {**SECONDS_PER_STEP, **(seconds_per_step or {})}
    least = (fixed_seconds + 60) / 60 / BUDGET_SAFETY
    if not (isinstance(budget_minutes, (int, float)) and budget_minutes > least):
        raise ValueError(f"budget_minutes must exceed {least:.0f}, got {budget_minutes!r}")
    train_s = budget_minutes * 60 * BUDGET_SAFETY - fixed_seconds
    plan = ShapesPlan(prior_layout_weight=PRIOR_LAYOUT_WEIGHT)
    for s in STAGES:
        steps = int(train_s * STAGE_SHARES[s] / sps[s]) // 10 * 10
        setattr(plan, f"{s}_steps", max(10, steps) if STAGE_SHARES[s] > 0 else 0)
    return plan


def _log(msg: str) -> None:
    print(f"[pintor-shapes {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _stage_cfgs(plan: ShapesPlan, device: str, seed: int, resume: bool, progress: bool) -> dict:
    from pintor.training.clip import ClipConfig
    from pintor.training.decoder import DecoderConfig
    from pintor.training.movq import MovqConfig
    from pintor.training.prior import PriorConfig

    common = dict(device=device, resume=resume, progress=progress)

    def every(steps: int) -> int:
        return max(50, min(500, steps // 10))

    return {
        "clip": ClipConfig(steps=plan.clip_steps, batch_size=plan.clip_batch, lr=1e-3, temperature=0.05,
                           seed=seed + 1, checkpoint_every=every(plan.clip_steps), **common),
        "movq": MovqConfig(steps=plan.movq_steps, batch_size=plan.movq_batch, lr=8e-4, seed=seed + 2,
                           checkpoint_every=every(plan.movq_steps), **common),
        "prior": PriorConfig(steps=plan.prior_steps, batch_size=plan.prior_batch, lr=5e-4, seed=seed + 3,
                             layout_weight=plan.prior_layout_weight,
                             layout_probe_steps=min(3000, 2 * plan.prior_steps),
                             checkpoint_every=every(plan.prior_steps), **common),
        # On the same 3000 steps (tools/decexp.py, 96 scenes) a decoder ended at loss 0.0114 with peak lr 4e-4,
        # 0.0096 with 8e-4 and 0.0088 with 1.6e-3, and decoded true image embeddings right 0.125, 0.19 and 0.22
        # of the time: 1.2e-3 takes most of that gain with some margin for the longer, shipped cycles.
        "decoder": DecoderConfig(kind="text2img", steps=plan.decoder_steps, batch_size=plan.decoder_batch,
                                 lr=1.2e-3, seed=seed + 4, checkpoint_every=every(plan.decoder_steps), **common),
        "refine": DecoderConfig(kind="text2img", steps=plan.refine_steps, batch_size=plan.refine_batch, lr=6e-4,
                                warmup_steps=100, seed=seed + 7, checkpoint_every=every(plan.refine_steps), **common),
        "inpaint": DecoderConfig(kind="inpaint", steps=plan.inpaint_steps, batch_size=plan.inpaint_batch,
                                 lr=2e-4, warmup_steps=100, seed=seed + 5,
                                 checkpoint_every=every(plan.inpaint_steps), **common),
        "controlnet": DecoderConfig(kind="controlnet", steps=plan.controlnet_steps, batch_size=plan.controlnet_batch,
                                    lr=3e-4, warmup_steps=100, seed=seed + 6,
                                    checkpoint_every=every(plan.controlnet_steps), **common),
    }


def _save_module(module, path: Path) -> None:
    module.save_pretrained(path, safe_serialization=True)


def train_shapes(out_dir: str | Path, *, device: str = "cpu", seed: int = 0, budget_minutes: float = 90.0,
                 resume: bool = False, plan: ShapesPlan | None = None, sizes: Kandinsky22Sizes = SHAPES,
                 defaults: dict | None = None, progress: bool = True) -> Path:
    """Trains the whole embedded `pintor-shapes` model from scratch and saves it to `out_dir/model`.

    Args:
        out_dir (`str` or `Path`): run folder; stages work in `out_dir/work/<stage>/`.
        device (`str`): `"cpu"` or `"cuda"`.
        seed (`int`): seeds data, initialisation and every stage; the same seed gives the same model on
            the same machine.
        budget_minutes (`float`): wall-time budget on the reference 2-core CPU, turned into step counts
            by `plan_for_budget` (ignored when `plan` is given).
        resume (`bool`): continue an interrupted run: finished stages are loaded, the current one resumes
            from its newest checkpoint.
        plan (`ShapesPlan`, *optional*): explicit step counts and batch sizes.
        sizes (`Kandinsky22Sizes`): model sizes (`SHAPES`; tests pass `TINY`).
        defaults (`dict`, *optional*): default generation settings for `pintor.json`; `DEFAULTS` if omitted.
        progress (`bool`): show progress bars.

    Returns:
        The saved model folder, loadable with `pintor.load(path)`.
    """
    from diffusers import PriorTransformer, UNet2DConditionModel, VQModel
    from transformers import CLIPTextModelWithProjection, CLIPVisionModelWithProjection

    from pintor.training.cache import fingerprint, load_or_compute, processor_settings
    from pintor.training.clip import image_embeddings, train_clip, zero_image_embedding
    from pintor.training.components import controlnet_unet_from, frozen, inpaint_unet_from
    from pintor.training.data import build_shapes_pool, clip_resize
    from pintor.training.decoder import train_decoder
    from pintor.training.loop import check_device
    from pintor.training.movq import encode_latents, train_movq
    from pintor.training.prior import train_prior

    check_device(device)
    plan = plan or plan_for_budget(budget_minutes)
    out = Path(out_dir)
    work = out / "work"
    work.mkdir(parents=True, exist_ok=True)
    run_meta = {"seed": seed, "plan": asdict(plan), "sizes": asdict(sizes)}
    meta_path = work / "run.json"
    if resume and meta_path.is_file():
        for stage in _check_resume(json.loads(meta_path.read_text()), json.loads(json.dumps(run_meta)), work, out):
            # Kept beside the run rather than deleted: an earlier model's stage may still be wanted.
            stale = work / f"{stage}.stale"
            if stale.exists():
                shutil.rmtree(stale)
            (work / stage).rename(stale)
    elif not resume:
        # A fresh run never picks up an older run's finished stages.
        for s in STAGES:
            if (work / s / "final" / "done.json").is_file():
                (work / s / "final" / "done.json").unlink()
        cache = work / "cache.safetensors"
        if cache.is_file():
            cache.unlink()
    meta_path.write_text(json.dumps(run_meta, indent=1))
    t_start = time.time()
    _log(f"plan: {json.dumps(asdict(plan))}; estimated {plan.seconds() / 60:.1f} min on the reference CPU")

    torch.manual_seed(seed)
    c = build_kandinsky22(sizes, seed=seed)
    cfgs = _stage_cfgs(plan, device, seed, resume, progress)
    timings: dict[str, float] = {}

    def done(stage: str) -> bool:
        return resume and (work / stage / "final" / "done.json").is_file()

    def finish(stage: str, t0: float, **info) -> None:
        timings[stage] = time.time() - t0
        (work / stage / "final" / "done.json").write_text(json.dumps({"seconds": timings[stage], **info}))
        _log(f"{stage} done in {timings[stage] / 60:.1f} min")

    t0 = time.time()
    pool = build_shapes_pool(plan.pool_size, seed=seed, progress=progress)
    pixels = clip_resize(pool, c.image_processor, progress=progress)
    _log(f"rendered {len(pool)} training images in {time.time() - t0:.0f} s")

    # 1. CLIP towers.
    final = work / "clip" / "final"
    if done("clip"):
        c.text_encoder = CLIPTextModelWithProjection.from_pretrained(final / "text_encoder")
        c.image_encoder = CLIPVisionModelWithProjection.from_pretrained(final / "image_encoder")
    else:
        t0 = time.time()
        r = train_clip(c.text_encoder, c.image_encoder, c.tokenizer, c.image_processor, pool, cfgs["clip"],
                       work / "clip", pixels=pixels)
        c.text_encoder, c.image_encoder = r.model.text_encoder.cpu(), r.model.image_encoder.cpu()
        _save_module(c.text_encoder, final / "text_encoder")
        _save_module(c.image_encoder, final / "image_encoder")
        finish("clip", t0, acc=r.history[-1]["acc"])

    # 2. MoVQ.
    final = work / "movq" / "final"
    if done("movq"):
        c.movq = VQModel.from_pretrained(final)
    else:
        t0 = time.time()
        r = train_movq(c.movq, pool, cfgs["movq"], work / "movq")
        c.movq = r.model.cpu()
        _save_module(c.movq, final)
        finish("movq", t0, **r.info)

    # Latents and image embeddings of the pool, shared by the prior and decoder stages. Keyed by what they
    # depend on, so a resume that re-planned the CLIP or MoVQ stage encodes the pool again.
    def encode():
        t0 = time.time()
        lat = encode_latents(frozen(c.movq, device), pool, device=device, progress=progress)
        emb = image_embeddings(c.image_encoder, pixels, c.image_processor, device=device, progress=progress)
        _log(f"latents (std {lat.std():.3f}) and image embeddings in {time.time() - t0:.0f} s")
        return {"latents": lat, "image_embeds": emb}

    key = fingerprint("shapes-pool", pool.images, c.movq, c.image_encoder, processor_settings(c.image_processor),
                      str(device))
    cached = load_or_compute(work / "cache.safetensors", key, encode)
    latents, embeds = cached["latents"], cached["image_embeds"]
    c.image_encoder = c.image_encoder.cpu()

    # 3. Prior.
    final = work / "prior" / "final"
    if done("prior"):
        c.prior = PriorTransformer.from_pretrained(final)
    else:
        t0 = time.time()
        r = train_prior(c.prior, c.text_encoder, c.image_encoder, c.tokenizer, c.image_processor, c.prior_scheduler,
                        pool, cfgs["prior"], work / "prior", image_embeds=embeds)
        c.prior = r.model.cpu()
        _save_module(c.prior, final)
        finish("prior", t0)

    # 4-6. Decoders: the inpaint and ControlNet UNets start from the trained decoder.
    def decoder_stage(stage: str, unet_fn):
        final = work / stage / "final"
        if done(stage):
            return UNet2DConditionModel.from_pretrained(final)
        t0 = time.time()
        r = train_decoder(unet_fn(), c.movq, c.image_encoder, c.image_processor, c.scheduler, pool, cfgs[stage],
                          work / stage, latents=latents, image_embeds=embeds)
        unet = r.model.cpu()
        _save_module(unet, final)
        finish(stage, t0)
        return unet

    c.unet = decoder_stage("decoder", lambda: c.unet)
    if plan.refine_steps:
        c.unet = decoder_stage("refine", lambda: c.unet)
    c.inpaint_unet = decoder_stage("inpaint", lambda: inpaint_unet_from(c.unet, seed=seed + 5))
    c.controlnet_unet = decoder_stage("controlnet", lambda: controlnet_unet_from(c.unet, seed=seed + 6))

    c.extra = {
        "negative_image_embeds": "zero-image",
        "negative_image_embeds_note": "decoders were trained with image_encoder(zeros) as the unconditional "
                                      "embedding (the prior pipeline's get_zero_embed, returned when no "
                                      "negative prompt is given)",
        "training": {"seed": seed, "plan": asdict(plan), "minutes": round((time.time() - t_start) / 60, 1)},
    }
    model_dir = save_kandinsky22(c, out / "model", name="pintor-shapes", fp16=True, defaults=defaults or DEFAULTS)
    zero = zero_image_embedding(c.image_encoder, device="cpu")
    mb = sum(f.stat().st_size for f in model_dir.rglob("*.safetensors")) / 1e6
    _log(f"saved {model_dir} ({mb:.1f} MB of safetensors) after {(time.time() - t_start) / 60:.1f} min; "
         f"zero-image embedding norm {zero.norm():.2f}")
    return model_dir
