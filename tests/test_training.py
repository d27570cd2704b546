"""Smoke tests of pintor.training: a few steps of every trainer on 16 tiny shapes images with TINY models.

The trainers are deterministic in their seed, so "the loss falls" is checked on fixed runs.
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import re
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch

import pintor
from pintor.architectures import TINY, build_kandinsky22, save_kandinsky22

RES = 64  # TINY MoVQ has 4 levels: 64 px images give 8 x 8 latents


@pytest.fixture(autouse=True)
def _one_thread():
    # The cores are shared with other jobs, and OpenMP threads that spin-wait for a busy core can make a
    # step 40x slower; these models are too small to gain from a second thread anyway.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def shapes_folder(tmp_path_factory) -> Path:
    from pintor.data.shapes import write_imagefolder

    return write_imagefolder(tmp_path_factory.mktemp("data") / "shapes", 16, seed=3, progress=False)


@pytest.fixture(scope="module")
def pool(shapes_folder):
    from pintor.training.data import load_imagefolder_pool

    return load_imagefolder_pool(shapes_folder, resolution=RES, progress=False)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("models") / "tiny"
    save_kandinsky22(build_kandinsky22(TINY, seed=0), path, name="tiny")
    return path


def _mean(rows, key="loss"):
    return sum(r[key] for r in rows) / len(rows)


def _fast(cls, **kw):
    return cls(progress=False, warmup_steps=1, checkpoint_every=kw.pop("checkpoint_every", 1000), **kw)


# ---------------------------------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------------------------------


def _toy(tmp, steps, resume=False, stop_at=None, sync_every=None, nan_at=None):
    from pintor.training.loop import TrainConfig, train_loop

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Linear(8, 1))
    w = torch.tensor([[1.0], [-2.0], [0.5], [3.0]])

    def step(i, gen):
        if stop_at is not None and i == stop_at:
            raise KeyboardInterrupt
        x = torch.randn(16, 4, generator=gen)
        loss = torch.nn.functional.mse_loss(model(x), x @ w)
        return {"loss": loss * float("nan") if i == nan_at else loss, "extra": loss.detach() * 2}

    cfg = TrainConfig(steps=steps, batch_size=16, lr=5e-2, warmup_steps=2, checkpoint_every=4, progress=False,
                      resume=resume, ema_decay=0.9, grad_clip=None, sync_every=sync_every)
    return train_loop(model, step, cfg, tmp, name="toy")


def test_loop_logs_plots_and_resumes_bit_exactly(tmp_path):
    full = _toy(tmp_path / "a", 12)
    assert _mean(full.history[-3:]) < 0.5 * _mean(full.history[:3])
    rows = list(csv.DictReader(open(tmp_path / "a" / "loss.csv")))
    assert [int(float(r["step"])) for r in rows] == list(range(12)) and "lr" in rows[0]
    assert (tmp_path / "a" / "loss.png").stat().st_size > 1000
    host = json.loads((tmp_path / "a" / "config.json").read_text())["host"]  # step times need their machine
    assert host["device"] == "cpu" and host["device_name"].startswith("CPU ") and host["torch_threads"] >= 1
    ckpt = full.checkpoint
    assert sorted(p.name for p in ckpt.iterdir()) == ["ema.safetensors", "model.safetensors",
                                                      "optimizer.safetensors", "state.json"]
    assert not list(ckpt.glob("*.bin")) and not list(ckpt.glob("*.pt"))

    with pytest.raises(KeyboardInterrupt):
        _toy(tmp_path / "b", 12, stop_at=6)  # dies after the step-4 checkpoint
    resumed = _toy(tmp_path / "b", 12, resume=True)
    for p, q in zip(full.model.parameters(), resumed.model.parameters(), strict=True):
        assert torch.equal(p, q)
    rows = list(csv.DictReader(open(tmp_path / "b" / "loss.csv")))
    assert [int(float(r["step"])) for r in rows] == list(range(12))
    # Resuming a finished run trains nothing more and gives the same weights.
    again = _toy(tmp_path / "b", 12, resume=True)
    assert all(torch.equal(p, q) for p, q in zip(full.model.parameters(), again.model.parameters(), strict=True))


def test_loop_reading_losses_in_batches_changes_nothing_and_still_stops_at_nan(tmp_path):
    # What a GPU run does (losses read back every few steps), here on the CPU: same weights, same log.
    each = _toy(tmp_path / "a", 11)
    batched = _toy(tmp_path / "b", 11, sync_every=3)
    assert all(torch.equal(p, q) for p, q in zip(each.model.parameters(), batched.model.parameters(), strict=True))
    assert [(r["step"], r["loss"], r["extra"]) for r in each.history] == \
        [(r["step"], r["loss"], r["extra"]) for r in batched.history]
    with pytest.raises(FloatingPointError, match="loss became nan at step 5; lower --lr"):
        _toy(tmp_path / "c", 11, sync_every=3, nan_at=5)
    # The NaN step's batch of losses is read before the step-8 checkpoint, so none holds the broken weights.
    assert [p.name for p in (tmp_path / "c" / "checkpoints").iterdir()] == ["step-0000004"]


def test_loop_rejects_bad_settings(tmp_path):
    from pintor.training.loop import TrainConfig

    with pytest.raises(ValueError, match="steps must be a positive integer, got 0"):
        TrainConfig(steps=0).validate()
    with pytest.raises(ValueError, match="lr must be a positive number"):
        TrainConfig(lr=-1).validate()
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        TrainConfig(device="tpu").validate()
    with pytest.raises(ValueError, match="sync_every must be a positive int or None, got 0"):
        TrainConfig(sync_every=0).validate()


# ---------------------------------------------------------------------------------------------------
# Data and pipeline-matching details
# ---------------------------------------------------------------------------------------------------


def test_pool_excludes_held_out_pairs_and_keeps_depth(pool):
    from pintor.data.shapes import HELD_OUT, parse_caption
    from pintor.training.data import build_shapes_pool

    assert pool.images.shape == (16, 3, RES, RES) and pool.depth.shape == (16, 1, RES, RES)
    shapes = build_shapes_pool(300, seed=7, progress=False)
    assert shapes.boxes.shape == (300, 4, 4)
    for caption in shapes.captions:
        assert not set(parse_caption(caption).objects) & HELD_OUT


def test_inpaint_mask_matches_pipeline():
    from diffusers.pipelines.kandinsky2_2.pipeline_kandinsky2_2_inpainting import prepare_mask

    from pintor.training.data import prepare_latent_mask

    g = torch.Generator().manual_seed(0)
    for _ in range(10):
        keep = (torch.rand(2, 1, 8, 8, generator=g) > 0.25).float()
        assert torch.equal(prepare_latent_mask(keep), prepare_mask(keep.clone()))


def test_clip_preprocessing_matches_image_processor(pool):
    from PIL import Image

    from pintor.architectures import build_image_processor
    from pintor.training.data import clip_normalize, clip_resize

    proc = build_image_processor(TINY)
    ours = clip_normalize(clip_resize(pool, proc, progress=False), proc)
    ref = proc([Image.fromarray(pool.images[i].permute(1, 2, 0).numpy()) for i in range(4)],
               return_tensors="pt").pixel_values
    assert torch.allclose(ours[:4], ref, atol=1e-6)


def test_standardized_movq_decodes_the_same():
    from pintor.architectures import build_movq
    from pintor.training.components import standardize_movq_latents

    torch.manual_seed(0)
    movq = build_movq(TINY)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        z = movq.encode(x).latents
        before = movq.decode(z, force_not_quantize=True).sample
        standardize_movq_latents(movq, z)
        z2 = movq.encode(x).latents
        after = movq.decode(z2, force_not_quantize=True).sample
    assert abs(float(z2.std()) - 1) < 1e-3 and float(z2.mean(dim=(0, 2, 3)).abs().max()) < 1e-4
    assert torch.allclose(before, after, atol=1e-4)


def test_new_unets_start_from_the_base_decoder():
    from pintor.architectures import build_unet
    from pintor.training.components import controlnet_unet_from, inpaint_unet_from

    torch.manual_seed(0)
    base = build_unet(TINY).eval()
    x, t, emb = torch.randn(2, 4, 8, 8), torch.tensor([10, 500]), torch.randn(2, TINY.embed_dim)
    with torch.no_grad():
        ref = base(x, t, None, added_cond_kwargs={"image_embeds": emb}).sample
        inp = inpaint_unet_from(base).eval()
        out = inp(torch.cat([x, torch.randn(2, 5, 8, 8)], 1), t, None, added_cond_kwargs={"image_embeds": emb}).sample
        assert torch.allclose(out, ref, atol=1e-5)
        ctl = controlnet_unet_from(base).eval()
        hint = torch.rand(2, 3, 64, 64)
        out = ctl(x, t, None, added_cond_kwargs={"image_embeds": emb, "hint": hint}).sample
        assert torch.allclose(out, ref, atol=1e-5)


def test_image_tower_position_init_is_2d_sincos():
    from dataclasses import replace

    from pintor.architectures import SHAPES, build_image_encoder, sincos_2d

    s = replace(TINY, vision_pos_sincos=1.0)
    table = build_image_encoder(s).vision_model.embeddings.position_embedding.weight.detach()
    grid = s.vision_image_size // s.vision_patch
    assert table.shape == (grid * grid + 1, s.vision_hidden)
    assert torch.equal(table[0], torch.zeros(s.vision_hidden))
    assert torch.allclose(table[1:], sincos_2d(grid, s.vision_hidden))
    # Neighbouring patches get closer codes than far ones, along both axes: the tower starts out knowing where.
    d = torch.cdist(table[1:], table[1:])
    assert d[0, 1] < d[0, grid - 1] and d[0, grid] < d[0, grid * (grid - 1)]
    assert SHAPES.vision_pos_sincos > 0 and TINY.vision_pos_sincos == 0
    with pytest.raises(ValueError, match="divisible by 4"):
        sincos_2d(4, 30)


# ---------------------------------------------------------------------------------------------------
# Trainers
# ---------------------------------------------------------------------------------------------------


def test_hard_negatives_change_one_detail_and_never_name_held_out_pairs():
    from pintor.data.shapes import HELD_OUT, ShapesGenerator, parse_caption
    from pintor.training.data import caption_key, hard_negative

    g = torch.Generator().manual_seed(0)
    made = 0
    for i in range(200):
        caption = ShapesGenerator(1).sample(i).caption
        neg = hard_negative(caption, torch.rand(4, generator=g))
        if neg is None:
            continue
        made += 1
        assert caption_key(neg) != caption_key(caption)
        assert not set(parse_caption(neg).objects) & HELD_OUT
    assert made > 150
    assert hard_negative("a photo of a cat", torch.rand(4)) is None
    flipped = hard_negative("a red circle to the left of a blue square", torch.zeros(4))
    assert flipped == "a red circle to the right of a blue square"


def test_clip_and_movq_trainers_learn(pool, tmp_path):
    from pintor.training import ClipConfig, MovqConfig, build_shapes_pool, train_clip, train_movq

    c = build_kandinsky22(TINY, seed=0)
    shapes = build_shapes_pool(16, seed=0, progress=False)  # 128 px, with layouts for the auxiliary loss
    r = train_clip(c.text_encoder, c.image_encoder, c.tokenizer, c.image_processor, shapes,
                   _fast(ClipConfig, steps=12, batch_size=16, lr=2e-3), tmp_path / "clip")
    assert _mean(r.history[-3:]) < _mean(r.history[:3])
    assert _mean(r.history[-3:], "layout") < _mean(r.history[:3], "layout")
    assert (tmp_path / "clip" / "loss.png").is_file() and (tmp_path / "clip" / "loss.csv").is_file()

    r = train_movq(c.movq, pool, _fast(MovqConfig, steps=12, batch_size=8, crop=32, lr=3e-3), tmp_path / "movq")
    assert _mean(r.history[-3:]) < 0.7 * _mean(r.history[:3])
    assert abs(r.info["latent_std"]) > 0 and len(r.info["latent_mean"]) == TINY.movq_latent_channels


def test_movq_decoder_only_keeps_every_latent_and_learns(tiny_model, shapes_folder, pool, tmp_path):
    from diffusers import VQModel

    from pintor.training.cli import run

    before = VQModel.from_pretrained(tiny_model / "decoder" / "movq")
    out = tmp_path / "movq-decoder"
    # shapes_folder holds 3 gray-background images of 16: a share of 0.75 draws them most of the time.
    assert run(_parse(["train", "movq", "--decoder-only", "--background-share", "gray", "0.75", "--out", str(out),
                       "--model", str(tiny_model), "--data", str(shapes_folder), "--resolution", str(RES),
                       "--steps", "40", "--batch-size", "8", "--lr", "5e-3"])) == 0
    after = VQModel.from_pretrained(out / "model" / "decoder" / "movq")

    def round_trip_error(movq):
        x = pool.pixels(torch.arange(len(pool)))
        with torch.no_grad():
            return torch.nn.functional.mse_loss(movq.decode(movq.encode(x).latents, force_not_quantize=True).sample, x)

    assert round_trip_error(after) < 0.8 * round_trip_error(before)
    old, new = before.state_dict(), after.state_dict()
    frozen_keys = [k for k in old if not k.startswith(("decoder.", "post_quant_conv."))]
    assert frozen_keys and all(torch.equal(old[k], new[k]) for k in frozen_keys)
    assert not torch.equal(old["decoder.conv_out.weight"], new["decoder.conv_out.weight"])
    with torch.no_grad():
        x = pool.pixels(torch.arange(4))
        assert torch.equal(before.encode(x).latents, after.encode(x).latents)


def test_movq_decoder_only_rejects_a_background_the_pool_lacks(pool, tmp_path):
    from pintor.training import MovqConfig, train_movq

    c = build_kandinsky22(TINY, seed=0)
    with pytest.raises(ValueError, match="no caption in the pool names that background"):
        train_movq(c.movq, pool, _fast(MovqConfig, steps=2, batch_size=2, decoder_only=True,
                                       background_share=("purple", 0.5)), tmp_path / "m")
    with pytest.raises(ValueError, match="only supported with decoder_only"):
        train_movq(c.movq, pool, _fast(MovqConfig, steps=2, batch_size=2, background_share=("gray", 0.5)),
                   tmp_path / "m2")


def test_prior_layout_loss_reads_positions_through_a_fitted_probe(tmp_path):
    from pintor.training import PriorConfig, build_shapes_pool, train_prior
    from pintor.training.clip import layout_loss
    from pintor.training.prior import fit_layout_probe

    # A probe fitted on embeddings that hold the layout (here: a fixed random linear code of it) reads it back.
    g = torch.Generator().manual_seed(0)
    layout = build_shapes_pool(256, seed=1, progress=False).layout
    code = torch.randn(layout.shape[1], 32, generator=g)
    embeds = layout @ code + 0.01 * torch.randn(len(layout), 32, generator=g)
    before = layout_loss(torch.zeros(len(layout), layout.shape[1] + 2), layout)
    probe = fit_layout_probe(embeds, layout, seed=0, steps=300, batch_size=64)
    assert not any(p.requires_grad for p in probe.parameters())
    assert layout_loss(probe(torch.nn.functional.normalize(embeds, dim=-1)), layout) < 0.5 * before

    # With the loss on, the prior logs it beside the plain MSE and still trains.
    c = build_kandinsky22(TINY, seed=0)
    shapes = build_shapes_pool(16, seed=0, progress=False)
    cfg = _fast(PriorConfig, steps=6, batch_size=8, layout_weight=1.0, layout_probe_steps=20)
    r = train_prior(c.prior, c.text_encoder, c.image_encoder, c.tokenizer, c.image_processor, c.prior_scheduler,
                    shapes, cfg, tmp_path / "prior")
    assert {"mse", "layout"} <= set(r.history[-1]) and r.history[-1]["loss"] > r.history[-1]["mse"]


def test_prior_and_decoders_train_and_load_in_the_pipelines(pool, tmp_path):
    from diffusers import (
        KandinskyV22ControlnetPipeline,
        KandinskyV22InpaintPipeline,
        KandinskyV22Pipeline,
        KandinskyV22PriorPipeline,
        UNet2DConditionModel,
    )

    from pintor.training import (
        DecoderConfig,
        PriorConfig,
        controlnet_unet_from,
        inpaint_unet_from,
        train_decoder,
        train_prior,
    )

    c = build_kandinsky22(TINY, seed=0)
    r = train_prior(c.prior, c.text_encoder, c.image_encoder, c.tokenizer, c.image_processor, c.prior_scheduler,
                    pool, _fast(PriorConfig, steps=15, batch_size=16, lr=3e-3), tmp_path / "prior")
    assert _mean(r.history[-4:]) < _mean(r.history[:4])
    assert float(c.prior.clip_std.abs().min()) > 0  # set from the data
    for kind, unet in (("text2img", c.unet), ("inpaint", inpaint_unet_from(c.unet)),
                       ("controlnet", controlnet_unet_from(c.unet))):
        r = train_decoder(unet, c.movq, c.image_encoder, c.image_processor, c.scheduler, pool,
                          _fast(DecoderConfig, kind=kind, steps=8, batch_size=8, lr=2e-3, snr_gamma=None),
                          tmp_path / kind)
        assert _mean(r.history[-3:]) < _mean(r.history[:3]), kind
        setattr(c, {"text2img": "unet", "inpaint": "inpaint_unet", "controlnet": "controlnet_unet"}[kind], r.model)

    path = save_kandinsky22(c, tmp_path / "model", fp16=False)
    prior = KandinskyV22PriorPipeline.from_pretrained(path / "prior")
    prior.set_progress_bar_config(disable=True)
    out = prior("a red circle", num_inference_steps=2, generator=torch.Generator().manual_seed(0))
    assert out.image_embeds.shape == (1, TINY.embed_dim)
    dec = KandinskyV22Pipeline.from_pretrained(path / "decoder")
    dec.set_progress_bar_config(disable=True)
    kw = dict(image_embeds=out.image_embeds, negative_image_embeds=out.negative_image_embeds, height=RES, width=RES,
              num_inference_steps=2, output_type="np")
    assert dec(**kw).images.shape == (1, RES, RES, 3)
    inp = KandinskyV22InpaintPipeline(unet=UNet2DConditionModel.from_pretrained(path / "inpaint" / "unet"),
                                      scheduler=dec.scheduler, movq=dec.movq)
    inp.set_progress_bar_config(disable=True)
    mask = torch.zeros(RES, RES)
    mask[16:40, 16:40] = 1
    img = inp(image=pool.pixels(torch.tensor([0]))[0].clamp(-1, 1), mask_image=mask, **kw).images
    assert img.shape == (1, RES, RES, 3)
    ctl = KandinskyV22ControlnetPipeline(unet=UNet2DConditionModel.from_pretrained(path / "controlnet-depth" / "unet"),
                                         scheduler=dec.scheduler, movq=dec.movq)
    ctl.set_progress_bar_config(disable=True)
    hint = (pool.depth[:1].float() / 255).expand(-1, 3, -1, -1)
    assert ctl(hint=hint, **kw).images.shape == (1, RES, RES, 3)


def test_decoder_trains_on_the_priors_embeddings(pool, tmp_path):
    from pintor.training import DecoderConfig, train_decoder
    from pintor.training.prior import sample_prior_embeddings

    c = build_kandinsky22(TINY, seed=0)
    args = (c.prior, c.text_encoder, c.tokenizer, c.image_encoder, c.image_processor, c.prior_scheduler, pool.captions)
    emb = sample_prior_embeddings(*args, num_inference_steps=2, guidance_scale=2.0, seed=5, batch_size=6,
                                  progress=False)
    assert emb.shape == (len(pool), TINY.embed_dim) and emb.dtype == torch.float32
    # One sample per caption, reproducible from the seed.
    again = sample_prior_embeddings(*args, num_inference_steps=2, guidance_scale=2.0, seed=5, batch_size=6,
                                    progress=False)
    assert torch.equal(emb, again)
    cfg = _fast(DecoderConfig, steps=8, batch_size=8, lr=2e-3, snr_gamma=None, p_prior_embeds=1.0)
    with pytest.raises(ValueError, match="p_prior_embeds is 1.0 but got none prior embeddings for 16 images"):
        train_decoder(c.unet, c.movq, c.image_encoder, c.image_processor, c.scheduler, pool, cfg, tmp_path / "x")
    r = train_decoder(c.unet, c.movq, c.image_encoder, c.image_processor, c.scheduler, pool, cfg, tmp_path / "d",
                      prior_embeds=emb)
    assert _mean(r.history[-3:]) < _mean(r.history[:3])


def test_encoding_cache_is_keyed_by_content(tmp_path):
    from pintor.training.cache import fingerprint, load_or_compute

    images = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)
    conv = torch.nn.Conv2d(3, 2, 1)
    key = fingerprint("latents", images, conv, "cpu")
    assert key == fingerprint("latents", images.clone(), copy.deepcopy(conv), "cpu")
    other = images.clone()
    other[3, 2, 7, 7] ^= 1  # one bit of one pixel
    assert fingerprint("latents", other, conv, "cpu") != key
    with torch.no_grad():
        bumped = copy.deepcopy(conv)
        bumped.bias[0] = torch.nextafter(bumped.bias[0], torch.tensor(1.0))
    assert fingerprint("latents", images, bumped, "cpu") != key
    assert fingerprint("ab", "c") != fingerprint("a", "bc")

    calls = []

    def compute(v):
        calls.append(v)
        return {"x": torch.full((2,), float(v))}

    path = tmp_path / "cache" / "x.safetensors"
    assert torch.equal(load_or_compute(path, key, lambda: compute(1))["x"], torch.ones(2))
    assert torch.equal(load_or_compute(path, key, lambda: compute(2))["x"], torch.ones(2))  # read back
    assert calls == [1]
    assert torch.equal(load_or_compute(path, "another", lambda: compute(3))["x"], torch.full((2,), 3.0))
    path.write_bytes(path.read_bytes()[:20])  # cut short, as by a crash
    assert torch.equal(load_or_compute(path, "another", lambda: compute(4))["x"], torch.full((2,), 4.0))
    assert calls == [1, 3, 4] and not list(path.parent.glob("*.tmp"))


def test_decoder_resume_reads_the_pools_encodings_back(pool, tmp_path):
    from safetensors.torch import load_file

    from pintor.training import DecoderConfig, train_decoder
    from pintor.training.components import frozen
    from pintor.training.data import ImagePool
    from pintor.training.movq import encode_latents

    c = build_kandinsky22(TINY, seed=0)
    out = tmp_path / "d"
    args = (c.movq, c.image_encoder, c.image_processor, c.scheduler)
    train_decoder(copy.deepcopy(c.unet), *args, pool, _fast(DecoderConfig, steps=2, batch_size=4), out)
    latents = out / "cache" / "latents.safetensors"
    embeds = out / "cache" / "image_embeds.safetensors"
    first = load_file(latents)["latents"]
    assert torch.equal(first, encode_latents(frozen(c.movq, "cpu"), pool, device="cpu", progress=False))
    stamps = latents.stat().st_mtime_ns, embeds.stat().st_mtime_ns
    train_decoder(copy.deepcopy(c.unet), *args, pool, _fast(DecoderConfig, steps=4, batch_size=4, resume=True), out)
    assert (latents.stat().st_mtime_ns, embeds.stat().st_mtime_ns) == stamps  # read, not written again
    # Another pool in the same folder is encoded afresh, never trained on the old pool's latents.
    images = pool.images.clone()
    images[0] = 255 - images[0]
    changed = ImagePool(images, pool.captions, depth=pool.depth, boxes=pool.boxes, layout=pool.layout)
    train_decoder(copy.deepcopy(c.unet), *args, changed, _fast(DecoderConfig, steps=6, batch_size=4, resume=True), out)
    fresh = encode_latents(frozen(c.movq, "cpu"), changed, device="cpu", progress=False)
    assert torch.equal(load_file(latents)["latents"], fresh) and not torch.equal(fresh[0], first[0])


# ---------------------------------------------------------------------------------------------------
# CLI: fine-tuning a pretrained folder (loaded with from_pretrained) on an imagefolder
# ---------------------------------------------------------------------------------------------------


def _parse(argv):
    from pintor.training.cli import add_parser

    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


def test_cli_finetunes_a_pretrained_folder(tiny_model, shapes_folder, tmp_path):
    from diffusers import KandinskyV22PriorPipeline, UNet2DConditionModel

    from pintor.training.cli import run

    common = ["--data", str(shapes_folder), "--resolution", str(RES), "--steps", "3", "--batch-size", "4"]
    out = tmp_path / "prior"
    assert run(_parse(["train", "prior", "--out", str(out), "--model", str(tiny_model), *common])) == 0
    KandinskyV22PriorPipeline.from_pretrained(out / "model" / "prior")
    assert json.loads((out / "model" / "pintor.json").read_text())["name"] == "tiny"
    assert len(list(csv.DictReader(open(out / "loss.csv")))) == 3
    assert (out / "cache" / "image_embeds.safetensors").is_file()

    out = tmp_path / "controlnet"
    assert run(_parse(["train", "controlnet", "--out", str(out), "--model", str(tiny_model), "--low-noise", "0.5",
                       "100", "--prior-embeds", "0.5", *common])) == 0
    sampled = out / "cache" / "prior_embeds.safetensors"
    stamp = sampled.stat().st_mtime_ns
    # --resume on a finished run is a no-op that still writes the model, and samples no prior embeddings again.
    assert run(_parse(["train", "controlnet", "--out", str(out), "--model", str(tiny_model), "--resume",
                       "--low-noise", "0.5", "100", "--prior-embeds", "0.5", *common])) == 0
    assert sampled.stat().st_mtime_ns == stamp
    unet = UNet2DConditionModel.from_pretrained(out / "model" / "controlnet-depth" / "unet")
    assert unet.config.addition_embed_type == "image_hint"

    # --from-decoder starts over from the decoder instead of continuing the model's ControlNet UNet: with a
    # vanishing learning rate the new one keeps the decoder's weights, not the trained ControlNet's.
    decoder = UNet2DConditionModel.from_pretrained(out / "model" / "decoder" / "unet")
    again = tmp_path / "controlnet-again"
    assert run(_parse(["train", "controlnet", "--out", str(again), "--model", str(out / "model"), "--from-decoder",
                       *common[:-4], "--steps", "1", "--batch-size", "2", "--lr", "1e-12"])) == 0
    restarted = UNet2DConditionModel.from_pretrained(again / "model" / "controlnet-depth" / "unet")
    assert not torch.allclose(unet.conv_out.weight, decoder.conv_out.weight, atol=1e-5)
    assert torch.allclose(restarted.conv_out.weight, decoder.conv_out.weight, atol=1e-6)


def test_finetune_of_the_embedded_model_keeps_its_defaults():
    # A fine-tune started from a registry name must sample with the settings its base was tuned for, as one
    # started from the same model's folder does: `train` saves the loaded `_meta` into the new pintor.json.
    from pintor import registry
    from pintor.training.components import load_components

    shipped = json.loads((registry.embedded_path() / "pintor.json").read_text())
    meta = load_components("pintor-shapes", need=("prior",)).extra["_meta"]
    assert meta["defaults"] == shipped["defaults"] and meta["defaults"]["prior_guidance_scale"] > 0


def test_relation_weight_draws_relation_captions_more_often(tmp_path):
    from pintor.training import PriorConfig, build_shapes_pool, train_prior
    from pintor.training.prior import caption_weights

    caps = ["a red circle to the left of a blue square", "two green stars", "a red circle above a blue square",
            "a yellow star below a red circle on a black background", "a blue square and a red star"]
    assert caption_weights(caps, 3.0).tolist() == [3.0, 1.0, 3.0, 3.0, 1.0]
    with pytest.raises(ValueError, match="relation_weight must be a positive number, got 0"):
        PriorConfig(relation_weight=0).validate()

    # The weighting reaches the training batches: with a large weight nearly every caption drawn is a relation.
    c = build_kandinsky22(TINY, seed=0)
    shapes = build_shapes_pool(64, seed=0, progress=False)
    is_rel = caption_weights(shapes.captions, 2.0) > 1
    assert 0 < int(is_rel.sum()) < len(shapes) // 2
    drawn = []
    original_forward = c.text_encoder.forward

    def spy(input_ids, *a, **k):  # records the captions of each batch the text tower reads (frozen copies it too)
        drawn.extend(c.tokenizer.batch_decode(input_ids, skip_special_tokens=True))
        return original_forward(input_ids, *a, **k)

    c.text_encoder.forward = spy
    cfg = _fast(PriorConfig, steps=4, batch_size=32, relation_weight=1000.0, drop_caption=0.0)
    train_prior(c.prior, c.text_encoder, c.image_encoder, c.tokenizer, c.image_processor, c.prior_scheduler,
                shapes, cfg, tmp_path / "prior")
    texts = [t for t in drawn if t]
    relation_words = ("left", "right", "above", "below")
    assert len(texts) >= 4 * 32 and sum(any(w in t for w in relation_words) for t in texts) > 0.9 * len(texts)


def test_background_balance_evens_out_the_backgrounds_drawn():
    from pintor.training import build_shapes_pool
    from pintor.training.decoder import background_weights

    captions = build_shapes_pool(600, seed=0, progress=False).captions

    def share(weights):
        out = {}
        for c, w in zip(captions, weights.tolist(), strict=True):
            bg = c.rsplit(" on a ", 1)[1].split()[0] if c.endswith(" background") else "white"
            out[bg] = out.get(bg, 0.0) + w
        return out

    data = share(background_weights(captions, 0.0))  # the data's own mix: white 0.6, black and gray 0.2 each
    assert data["white"] > 0.5 and 0.12 < data["gray"] < 0.28 and 0.12 < data["black"] < 0.28
    even = share(background_weights(captions, 1.0))
    assert all(abs(v - 1 / 3) < 1e-5 for v in even.values()) and set(even) == {"white", "gray", "black"}
    half = share(background_weights(captions, 0.5))
    assert abs(half["gray"] - (data["gray"] + 1 / 3) / 2) < 1e-5
    assert abs(sum(background_weights(captions, 0.5).tolist()) - 1) < 1e-5


def test_object_weight_moves_the_loss_onto_the_cells_objects_cover():
    from pintor.training.decoder import object_weighted_error

    depth = torch.zeros(2, 1, 128, 128, dtype=torch.uint8)
    depth[:, :, 32:64, 32:64] = 200  # one object covering 4 x 4 latent cells of 16 x 16
    even = torch.full((2, 4, 16, 16), 0.5)
    assert torch.allclose(object_weighted_error(even, depth, 4.0), torch.tensor([0.5, 0.5]))
    on_object = torch.zeros(2, 4, 16, 16)
    on_object[:, :, 4:8, 4:8] = 1.0  # the same error, once on the object's cells and once on background cells
    on_background = torch.zeros(2, 4, 16, 16)
    on_background[:, :, 10:14, 10:14] = 1.0
    plain = on_object.mean(dim=(1, 2, 3))
    assert torch.allclose(object_weighted_error(on_object, depth, 0.0), plain)
    # 16 of 256 cells weigh 5, the rest 1: the object's error counts 5 / mean weight (1.25) = 4 times.
    assert torch.allclose(object_weighted_error(on_object, depth, 4.0), plain * 4)
    assert torch.allclose(object_weighted_error(on_background, depth, 4.0), plain / 1.25)

    from pintor.training import DecoderConfig, ImagePool, train_decoder

    with pytest.raises(ValueError, match="object_weight must be >= 0, got -1"):
        DecoderConfig(object_weight=-1.0).validate()
    no_depth = ImagePool(torch.zeros(2, 3, 32, 32, dtype=torch.uint8), ["a red circle", "a blue square"])
    with pytest.raises(ValueError, match="object_weight 2 needs the pool's depth maps"):
        train_decoder(None, None, None, None, None, no_depth, DecoderConfig(object_weight=2.0), "unused")


def test_snr_weights_give_clean_latent_errors_clamped_snr_weight():
    from pintor.training.decoder import snr_weights

    snr = torch.tensor([0.01, 2.0, 100.0])
    # Weight of the clean-latent error = loss weight * the factor the loss already carries (snr + 1 for v).
    min_snr = snr_weights(snr, 5.0, v_pred=True) * (snr + 1)
    assert torch.allclose(min_snr, torch.tensor([0.01, 2.0, 5.0]))
    truncated = snr_weights(snr, 5.0, 1.0, v_pred=True) * (snr + 1)
    assert torch.allclose(truncated, torch.tensor([1.0, 2.0, 5.0]))
    assert torch.allclose(snr_weights(snr, 5.0, 1.0, v_pred=False) * snr, torch.tensor([1.0, 2.0, 5.0]))

    # The library checks the settings as the CLI does: a floor above gamma, or without min-SNR, is refused.
    from pintor.training import DecoderConfig

    for bad, message in (({"snr_floor": 6.0}, "snr_floor must be positive and at most snr_gamma (5.0), got 6.0"),
                         ({"snr_gamma": None, "snr_floor": 1.0}, "at most snr_gamma (None), got 1.0"),
                         ({"snr_gamma": 0.0}, "snr_gamma must be positive or None (plain loss), got 0.0"),
                         ({"low_noise_fraction": 1.5}, "low_noise_fraction must be in [0, 1], got 1.5"),
                         ({"low_noise_max": 0}, "low_noise_max must be a timestep count >= 1, got 0"),
                         ({"background_balance": 2.0}, "background_balance must be in [0, 1], got 2.0"),
                         ({"p_prior_embeds": -0.1}, "p_prior_embeds must be in [0, 1], got -0.1"),
                         ({"kind": "inpaint", "p_prior_embeds": 0.5}, "inpainting has p_moved_embeds")):
        with pytest.raises(ValueError, match=re.escape(message)):
            DecoderConfig(**bad).validate()


@pytest.mark.parametrize("argv, message", [
    (["train", "decoder", "--steps", "0"], "--steps must be positive, got 0"),
    (["train", "decoder", "--snr-gamma", "-1"], "--snr-gamma must be 0 (plain loss) or positive, got -1.0"),
    (["train", "inpaint", "--snr-floor", "0"], "--snr-floor must be positive and at most the min-SNR gamma (5.0), got 0.0"),
    (["train", "decoder", "--snr-gamma", "0", "--snr-floor", "1"], "at most the min-SNR gamma (None), got 1.0"),
    (["train", "decoder", "--low-noise", "0", "200"], "--low-noise takes a fraction in (0, 1] and a whole number"),
    (["train", "decoder", "--low-noise", "0.5", "2.5"], "got 0.5 2.5"),
    (["train", "decoder", "--low-noise", "0.5", "5000", "--pool-size", "4", "--steps", "1"], "low_noise_max is 5000, but the schedule has 1000"),
    (["train", "decoder", "--background-balance", "1.5"], "--background-balance must be in [0, 1], got 1.5"),
    (["train", "decoder", "--prior-embeds", "2"], "--prior-embeds must be in [0, 1], got 2"),
    (["train", "decoder", "--object-weight", "-1"], "--object-weight must be >= 0, got -1"),
    (["train", "prior", "--layout-weight", "-1"], "--layout-weight must be 0 or positive, got -1.0"),
    (["train", "prior", "--relation-weight", "0"], "--relation-weight must be positive, got 0.0"),
    (["train", "movq", "--background-share", "gray", "0.5"], "--background-share needs --decoder-only"),
    (["train", "movq", "--decoder-only", "--background-share", "gray", "most"],
     "--background-share takes a background name and a share in [0, 1], got gray most"),
    (["train", "movq", "--decoder-only", "--background-share", "gray", "2"],
     "background_share must be (background name, share in [0, 1]), got ('gray', 2.0)"),
    (["train", "decoder", "--data", "/no/such/folder"], "does not exist"),
    (["train", "decoder", "--device", "tpu"], "unknown device 'tpu'"),
    (["train", "prior", "--model", "/no/such/model"], "neither a folder nor a registry name"),
])
def test_cli_bad_input_is_a_one_line_error(argv, message, tiny_model, tmp_path):
    from pintor.errors import PintorError
    from pintor.training.cli import run

    if "--model" not in argv:
        argv = [*argv, "--model", str(tiny_model)]
    with pytest.raises(PintorError) as e:
        run(_parse([*argv, "--out", str(tmp_path / "o")]))
    assert message in str(e.value) and "\n" not in str(e.value)


# ---------------------------------------------------------------------------------------------------
# The whole embedded-model recipe, at TINY size
# ---------------------------------------------------------------------------------------------------


def test_plan_for_budget_fits_the_budget():
    from pintor.training.shapes import plan_for_budget

    plan = plan_for_budget(90)
    assert plan.seconds() <= 90 * 60 and plan.decoder_steps > plan.inpaint_steps > 0
    with pytest.raises(ValueError, match="budget_minutes must exceed"):
        plan_for_budget(1)


def test_sizes_argument_overrides_the_shapes_sizes_and_builds():
    from pintor.architectures import SHAPES
    from pintor.training.shapes import parse_sizes

    assert parse_sizes(None) == SHAPES
    wide = parse_sizes('{"embed_dim": 128, "text_hidden": 128, "unet_channels": [32, 64, 128]}')
    assert wide.embed_dim == 128 and wide.unet_channels == (32, 64, 128) and wide.vision_hidden == SHAPES.vision_hidden
    for bad, message in (('{"embed_dimm": 1}', "--sizes must be a JSON object"), ("[1]", "--sizes must be a JSON"),
                         ('{"embed_dim": 128}', "text_hidden must equal embed_dim"),
                         ('{"unet_full_attention": "no"}', "unet_full_attention must be a bool"),
                         ('{"unet_channels": 64}', "unet_channels must be a tuple")):
        with pytest.raises(ValueError, match=message):
            parse_sizes(bad)
    # A wider embedding reaches every component that reads it (TINY otherwise, to stay quick).
    c = build_kandinsky22(replace(TINY, embed_dim=48, text_hidden=48), seed=0)
    assert c.text_encoder.config.projection_dim == c.image_encoder.config.projection_dim == 48
    assert c.prior.config.embedding_dim == 48 and c.unet.config.encoder_hid_dim == 48


def test_full_attention_decoders_save_load_and_paint(tmp_path):
    """`unet_full_attention` puts cross-attention at every level of all three UNets, and the folder still opens
    and paints through the stock pipelines."""
    from pintor.training.shapes import parse_sizes

    assert parse_sizes('{"unet_full_attention": true}').unet_full_attention
    c = build_kandinsky22(replace(TINY, unet_full_attention=True), seed=0)
    for unet in (c.unet, c.inpaint_unet, c.controlnet_unet):
        assert all(b.attentions for b in unet.down_blocks) and all(b.attentions for b in unet.up_blocks)
    painter = pintor.load(save_kandinsky22(c, tmp_path / "full-attn"), device="cpu")
    img = painter.generate("a red circle", seed=0, steps=2, prior_steps=2, width=64, height=64,
                           show_progress=False)[0]
    assert img.size == (64, 64)


def test_full_attention_grows_any_decoder_from_its_predictions(tiny_model, shapes_folder, tmp_path):
    """`full_attention_unet_from` adds cross-attention at the full latent resolution to a trained UNet of each
    kind without changing what it predicts; `pintor train decoder --full-attention` trains and ships one."""
    from diffusers import UNet2DConditionModel

    from pintor.architectures import build_unet
    from pintor.training.cli import run
    from pintor.training.components import controlnet_unet_from, full_attention_unet_from, inpaint_unet_from

    torch.manual_seed(0)
    base = build_unet(TINY).eval()
    x, t, emb = torch.randn(2, 4, 8, 8), torch.tensor([10, 500]), torch.randn(2, TINY.embed_dim)
    hint = torch.rand(2, 3, 64, 64)
    for unet, inputs, cond in ((base, x, {}), (inpaint_unet_from(base), torch.cat([x, torch.rand(2, 5, 8, 8)], 1), {}),
                               (controlnet_unet_from(base), x, {"hint": hint})):
        grown = full_attention_unet_from(unet.eval(), seed=1).eval()
        assert all(b.attentions for b in grown.down_blocks) and all(b.attentions for b in grown.up_blocks)
        assert not hasattr(unet.down_blocks[0], "attentions") or not unet.down_blocks[0].attentions
        with torch.no_grad():
            kw = dict(encoder_hidden_states=None, added_cond_kwargs={"image_embeds": emb, **cond})
            ref, out = unet(inputs, t, **kw).sample, grown(inputs, t, **kw).sample
        assert ref.abs().max() > 0.1 and torch.allclose(out, ref, atol=1e-4)
        again = full_attention_unet_from(grown)  # already grown: an identical copy
        assert again is not grown and all(torch.equal(a, b) for a, b in
                                          zip(again.state_dict().values(), grown.state_dict().values(), strict=True))
    plain = build_unet(replace(TINY, unet_channels=(32, 64)))
    plain.register_to_config(down_block_types=("DownBlock2D", "SimpleCrossAttnDownBlock2D"))
    with pytest.raises(ValueError, match="got DownBlock2D / ResnetUpsampleBlock2D"):
        full_attention_unet_from(plain)

    out = tmp_path / "grown"
    assert run(_parse(["train", "decoder", "--out", str(out), "--model", str(tiny_model), "--full-attention",
                       "--data", str(shapes_folder), "--resolution", str(RES), "--steps", "2",
                       "--batch-size", "4"])) == 0
    trained = UNet2DConditionModel.from_pretrained(out / "model" / "decoder" / "unet")
    assert trained.config.down_block_types[0] == "SimpleCrossAttnDownBlock2D"
    assert trained.config.up_block_types[-1] == "SimpleCrossAttnUpBlock2D"
    assert trained.down_blocks[0].attentions[0].to_out[0].weight.abs().max() > 0  # learned, not left at zero
    img = pintor.load(out / "model", device="cpu").generate("a red circle", seed=0, steps=2, prior_steps=2,
                                                            width=64, height=64, show_progress=False)[0]
    assert img.size == (64, 64)


def test_widening_doubles_the_first_level_and_keeps_what_it_computes(tiny_model, shapes_folder, tmp_path):
    """`wider_unet_from` doubles a UNet's full-resolution channels (each old channel twice, in one GroupNorm
    group): the time embedding and the whole first down level compute what they did, for each kind of UNet;
    `pintor train decoder --widen` trains and ships one that still paints."""
    from diffusers import UNet2DConditionModel

    from pintor.architectures import build_unet
    from pintor.training.cli import run
    from pintor.training.components import (
        controlnet_unet_from,
        full_attention_unet_from,
        inpaint_unet_from,
        wider_unet_from,
    )

    torch.manual_seed(0)
    x, t, emb = torch.randn(2, 4, 8, 8), torch.tensor([10, 500]), torch.randn(2, TINY.embed_dim)
    hint = torch.rand(2, 3, 64, 64)
    for channels in ((32, 64), (32, 64, 64)):
        base = build_unet(replace(TINY, unet_channels=channels)).eval()
        for unet, inputs, cond in ((base, x, {}),
                                   (inpaint_unet_from(base), torch.cat([x, torch.rand(2, 5, 8, 8)], 1), {}),
                                   (controlnet_unet_from(base), x, {"hint": hint})):
            wide = wider_unet_from(unet.eval(), seed=1).eval()
            assert wide.config.block_out_channels == (64, *channels[1:])
            acts = {}
            for name, m in (("old", unet), ("new", wide)):
                m.down_blocks[0].register_forward_hook(lambda _m, _i, o, name=name, acts=acts: acts.__setitem__(name, o[0]))
            kw = dict(encoder_hidden_states=None, added_cond_kwargs={"image_embeds": emb, **cond})
            with torch.no_grad():
                ref, out = unet(inputs, t, **kw).sample, wide(inputs, t, **kw).sample
                temb = [m.time_embedding(m.time_proj(t)) for m in (unet, wide)]
            assert torch.allclose(temb[0], temb[1], atol=1e-5)
            old, new = acts["old"], acts["new"]
            assert new.shape[1] == 2 * old.shape[1] and old.abs().max() > 0.1
            assert torch.allclose(new[:, 0::2], old, atol=1e-5) and torch.allclose(new[:, 1::2], old, atol=1e-5)
            assert out.shape == ref.shape and torch.isfinite(out).all()
    with pytest.raises(ValueError, match="widening needs a Kandinsky 2.2 decoder whose first level is"):
        wider_unet_from(full_attention_unet_from(build_unet(TINY)))

    out = tmp_path / "wide"
    assert run(_parse(["train", "decoder", "--out", str(out), "--model", str(tiny_model), "--widen",
                       "--data", str(shapes_folder), "--resolution", str(RES), "--steps", "2",
                       "--batch-size", "4"])) == 0
    trained = UNet2DConditionModel.from_pretrained(out / "model" / "decoder" / "unet")
    assert trained.config.block_out_channels[0] == 2 * TINY.unet_channels[0]
    img = pintor.load(out / "model", device="cpu").generate("a red circle", seed=0, steps=2, prior_steps=2,
                                                            width=64, height=64, show_progress=False)[0]
    assert img.size == (64, 64)


def test_plan_argument_names_the_shipped_plan_or_overrides():
    from pintor.training.shapes import SHIPPED_PLAN, parse_plan, plan_for_budget

    assert parse_plan("shipped") == SHIPPED_PLAN and SHIPPED_PLAN.prior_layout_weight > 0
    assert SHIPPED_PLAN.seconds() < 135 * 60  # a whole run from scratch fits in one sitting
    assert parse_plan(None) == plan_for_budget(90) and parse_plan(None).refine_steps == 0
    assert parse_plan('{"decoder_steps": 9000}').decoder_steps == 9000
    for bad in ('{"decoder_stepz": 1}', "[1]", "fast"):
        with pytest.raises(ValueError, match="--plan must be 'shipped' or a JSON object"):
            parse_plan(bad)


def test_train_shapes_end_to_end_and_resume(tmp_path):
    from diffusers import KandinskyV22Pipeline, KandinskyV22PriorPipeline

    from pintor.training.shapes import STAGES, ShapesPlan, train_shapes

    plan = ShapesPlan(pool_size=24, **{f"{s}_steps": 2 for s in STAGES}, **{f"{s}_batch": 4 for s in STAGES})
    path = train_shapes(tmp_path, sizes=TINY, plan=plan, progress=False)
    from safetensors import safe_open

    KandinskyV22PriorPipeline.from_pretrained(path / "prior")
    with safe_open(next((path / "prior" / "prior").glob("*.safetensors")), "pt") as f:
        assert f.get_tensor(next(iter(f.keys()))).dtype == torch.float16  # shipped as fp16
    KandinskyV22Pipeline.from_pretrained(path / "decoder")
    meta = json.loads((path / "pintor.json").read_text())
    assert meta["name"] == "pintor-shapes" and meta["negative_image_embeds"] == "zero-image"
    for s in STAGES:
        assert (tmp_path / "work" / s / "final" / "done.json").is_file()
    # Resuming a finished run reuses every stage.
    assert train_shapes(tmp_path, sizes=TINY, plan=plan, progress=False, resume=True) == path


def test_resume_may_extend_unfinished_stages_only(tmp_path):
    from dataclasses import asdict, replace

    from pintor.architectures import SHAPES
    from pintor.training.shapes import ShapesPlan, _check_resume

    work = tmp_path / "work"
    (work / "clip" / "final").mkdir(parents=True)
    (work / "clip" / "final" / "done.json").write_text("{}")
    old = {"seed": 0, "plan": asdict(ShapesPlan()), "sizes": asdict(SHAPES)}
    longer = {**old, "plan": asdict(replace(ShapesPlan(), decoder_steps=11000))}
    _check_resume(old, longer, work, tmp_path)  # the decoder has not finished: a longer plan is fine
    with pytest.raises(ValueError, match="stage clip finished with another plan"):
        _check_resume(old, {**old, "plan": asdict(replace(ShapesPlan(), clip_steps=5))}, work, tmp_path)
    with pytest.raises(ValueError, match="pool_size"):
        _check_resume(old, {**old, "plan": asdict(replace(ShapesPlan(), pool_size=5))}, work, tmp_path)
    with pytest.raises(ValueError, match="seed"):
        _check_resume(old, {**old, "seed": 1}, work, tmp_path)
    # A refine stage added to a finished run: the stages built on the old decoder are redone. Plans written
    # before `refine_steps` existed ran without it.
    for stage in ("decoder", "inpaint", "controlnet"):
        (work / stage / "final").mkdir(parents=True)
        (work / stage / "final" / "done.json").write_text("{}")
    older = {**old, "plan": {k: v for k, v in old["plan"].items() if not k.startswith("refine_")}}
    assert _check_resume(older, old, work, tmp_path) == []
    refined = {**old, "plan": asdict(replace(ShapesPlan(), refine_steps=100))}
    assert _check_resume(older, refined, work, tmp_path) == ["inpaint", "controlnet"]
    # A longer prior (its old folder moved aside) redoes nothing: the decoders learn from images, not from it.
    longer_prior = {**old, "plan": asdict(replace(ShapesPlan(), prior_steps=4000))}
    assert _check_resume(old, longer_prior, work, tmp_path) == []
    # A new CLIP redoes everything built on its embeddings (the MoVQ is not), started or finished.
    shutil.rmtree(work / "clip")
    (work / "prior" / "checkpoints").mkdir(parents=True)
    new_clip = {**old, "plan": asdict(replace(ShapesPlan(), clip_steps=2000))}
    assert _check_resume(old, new_clip, work, tmp_path) == ["prior", "decoder", "inpaint", "controlnet"]
