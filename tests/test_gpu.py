"""GPU paths (skipped without CUDA): fp16 by default, reproducible pixels, offload modes."""

from __future__ import annotations

import numpy as np
import pytest

import pintor

pytestmark = pytest.mark.gpu


def test_fp16_by_default_and_reproducible(tiny_k22):
    p = pintor.load(tiny_k22, device="cuda")
    assert str(p.dtype) == "torch.float16"
    a = p.generate("a red circle", seed=0, show_progress=False)[0]
    b = p.generate("a red circle", seed=0, show_progress=False)[0]
    assert np.array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("mode", ["low_vram", "lowest_vram"])
def test_offload_modes_run(tiny_k22, rgb_png, mode):
    p = pintor.load(tiny_k22, device="cuda", **{mode: True})
    assert p.generate("a red circle", seed=0, show_progress=False)[0].size == (64, 64)
    assert p.img2img(rgb_png, "a red circle", seed=0, show_progress=False)[0].size == (64, 64)


def test_compile_of_every_module_keeps_the_pixels(tiny_k22):
    from pintor.bench.measure import psnr
    from pintor.optim import Optimizations

    kw = dict(seed=0, steps=4, prior_steps=3, show_progress=False)
    plain = pintor.load(tiny_k22, device="cuda").generate("a red circle", **kw)[0]
    compiled = pintor.load(tiny_k22, device="cuda", optimizations=Optimizations(compile=True))
    assert psnr(compiled.generate("a red circle", **kw)[0], plain) >= 30.0
