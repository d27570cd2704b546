"""Single-repository diffusers models (SD 1.5, SDXL, Kandinsky 3) through the same `pintor.load(path)`."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import pintor
from pintor.errors import ModeNotSupportedError

Q = dict(show_progress=False)


def test_tiny_stable_diffusion_modes(tiny_sd, rgb_png, mask_png):
    p = pintor.load(tiny_sd)
    assert p.spec.family == "diffusers-auto" and p.modes == ("generate", "img2img", "inpaint")
    a = p.generate("a red circle", seed=0, **Q)
    b = p.generate("a red circle", seed=0, **Q)
    assert a[0].size == (64, 64) and np.array_equal(np.asarray(a[0]), np.asarray(b[0]))
    assert p.img2img(rgb_png, "a blue square", strength=0.5, seed=0, **Q)[0].size == (64, 64)
    out = p.inpaint(rgb_png, mask_png, "a blue square", seed=0, **Q)[0]
    outside = np.asarray(Image.open(mask_png)) < 128
    assert np.array_equal(np.asarray(out)[outside], np.asarray(Image.open(rgb_png).convert("RGB"))[outside])
    # img2img and inpaint reuse the text-to-image weights.
    assert p.backend.pipeline("img2img").unet is p.backend.pipeline("generate").unet
    with pytest.raises(ModeNotSupportedError, match="its modes are generate, img2img, inpaint"):
        p.mix(["a", "b"], [1, 1], **Q)
    with pytest.raises(ModeNotSupportedError, match="cannot pick among candidates"):
        p.generate("a red circle", seed=0, candidates=2, **Q)
