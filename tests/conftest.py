"""Fixtures: tiny randomly initialised models built with the real classes, saved with `save_pretrained` and loaded
back through `pintor.load(path)`, the path real models take (as diffusers' own tests do)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

TINY_DEFAULTS = dict(steps=2, prior_steps=2, width=64, height=64)


@pytest.fixture(scope="session")
def tiny_k22(tmp_path_factory) -> Path:
    """A tiny Kandinsky 2.2 folder with every role (prior, decoder, inpaint, controlnet-depth)."""
    from pintor.architectures import TINY, build_kandinsky22, save_kandinsky22

    path = tmp_path_factory.mktemp("models") / "tiny-k22"
    save_kandinsky22(build_kandinsky22(TINY, seed=0), path, name="tiny-k22", defaults=TINY_DEFAULTS)
    return path


@pytest.fixture(scope="session")
def tiny_k22_no_control(tmp_path_factory, tiny_k22) -> Path:
    """The same model without its depth ControlNet: `control` must be refused with the modes it has."""
    import shutil

    path = tmp_path_factory.mktemp("models") / "tiny-k22-nocontrol"
    shutil.copytree(tiny_k22, path)
    shutil.rmtree(path / "controlnet-depth")
    return path


@pytest.fixture(scope="session")
def painter(tiny_k22):
    import pintor

    return pintor.load(tiny_k22)


@pytest.fixture(scope="session")
def tiny_dpt(tmp_path_factory) -> Path:
    """A tiny randomly initialised DPT depth estimator in transformers format."""
    import torch
    from transformers import DPTConfig, DPTForDepthEstimation, DPTImageProcessor

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("models") / "tiny-dpt"
    cfg = DPTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=4, backbone_out_indices=[0, 1, 2, 3],
                    num_attention_heads=4, intermediate_size=37, neck_hidden_sizes=[16, 16, 16, 16],
                    fusion_hidden_size=16, head_hidden_size=16)
    DPTForDepthEstimation(cfg).save_pretrained(path)
    DPTImageProcessor(size={"height": 32, "width": 32}, keep_aspect_ratio=False).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_sd(tmp_path_factory) -> Path:
    """A tiny Stable Diffusion pipeline folder (model_index.json at its root), as in diffusers' tests."""
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from pintor.data.vocabulary import WORDS
    from pintor.tokenizer import build_clip_tokenizer

    torch.manual_seed(0)
    tok = build_clip_tokenizer(list(WORDS))
    unet = UNet2DConditionModel(block_out_channels=(32, 64), layers_per_block=1, sample_size=8, in_channels=4,
                                out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32,
                                norm_num_groups=32)
    vae = AutoencoderKL(block_out_channels=[32, 32, 32, 32], in_channels=3, out_channels=3,
                        down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
                        latent_channels=4, norm_num_groups=32, layers_per_block=1)
    text = CLIPTextModel(CLIPTextConfig(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                                        pad_token_id=tok.pad_token_id, hidden_size=32, intermediate_size=37,
                                        num_attention_heads=4, num_hidden_layers=2, vocab_size=len(tok)))
    sched = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                          set_alpha_to_one=False, steps_offset=1)
    pipe = StableDiffusionPipeline(unet=unet, vae=vae, text_encoder=text, tokenizer=tok, scheduler=sched,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    path = tmp_path_factory.mktemp("models") / "tiny-sd"
    pipe.save_pretrained(path, safe_serialization=True)
    (path / "pintor.json").write_text('{"name": "tiny-sd", "defaults": {"steps": 2, "width": 64, "height": 64}}')
    return path


@pytest.fixture
def rgb_png(tmp_path) -> Path:
    """A 64x64 picture: a red disc on white."""
    img = Image.new("RGB", (64, 64), (255, 255, 255))
    a = np.asarray(img).copy()
    yy, xx = np.mgrid[:64, :64]
    a[(yy - 32) ** 2 + (xx - 32) ** 2 < 15**2] = (220, 30, 30)
    path = tmp_path / "disc.png"
    Image.fromarray(a).save(path)
    return path


@pytest.fixture
def mask_png(tmp_path) -> Path:
    m = np.zeros((64, 64), np.uint8)
    m[16:48, 8:40] = 255
    path = tmp_path / "mask.png"
    Image.fromarray(m).save(path)
    return path


def run_cli(*args, cwd=None, env=None, timeout=300) -> subprocess.CompletedProcess:
    """Runs `python -m pintor ARGS` in a subprocess, as a user would."""
    full_env = dict(os.environ)
    full_env.update({"HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"})
    if env:
        full_env.update(env)
    return subprocess.run([sys.executable, "-m", "pintor", *map(str, args)], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


def pytest_collection_modifyitems(config, items):
    """`gpu` tests run only where torch sees CUDA."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
