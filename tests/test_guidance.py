"""Autoguidance (`pintor.guidance`) on tiny real UNets and a tiny model folder with an `autoguide/` decoder."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

import pintor
from pintor.errors import ModeNotSupportedError
from pintor.guidance import autoguidance, autoguided_noise

Q = dict(show_progress=False)


def _unets(seed_weak=1):
    from pintor.architectures import TINY, build_unet

    torch.manual_seed(0)
    unet = build_unet(TINY, "text2img").eval()
    torch.manual_seed(seed_weak)
    return unet, build_unet(TINY, "text2img").eval()


def _call(unet, sample, t, embeds):
    return unet(sample=sample, timestep=t, encoder_hidden_states=None, added_cond_kwargs={"image_embeds": embeds},
                return_dict=False)[0]


@pytest.mark.parametrize("g", [4.0, 1.0])
def test_hook_gives_the_pipeline_the_autoguided_noise(g):
    unet, weak = _unets()
    c = unet.config.in_channels
    dim = unet.config.encoder_hid_dim
    torch.manual_seed(2)
    x, emb, neg = torch.randn(2, c, 8, 8), torch.randn(2, dim), torch.randn(2, dim)
    t = torch.tensor(500)
    a = 0.5
    with torch.no_grad():
        eps_u, eps_c = _call(unet, x, t, neg)[:, :c], _call(unet, x, t, emb)
        eps_w = _call(weak, x, t, emb)[:, :c]
        want = autoguided_noise(eps_u if g > 1 else None, eps_c[:, :c], eps_w, g, a)
        with autoguidance(unet, weak, a, g):
            if g > 1:  # what a Kandinsky 2.2 pipeline does with its [uncond; cond] batch
                out = _call(unet, torch.cat([x, x]), t, torch.cat([neg, emb]))
                u, cc = out[:, :c].chunk(2)
                got, variance = u + g * (cc - u), out[2:, c:]
            else:
                out = _call(unet, x, t, emb)
                got, variance = out[:, :c], out[:, c:]
        after = _call(unet, x, t, emb)
    assert torch.allclose(got, want, atol=1e-4)
    assert torch.allclose(variance, eps_c[:, c:], atol=1e-5)  # the learned variance passes through
    assert torch.equal(after, eps_c)  # the hook is gone once the context closes
    # eps_c - eps_w is the push: a weak model equal to the decoder leaves plain guidance.
    assert torch.equal(autoguided_noise(eps_u, eps_c[:, :c], eps_c[:, :c], g, a),
                       autoguided_noise(eps_u, eps_c[:, :c], eps_c[:, :c], g, 0.0))
    with pytest.raises(ValueError, match="autoguidance_scale must be >= 0, got -1"):
        with autoguidance(unet, weak, -1, g):
            pass


@pytest.fixture(scope="module")
def guided_k22(tiny_k22, tmp_path_factory):
    """The tiny model with a weak decoder in `autoguide/unet` and autoguidance 0.5 by default."""
    _, weak = _unets(seed_weak=7)
    path = tmp_path_factory.mktemp("models") / "tiny-k22-ag"
    shutil.copytree(tiny_k22, path)
    weak.save_pretrained(path / "autoguide" / "unet")
    meta = json.loads((path / "pintor.json").read_text())
    meta["defaults"]["autoguidance_scale"] = 0.5
    (path / "pintor.json").write_text(json.dumps(meta))
    return path


def _px(img):
    return np.asarray(img, dtype=np.int16)


def test_autoguidance_through_the_painter(tiny_k22, guided_k22, rgb_png, mask_png):
    plain, guided = pintor.load(tiny_k22), pintor.load(guided_k22)
    assert guided.backend.autoguidance_modes == ("generate", "mix", "img2img", "variations")
    assert plain.backend.autoguidance_modes == ()
    base = plain.generate("a red circle", seed=5, **Q)[0]
    off = guided.generate("a red circle", seed=5, autoguidance_scale=0, **Q)[0]
    on = guided.generate("a red circle", seed=5, **Q)[0]
    again = guided.generate("a red circle", seed=5, **Q)[0]
    assert np.array_equal(_px(base), _px(off))  # 0 is plain classifier-free guidance, pixel for pixel
    assert np.abs(_px(on) - _px(off)).max() > 0
    assert np.array_equal(_px(on), _px(again))  # same seed, same pixels
    assert "Autoguidance: 0.5" in on.info["parameters"]
    assert json.loads(on.info["pintor"])["request"]["autoguidance_scale"] == 0.5
    assert "Autoguidance" not in off.info["parameters"]
    assert "autoguide.unet" in guided.components  # loaded once, shared with the other decoder modes
    guided.variations(rgb_png, seed=1, **Q)
    assert guided.components["autoguide.unet"] is guided.backend._weak_unet()
    # The default is the base decoder's: inpainting runs without it, and says so in its record.
    painted = guided.inpaint(rgb_png, mask_png, "a blue square", seed=1, **Q)[0]
    assert json.loads(painted.info["pintor"])["request"]["autoguidance_scale"] is None
    with pytest.raises(ModeNotSupportedError, match="guides generate, mix, img2img, variations, not inpaint"):
        guided.inpaint(rgb_png, mask_png, "a blue square", seed=1, autoguidance_scale=0.5, **Q)
    with pytest.raises(ModeNotSupportedError, match=r"no autoguidance model \(an autoguide/unet folder\): got autoguidance_scale=1.0, expected 0"):
        plain.generate("a red circle", seed=5, autoguidance_scale=1.0, **Q)


def test_cli_autoguidance(guided_k22, tiny_k22, tmp_path):
    from PIL import Image

    from conftest import run_cli

    out = tmp_path / "ag.png"
    r = run_cli("generate", "a red circle", "--model", guided_k22, "--seed", 3, "--autoguidance-scale", 0.25, "-o", out,
                "-q")
    assert r.returncode == 0, r.stderr
    assert "Autoguidance: 0.25" in Image.open(out).info["parameters"]
    r = run_cli("generate", "a red circle", "--model", tiny_k22, "--autoguidance-scale", 1, "-q", cwd=tmp_path)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert "has no autoguidance model (an autoguide/unet folder): got autoguidance_scale=1.0, expected 0" in r.stderr
