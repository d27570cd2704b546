"""Each optimisation on the tiny model: it runs on CPU, and exact ones keep the stock pixels (PSNR >= 30 dB)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import pintor
from pintor.bench.baseline import load_stock, stock_generate
from pintor.bench.measure import psnr
from pintor.optim import DeepCache, Optimizations, fuse_qkv

Q = dict(show_progress=False)
SETTINGS = dict(steps=4, prior_steps=3, guidance_scale=4.0, prior_guidance_scale=4.0, width=64, height=64)
PROMPT = "a red circle above a blue square"


@pytest.fixture(scope="module")
def stock_images(tiny_k22):
    """What stock diffusers paints at seed 5, the reference of every exact option."""
    prior, decoder = load_stock("kandinsky-2.2", str(tiny_k22 / "prior"), str(tiny_k22 / "decoder"), "cpu",
                                torch.float32)
    single = stock_generate(prior, decoder, "kandinsky-2.2", [PROMPT], 5, **SETTINGS)
    batch = stock_generate(prior, decoder, "kandinsky-2.2", [PROMPT, "a green triangle"], 5, **SETTINGS)
    return single + batch


def _generate(painter, prompt=PROMPT, seed=5, **kw):
    return painter.generate(prompt, seed=seed, **SETTINGS, **kw, **Q)[0]


@pytest.mark.parametrize("opts", [
    Optimizations(),
    Optimizations(embed_cache=False),
    Optimizations(sdpa=False),
    Optimizations(fuse_qkv=True),
    Optimizations(channels_last=True),
    Optimizations(cuda_graphs=True),  # CUDA only: on CPU it must be a harmless no-op
    Optimizations(movq_slicing=True),
    Optimizations(fuse_qkv=True, channels_last=True, sdpa=True),
], ids=["defaults", "no-cache", "classic-attention", "fused-qkv", "channels-last", "cuda-graphs-on-cpu",
        "movq-slicing", "all-exact"])
def test_exact_options_keep_stock_pixels(tiny_k22, stock_images, opts):
    painter = pintor.load(tiny_k22, device="cpu", optimizations=opts)
    img = _generate(painter)
    assert img.size == (64, 64)
    assert psnr(img, stock_images[0]) >= 30.0


def test_defaults_are_identical_to_stock(tiny_k22, stock_images):
    img = _generate(pintor.load(tiny_k22, device="cpu"))
    assert np.array_equal(np.asarray(img), np.asarray(stock_images[0]))


def _compiled(fn) -> bool:
    return hasattr(fn, "_torchdynamo_orig_callable")


@pytest.mark.slow
def test_compile_keeps_stock_pixels(tiny_k22, stock_images):
    # The UNet alone: on a 2-core CPU inductor takes about a minute per module to build its C++ kernels, and
    # the UNet is where compiling pays. All three modules are compiled in test_gpu and in `pintor bench`.
    painter = pintor.load(tiny_k22, device="cpu", optimizations=Optimizations(compile=True, compile_modules="unet"))
    b = painter.backend
    assert _compiled(b.decoder.unet.forward)
    assert not _compiled(b.prior.prior.forward) and not _compiled(b.decoder.movq.decoder.forward)
    assert psnr(_generate(painter), stock_images[0]) >= 30.0


def test_compile_modules_are_checked():
    assert Optimizations.parse("compile,compile_modules=unet+movq").compile_modules == "unet+movq"
    for bad in ("", "vae", "unet+unet", "unet,prior"):
        with pytest.raises(ValueError, match="compile_modules"):
            Optimizations(compile_modules=bad)


def test_embedding_cache_gives_identical_pixels(tiny_k22, rgb_png):
    cached = pintor.load(tiny_k22, device="cpu")
    plain = pintor.load(tiny_k22, device="cpu", optimizations=Optimizations(embed_cache=False))
    cache = cached.backend.cache
    first = _generate(cached)
    misses = cache.misses
    again = _generate(cached)  # same prompt, settings and seed: the prior is not run again
    assert cache.hits >= 1 and cache.misses == misses
    reference = _generate(plain)
    assert np.array_equal(np.asarray(first), np.asarray(reference))
    assert np.array_equal(np.asarray(again), np.asarray(reference))
    # Other settings of the decoder reuse the prior's output and still match exactly.
    wide = cached.generate(PROMPT, seed=5, **dict(SETTINGS, guidance_scale=6.0), **Q)[0]
    wide_ref = plain.generate(PROMPT, seed=5, **dict(SETTINGS, guidance_scale=6.0), **Q)[0]
    assert np.array_equal(np.asarray(wide), np.asarray(wide_ref))
    # Mix items: the image's CLIP embedding and the texts' prior runs are cached, pixels are not changed.
    kw = dict(items=[rgb_png, "a blue square"], weights=[0.6, 0.4], seed=2, **SETTINGS, **Q)
    mixes = [cached.mix(**kw)[0] for _ in range(2)]
    mix_ref = plain.mix(**kw)[0]
    for m in mixes:
        assert np.array_equal(np.asarray(m), np.asarray(mix_ref))
    assert any(k[0] == "image" for k in cache._items)


def test_mix_and_variations_match_stock_interpolate(tiny_k22, rgb_png):
    """pintor's own `interpolate` (cache-aware) equals diffusers' `KandinskyV22PriorPipeline.interpolate`."""
    from pintor.backends.common import generators
    from pintor.images import load_image

    painter = pintor.load(tiny_k22, device="cpu", optimizations=Optimizations(embed_cache=False))
    prior = painter.backend.prior
    items = [load_image(rgb_png, "mix item"), "a blue square"]
    with torch.inference_mode():
        ref = prior.interpolate(items, [0.3, 0.7], num_images_per_prompt=2, num_inference_steps=3,
                                generator=generators(4, 2), negative_prompt="", guidance_scale=4.0)
        req = pintor.GenerationRequest(mode="mix", items=items, weights=[0.3, 0.7], n=2, prior_steps=3,
                                       prior_guidance_scale=4.0)
        ours = painter.backend._interpolate(req, items, [0.3, 0.7], generators(4, 2), None)
    assert torch.equal(ours[0], ref.image_embeds) and torch.equal(ours[1], ref.negative_image_embeds)


def test_batching_matches_one_by_one(tiny_k22):
    painter = pintor.load(tiny_k22, device="cpu")
    reqs = [pintor.GenerationRequest(prompt=p, seed=s, **SETTINGS) for p, s in
            (("a red circle", 3), ("a blue square", 9), ("a green star", 4))]
    reqs.append(pintor.GenerationRequest(mode="generate", prompt="a red circle", seed=1, **dict(SETTINGS, steps=3)))
    batched = painter.run_batch(reqs)
    assert [len(r.images) for r in batched] == [1, 1, 1, 1]
    for req, res in zip(reqs, batched, strict=True):
        alone = painter.run(req).images[0]
        assert res.request.seed == req.seed
        assert psnr(res.images[0], alone) >= 30.0


def test_batched_call_matches_stock_batch(tiny_k22, stock_images):
    painter = pintor.load(tiny_k22, device="cpu")
    reqs = [pintor.GenerationRequest(prompt=PROMPT, seed=5, **SETTINGS),
            pintor.GenerationRequest(prompt="a green triangle", seed=6, **SETTINGS)]
    out = painter.run_batch(reqs)
    for res, ref in zip(out, stock_images[1:], strict=True):
        assert np.array_equal(np.asarray(res.images[0]), np.asarray(ref))


def test_deepcache_runs_and_reuses(tiny_k22):
    painter = pintor.load(tiny_k22, device="cpu", optimizations=Optimizations(deepcache_interval=3))
    state = painter.components["unet"].pintor_deepcache
    images = painter.generate(PROMPT, seed=1, n=2, **dict(SETTINGS, steps=7), **Q)
    assert [im.size for im in images] == [(64, 64)] * 2
    assert np.asarray(images[0]).std() > 0
    assert (state.full_calls, state.reuse_calls) == (3, 4)  # steps 0, 3, 6 run the whole UNet
    painter.generate(PROMPT, seed=1, **dict(SETTINGS, steps=2, width=128, height=128), **Q)
    assert state.full_calls == 4 and state.reuse_calls == 5  # a new run starts with a full step


def test_deepcache_outer_path_equals_full_unet(tiny_k22):
    """Over features cached from the same inputs, the cheap path computes exactly what the whole UNet does."""
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(tiny_k22 / "decoder", subfolder="unet").eval()
    state = DeepCache(unet, interval=2, depth=1)
    torch.manual_seed(0)
    sample = torch.randn(2, 4, 16, 24)
    added = {"image_embeds": torch.randn(2, unet.config.encoder_hid_dim)}
    with torch.no_grad():
        full = state(sample, torch.tensor(500), None, added_cond_kwargs=added, return_dict=False)[0]
        outer = state._outer(sample, torch.tensor(500), None, None, None, None, added, None)
    assert state.cache is not None
    torch.testing.assert_close(outer, full, rtol=1e-5, atol=1e-5)


def test_prior_ddim_scheduler_runs(tiny_k22):
    painter = pintor.load(tiny_k22, device="cpu", optimizations=Optimizations(prior_scheduler="ddim"))
    assert type(painter.backend.prior.scheduler).__name__ == "PriorDDIMScheduler"
    assert _generate(painter).size == (64, 64)


def test_movq_tiling_runs_and_is_exact_when_one_tile(tiny_k22):
    whole = _generate(pintor.load(tiny_k22, device="cpu"), **{})
    one_tile = _generate(pintor.load(tiny_k22, device="cpu", optimizations=Optimizations(movq_tiling=True,
                                                                                           movq_tile=128)))
    assert np.array_equal(np.asarray(whole), np.asarray(one_tile))
    painter = pintor.load(tiny_k22, device="cpu", optimizations=Optimizations(movq_tiling=True, movq_tile=128))
    big = painter.generate(PROMPT, seed=5, **dict(SETTINGS, width=256, height=192), **Q)[0]
    assert big.size == (256, 192) and np.asarray(big).std() > 0


def test_fuse_qkv_fuses_unet_and_prior(tiny_k22):
    painter = pintor.load(tiny_k22, device="cpu", optimizations=Optimizations(fuse_qkv=True))
    procs = {type(p).__name__ for p in painter.components["unet"].attn_processors.values()}
    assert procs == {"FusedAddedKVAttnProcessor"}
    procs = {type(p).__name__ for p in painter.components["prior.prior"].attn_processors.values()}
    assert procs == {"FusedAttnProcessor2_0"}
    assert fuse_qkv(torch.nn.Linear(2, 2)) == 0


def test_low_vram_on_cpu_runs_and_loads_image_encoder_only_when_needed(tiny_k22, rgb_png, stock_images):
    painter = pintor.load(tiny_k22, device="cpu", low_vram=True)
    assert painter.backend.opts.lazy_image_encoder and painter.backend.opts.movq_slicing
    assert "prior.image_encoder" not in painter.components
    img = _generate(painter)
    assert "prior.image_encoder" not in painter.components  # text to image never needs it
    assert np.array_equal(np.asarray(img), np.asarray(stock_images[0]))
    painter.mix(["a red circle", "a blue square"], [0.5, 0.5], seed=0, **SETTINGS, **Q)
    assert "prior.image_encoder" not in painter.components  # texts only: still not
    painter.variations(rgb_png, seed=0, **SETTINGS, **Q)
    assert "prior.image_encoder" in painter.components


def test_lowest_vram_on_cpu_runs(tiny_k22):
    painter = pintor.load(tiny_k22, device="cpu", lowest_vram=True)
    assert _generate(painter).size == (64, 64)


def test_quantize_int8(tiny_k22, stock_images):
    pytest.importorskip("torchao")
    painter = pintor.load(tiny_k22, device="cpu", optimizations=Optimizations(quantize="int8"))
    assert _generate(painter).size == (64, 64)


def test_parse_and_resolve():
    o = Optimizations.parse("compile,fuse_qkv,deepcache=3,-sdpa,prior_scheduler=ddim,movq_tiling=none")
    assert o.compile and o.fuse_qkv and not o.sdpa and o.deepcache_interval == 3 and o.prior_scheduler == "ddim"
    assert o.movq_tiling is None
    with pytest.raises(ValueError):
        Optimizations.parse("warp_drive")
    with pytest.raises(ValueError):
        Optimizations.parse("deepcache")
    r = Optimizations(cuda_graphs=True).resolved("cpu")
    assert not r.cuda_graphs and not r.compile
    r = Optimizations(cuda_graphs=True).resolved("cuda")
    assert r.cuda_graphs and r.compile
    r = Optimizations(compile=True, sdpa=False).resolved("cuda", low_vram=True)
    assert not r.compile and r.attention_slicing and r.lazy_image_encoder and r.movq_tiling
    assert Optimizations().resolved("cuda", low_vram=True).attention_slicing is False


def test_optimizations_from_environment(monkeypatch):
    from pintor.optim import default_optimizations

    monkeypatch.setenv("PINTOR_OPTIMIZATIONS", "fuse_qkv,deepcache=2")
    o = default_optimizations("cpu")
    assert o.fuse_qkv and o.deepcache_interval == 2
