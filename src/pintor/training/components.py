"""Loading models to train from, and the weight surgery the trainers need.

A model folder has the layout `save_kandinsky22` writes (`prior/`, `decoder/`, `inpaint/unet/`,
`controlnet-depth/unet/`): the same sub-folders as the Kandinsky 2.2 hub repositories, so a real
Kandinsky 2.2 prior or decoder loads the same way (`from_pretrained(folder, subfolder=...)`), as in the
diffusers `train_text_to_image_prior.py` / `train_text_to_image_decoder.py` examples.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import torch

from pintor.architectures import UNET_ATTENTION_BLOCKS, UNET_PLAIN_BLOCKS, Kandinsky22Components

ROLES = ("prior", "decoder", "inpaint", "controlnet-depth")


def resolve_model(ref: str | Path) -> dict[str, Path]:
    """Finds the role folders (`prior`, `decoder`, `inpaint`, `controlnet-depth`) of a model reference.

    Args:
        ref: a local model folder, or a registry name (`pintor-shapes`, `kandinsky-2.2`, ...); hub
            models are fetched with `huggingface_hub.snapshot_download`.

    Raises:
        ValueError: the folder has no `prior/` or `decoder/`, or the name is unknown.
    """
    path = Path(ref).expanduser()
    if path.is_dir():
        roles = {r: path / r for r in ROLES if (path / r).is_dir()}
        if not roles:
            raise ValueError(f"model folder {str(path)!r} has none of {', '.join(ROLES)}; "
                             "expected the layout save_kandinsky22 writes")
        return roles
    from pintor import registry

    try:
        spec = registry.get_spec(str(ref))
    except ValueError:
        raise ValueError(f"--model {str(ref)!r} is neither a folder nor a registry name; expected a model folder "
                         f"or one of {', '.join(registry.REGISTRY)}") from None
    if spec.family != "kandinsky-2.2":
        raise ValueError(f"model {spec.name!r} is {spec.family}; the trainers fine-tune kandinsky-2.2 models")
    if spec.embedded:
        return resolve_model(registry.embedded_path())
    from huggingface_hub import snapshot_download

    return {role: Path(snapshot_download(repo)) for role, repo in spec.sources.items() if role in ROLES}


def load_components(ref: str | Path, *, need: tuple[str, ...] = ("prior", "decoder")) -> Kandinsky22Components:
    """Loads a Kandinsky 2.2 model's components in float32 for training.

    Args:
        ref: a model folder or registry name (see `resolve_model`).
        need: the roles that must be present; others load when found.
    """
    from diffusers import DDPMScheduler, PriorTransformer, UnCLIPScheduler, UNet2DConditionModel, VQModel
    from transformers import (
        CLIPImageProcessor,
        CLIPTextModelWithProjection,
        CLIPTokenizer,
        CLIPVisionModelWithProjection,
    )

    roles = resolve_model(ref)
    missing = [r for r in need if r not in roles]
    if missing:
        raise ValueError(f"model {str(ref)!r} has no {', '.join(missing)}; found {', '.join(roles) or 'nothing'}")
    f32 = torch.float32
    parts: dict = dict.fromkeys(("tokenizer", "text_encoder", "image_encoder", "image_processor", "prior",
                                 "prior_scheduler", "unet", "movq", "scheduler"))
    if "prior" in roles:
        p = roles["prior"]
        parts.update(
            tokenizer=CLIPTokenizer.from_pretrained(p, subfolder="tokenizer"),
            text_encoder=CLIPTextModelWithProjection.from_pretrained(p, subfolder="text_encoder", dtype=f32),
            image_encoder=CLIPVisionModelWithProjection.from_pretrained(p, subfolder="image_encoder", dtype=f32),
            image_processor=CLIPImageProcessor.from_pretrained(p, subfolder="image_processor"),
            prior=PriorTransformer.from_pretrained(p, subfolder="prior", torch_dtype=f32),
            prior_scheduler=UnCLIPScheduler.from_pretrained(p, subfolder="scheduler"),
        )
    if "decoder" in roles:
        d = roles["decoder"]
        parts.update(
            unet=UNet2DConditionModel.from_pretrained(d, subfolder="unet", torch_dtype=f32),
            movq=VQModel.from_pretrained(d, subfolder="movq", torch_dtype=f32),
            scheduler=DDPMScheduler.from_pretrained(d, subfolder="scheduler"),
        )
    c = Kandinsky22Components(**parts)
    for role, attr in (("inpaint", "inpaint_unet"), ("controlnet-depth", "controlnet_unet")):
        if role in roles and (roles[role] / "unet").is_dir():
            setattr(c, attr, UNet2DConditionModel.from_pretrained(roles[role], subfolder="unet", torch_dtype=f32))
    # The model's pintor.json (defaults, training record) sits beside its role folders, for a folder and
    # for the embedded model alike; a fine-tune keeps it, so it samples with the settings its base was tuned for.
    roots = {p.parent for p in roles.values()}
    meta = next(iter(roots)) / "pintor.json" if len(roots) == 1 else None
    if meta is not None and meta.is_file():
        c.extra["_meta"] = json.loads(meta.read_text())
    return c


def save_trained(c: Kandinsky22Components, path: str | Path, *, name: str) -> Path:
    """Saves components loaded by `load_components` (and trained) as a model folder at `path`.

    What the starting model's pintor.json recorded (its defaults, its negative-embedding convention) is kept;
    its name too, `name` being the fallback when it had none.
    """
    from pintor.architectures import save_kandinsky22

    meta = c.extra.pop("_meta", {})
    c.extra.update({k: v for k, v in meta.items() if k not in ("name", "family", "defaults")})
    return save_kandinsky22(c, path, name=meta.get("name", name), defaults=meta.get("defaults"))


def _unet_from(base, **overrides):
    from diffusers import UNet2DConditionModel

    cfg = {k: v for k, v in dict(base.config).items() if not k.startswith("_")}
    cfg.update(overrides)
    return UNet2DConditionModel.from_config(cfg)


def _copy_matching(src: torch.nn.Module, dst: torch.nn.Module, widen: tuple[str, ...] = ()) -> list[str]:
    # Copies every same-named, same-shaped tensor; for `widen` keys, copies the source's input channels
    # and zero-initialises the new ones so the new conditioning starts with no effect.
    s_sd, d_sd = src.state_dict(), dst.state_dict()
    fresh = []
    for k, v in d_sd.items():
        if k in s_sd and s_sd[k].shape == v.shape:
            v.copy_(s_sd[k])
        elif k in widen and k in s_sd:
            v.zero_()
            v[:, : s_sd[k].shape[1]].copy_(s_sd[k])
        else:
            fresh.append(k)
    dst.load_state_dict(d_sd)
    return fresh


def inpaint_unet_from(base, *, seed: int = 0):
    """An inpainting UNet (9 input channels: latents, masked-image latents, mask) initialised from `base`.

    Every weight is copied; the 5 new input channels of `conv_in` start at zero, so the fine-tune starts
    from exactly the base decoder's predictions.
    """
    torch.manual_seed(seed)
    c = base.config.in_channels
    unet = _unet_from(base, in_channels=2 * c + 1)
    _copy_matching(base, unet, widen=("conv_in.weight",))
    return unet


def controlnet_unet_from(base, *, seed: int = 0):
    """A depth-ControlNet UNet (`addition_embed_type="image_hint"`) initialised from `base`.

    The hint encoder is new (randomly initialised); it outputs 4 channels concatenated to the latents,
    whose `conv_in` weights start at zero, so the fine-tune starts from the base decoder's predictions.
    """
    torch.manual_seed(seed)
    c = base.config.in_channels
    unet = _unet_from(base, in_channels=c + 4, addition_embed_type="image_hint")
    _copy_matching(base, unet, widen=("conv_in.weight",))
    return unet


def full_attention_unet_from(base, *, seed: int = 0):
    """A copy of decoder UNet `base` with cross-attention on the image embedding at its full latent resolution
    too (its first down and last up level, which have none in the real decoder's layout).

    Every weight of `base` is copied; the new attention blocks are randomly initialised except their output
    projections, which start at zero. Those blocks add their output to the residual stream, so the new UNet
    starts from exactly `base`'s predictions and the fine-tune learns what the new level should read. Works for
    text-to-image, inpaint and ControlNet UNets alike; a UNet that already has the attention is copied as it is.

    Raises:
        ValueError: `base`'s outer levels are not diffusers' `ResnetDownsampleBlock2D` / `ResnetUpsampleBlock2D`
            (or already the cross-attention blocks), the Kandinsky 2.2 decoder layout.
    """
    down, up = list(base.config.down_block_types), list(base.config.up_block_types)
    if (down[0], up[-1]) == UNET_ATTENTION_BLOCKS:
        return copy.deepcopy(base)
    if (down[0], up[-1]) != UNET_PLAIN_BLOCKS:
        raise ValueError(f"full attention grows a Kandinsky 2.2 decoder whose outer levels are "
                         f"{' / '.join(UNET_PLAIN_BLOCKS)}, got {down[0]} / {up[-1]}")
    torch.manual_seed(seed)
    down[0], up[-1] = UNET_ATTENTION_BLOCKS
    unet = _unet_from(base, down_block_types=tuple(down), up_block_types=tuple(up))
    fresh = _copy_matching(base, unet)
    if any(".attentions." not in k for k in fresh) or set(base.state_dict()) - set(unet.state_dict()):
        raise ValueError(f"full attention changed more than the outer levels' attention: new {fresh[:4]}")
    with torch.no_grad():
        for block in (unet.down_blocks[0], unet.up_blocks[-1]):
            for attn in block.attentions:
                attn.to_out[0].weight.zero_()
                attn.to_out[0].bias.zero_()
    return unet


def _channel_map(segments: list[tuple[str, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    # New-to-old index map of a (possibly concatenated) channel dim: a ("wide", n) segment becomes 2n
    # channels, old channel c as new 2c and 2c+1; an ("same", n) one is kept. Also which new entries are copies.
    src, copied, off = [], [], 0
    for kind, n in segments:
        wide = kind == "wide"
        src.append(off + (torch.arange(2 * n) // 2 if wide else torch.arange(n)))
        copied.append(torch.full((2 * n if wide else n,), wide))
        off += n
    return torch.cat(src), torch.cat(copied)


def _widen_tensor(old: torch.Tensor, out_segs, in_segs, gen: torch.Generator, spread: float) -> torch.Tensor:
    # Input channels first: each pair of copies gets 1/2 + d and 1/2 - d of the old weight (the same sum, so the
    # same output, but different gradients, so the copies can part). Then output channels: copies of an output
    # share those splits, so they stay the same activation.
    t = old
    if in_segs is not None and old.dim() > 1:
        src, copied = _channel_map(in_segs)
        t = t.index_select(1, src)
        idx = torch.nonzero(copied).squeeze(1)
        shape = list(t.shape)
        shape[1] = len(idx) // 2
        d = (torch.rand(shape, generator=gen) * 2 - 1) * spread
        f = torch.ones_like(t)
        f[:, idx[0::2]], f[:, idx[1::2]] = 0.5 + d, 0.5 - d
        t = t * f
    if out_segs is not None:
        t = t.index_select(0, _channel_map(out_segs)[0])
    return t


@torch.no_grad()
def wider_unet_from(base, *, seed: int = 0, spread: float = 0.1):
    """A copy of decoder UNet `base` with twice the channels at its full latent resolution (its first level).

    Net2WiderNet (Chen et al. 2016): old channel `c` of that level becomes new channels `2c` and `2c + 1`, the
    same activation twice and in one GroupNorm group, so the group statistics do not change; each layer that
    reads them gets its old weight split between the copies, `w (1/2 + d)` and `w (1/2 - d)`, `d` uniform in
    `[-spread, spread]`: the same output, but different gradients, so the copies can part in training. The
    sinusoidal time projection (as wide as the first level) doubles its frequencies too, and the old ones are
    every other new one, so the time embedding keeps its old weights there, zeros elsewhere, and its old width.

    diffusers' blocks keep all but two things: the next level's first resnet gets an identity shortcut where it
    had a 1x1 convolution, if the new width equals its own; and the up resnets that read `[next level | first
    level]` normalise in groups of other sizes. So the new UNet predicts nearly, not exactly, what `base` does
    (the shipped decoder: 0.4-4% relative squared difference), and training repairs that.

    Works for text-to-image, inpaint and ControlNet UNets alike (their extra inputs enter unchanged).

    Raises:
        ValueError: `base`'s first level is not diffusers' `ResnetDownsampleBlock2D` / `ResnetUpsampleBlock2D`
            (the Kandinsky 2.2 decoder layout), its time embedding is not positional, or it has fewer than two
            levels.
    """
    cfg = base.config
    ch = list(cfg.block_out_channels)
    down, up = cfg.down_block_types, cfg.up_block_types
    if (down[0], up[-1]) != UNET_PLAIN_BLOCKS or len(ch) < 2 or cfg.time_embedding_type != "positional":
        raise ValueError(f"widening needs a Kandinsky 2.2 decoder whose first level is {' / '.join(UNET_PLAIN_BLOCKS)} "
                         f"with positional time embedding and 2+ levels, got {down[0]} / {up[-1]}, "
                         f"{cfg.time_embedding_type}, {len(ch)} levels")
    c0, c1, n_res = ch[0], ch[1], cfg.layers_per_block
    unet = _unet_from(base, block_out_channels=(2 * c0, *ch[1:]), time_embedding_dim=cfg.time_embedding_dim or 4 * c0)
    wide, same1 = ("wide", c0), ("same", c1)
    resnet = {"norm1": ([wide], None), "conv1": ([wide], [wide]), "time_emb_proj": ([wide, wide], None),
              "norm2": ([wide], None), "conv2": ([wide], [wide])}  # time_emb_proj: scale and shift halves
    plan = {"conv_in": ([wide], None), "conv_norm_out": ([wide], None),
            "conv_out": (None, [wide]),
            "down_blocks.1.resnets.0.norm1": ([wide], None),
            "down_blocks.1.resnets.0.conv1": (None, [wide]),
            "down_blocks.1.resnets.0.conv_shortcut": (None, [wide])}
    for name in [f"down_blocks.0.resnets.{i}" for i in range(n_res)] + ["down_blocks.0.downsamplers.0"]:
        plan.update({f"{name}.{k}": v for k, v in resnet.items()})
    # The next-to-last up block's last resnet reads [its own output | the first level's downsampled output];
    # the last up block's resnets read [the block before's output | a first-level skip] and write the first level.
    last_res = f"up_blocks.{len(up) - 2}.resnets.{n_res}"
    plan.update({f"{last_res}.norm1": ([same1, wide], None), f"{last_res}.conv1": (None, [same1, wide]),
                 f"{last_res}.conv_shortcut": (None, [same1, wide])})
    for i in range(n_res + 1):
        name, cat = f"up_blocks.{len(up) - 1}.resnets.{i}", [same1 if i == 0 else wide, wide]
        plan.update({f"{name}.{k}": v for k, v in resnet.items()})
        plan.update({f"{name}.norm1": (cat, None), f"{name}.conv1": ([wide], cat),
                     f"{name}.conv_shortcut": ([wide], cat)})
    gen = torch.Generator().manual_seed(seed)
    fresh = set(_copy_matching(base, unet))  # every tensor the widening leaves as it was
    old, new = base.state_dict(), unet.state_dict()
    for k, v in new.items():
        if k not in fresh:
            continue
        prefix = k.rsplit(".", 1)[0]
        if k == "time_embedding.linear_1.weight":
            # old column j is cos_j (j < c0/2) or sin_(j - c0/2); the frequency of old j is that of new 2j
            half, j = c0 // 2, torch.arange(c0 // 2)
            v.zero_()
            v[:, 2 * j], v[:, c0 + 2 * j] = old[k][:, j], old[k][:, half + j]
        elif prefix in plan and k in old:
            out_segs, in_segs = plan[prefix]
            grown = _widen_tensor(old[k], out_segs, in_segs, gen, spread)
            if grown.shape != v.shape:
                raise ValueError(f"widening mapped {k} to {tuple(grown.shape)}, the new UNet has {tuple(v.shape)}")
            v.copy_(grown)
        else:
            raise ValueError(f"widening has no map for {k}: {tuple(old[k].shape) if k in old else None} -> "
                             f"{tuple(v.shape)}")
    return unet


@torch.no_grad()
def standardize_movq_latents(movq, latents: torch.Tensor) -> tuple[list[float], float]:
    """Reparameterises a MoVQ so its latents have zero mean per channel and unit standard deviation.

    The Kandinsky pipelines feed MoVQ latents to the UNet unscaled, so the diffusion noise schedule
    assumes unit-variance latents. The map `z' = (z - m) / s` is folded into `quant_conv` and the
    codebook, and its inverse into every 1x1 conv that reads the latents (`post_quant_conv` and each
    SpatialNorm), so decoded images do not change. One scalar `s` keeps codebook look-ups unchanged.

    Args:
        movq: a `VQModel`, modified in place.
        latents: a sample of its current latents, `(B, C, h, w)`.

    Returns:
        `(mean, std)` that were removed.
    """
    from diffusers.models.attention_processor import SpatialNorm

    m = latents.float().mean(dim=(0, 2, 3))
    s = float(latents.float().sub(m.view(1, -1, 1, 1)).std())
    k = 1.0 / max(s, 1e-6)
    qc = movq.quant_conv
    qc.weight.mul_(k)
    qc.bias.sub_(m).mul_(k)
    emb = movq.quantize.embedding.weight
    emb.sub_(m).mul_(k)

    def fold(conv: torch.nn.Conv2d) -> None:
        w = conv.weight  # (out, in, 1, 1)
        conv.bias.add_(w[:, :, 0, 0] @ m)
        w.mul_(s)

    fold(movq.post_quant_conv)
    for mod in movq.decoder.modules():
        if isinstance(mod, SpatialNorm):
            fold(mod.conv_y)
            fold(mod.conv_b)
    return m.tolist(), s


def frozen(module: torch.nn.Module, device) -> torch.nn.Module:
    """A frozen, eval-mode copy of `module` on `device` (the trainers' fixed encoders)."""
    m = copy.deepcopy(module).to(device).eval()
    m.requires_grad_(False)
    return m
