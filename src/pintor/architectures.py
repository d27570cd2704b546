"""Builders for the Kandinsky 2.2 components with the diffusers and transformers classes the real model uses.

One `Kandinsky22Sizes` describes a whole model; `build_kandinsky22` makes randomly initialised
components from it and `save_kandinsky22` writes them in the folder layout that `pintor.load(path)`
opens (one sub-folder per hub repository of the real model):

```
model/
  pintor.json                    # optional: name, default settings
  prior/                         # = kandinsky-community/kandinsky-2-2-prior
  decoder/                       # = kandinsky-community/kandinsky-2-2-decoder (unet, movq, scheduler)
  inpaint/unet/                  # = kandinsky-community/kandinsky-2-2-decoder-inpaint (its unet)
  controlnet-depth/unet/         # = kandinsky-community/kandinsky-2-2-controlnet-depth (its unet)
```
The tests use the `TINY` sizes; the embedded model uses `SHAPES`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


@dataclass(frozen=True)
class Kandinsky22Sizes:
    """Sizes of every Kandinsky 2.2 component; see `build_kandinsky22`."""

    embed_dim: int = 32  # CLIP projection dim = prior embedding dim = decoder image-embedding dim
    text_hidden: int = 32
    text_layers: int = 2
    text_heads: int = 4
    max_text_len: int = 77
    vision_image_size: int = 32
    vision_patch: int = 8
    vision_hidden: int = 32
    vision_layers: int = 2
    vision_heads: int = 4
    # Scale of a 2-D sin-cos init of the vision tower's patch position embeddings; 0 keeps transformers'
    # near-zero random init. A tiny ViT trained from scratch barely learns where things are from that init,
    # and then the CLIP image embedding (all the decoder sees) carries no object positions.
    vision_pos_sincos: float = 0.0
    prior_heads: int = 2
    prior_head_dim: int = 16
    prior_layers: int = 1
    unet_channels: tuple[int, ...] = (32, 64)
    unet_layers_per_block: int = 1
    unet_head_dim: int = 8
    unet_cross_dim: int = 32
    # Cross-attention on the image embedding at the full latent resolution too (the real decoder's first level
    # has none). At 16x16 latents an object is two or three latent pixels, and that level draws its shape.
    unet_full_attention: bool = False
    # 4 levels: latents are 1/8 of the image. SpatialNorm hard-codes 32 groups, so use multiples of 32.
    movq_channels: tuple[int, ...] = (32, 32, 32, 32)
    movq_layers_per_block: int = 1
    movq_norm_groups: int = 8
    movq_latent_channels: int = 4
    movq_codebook: int = 64
    movq_attention: bool = False


TINY = Kandinsky22Sizes()

SHAPES = Kandinsky22Sizes(
    embed_dim=64,
    text_hidden=64,  # the prior projects text hidden states with a Linear(embed_dim, ...): they must match
    text_layers=4,
    text_heads=4,
    max_text_len=24,
    vision_image_size=64,
    vision_patch=8,
    vision_hidden=128,
    vision_layers=4,
    vision_heads=4,
    vision_pos_sincos=1.0,
    prior_heads=4,
    prior_head_dim=32,
    prior_layers=6,
    unet_channels=(32, 64, 128),
    unet_layers_per_block=1,
    unet_head_dim=32,
    unet_cross_dim=64,
    movq_channels=(32, 32, 64, 64),
    movq_layers_per_block=1,
    movq_norm_groups=16,
    movq_latent_channels=4,
    movq_codebook=256,
)


# The decoder's (down, up) block types at a level without attention and at one with cross-attention on the image
# embedding; `pintor.training.components.full_attention_unet_from` swaps the first for the second.
UNET_PLAIN_BLOCKS = ("ResnetDownsampleBlock2D", "ResnetUpsampleBlock2D")
UNET_ATTENTION_BLOCKS = ("SimpleCrossAttnDownBlock2D", "SimpleCrossAttnUpBlock2D")


def _unet_kwargs(s: Kandinsky22Sizes) -> dict:
    n = len(s.unet_channels)
    plain = 0 if s.unet_full_attention else 1  # levels without attention, from the full resolution
    down = (UNET_PLAIN_BLOCKS[0],) * plain + (UNET_ATTENTION_BLOCKS[0],) * (n - plain)
    up = (UNET_ATTENTION_BLOCKS[1],) * (n - plain) + (UNET_PLAIN_BLOCKS[1],) * plain
    return dict(
        sample_size=None,
        in_channels=s.movq_latent_channels,
        # The pipelines split the output in two (epsilon, learned variance) as the real decoder does.
        out_channels=2 * s.movq_latent_channels,
        down_block_types=down,
        up_block_types=up,
        mid_block_type="UNetMidBlock2DSimpleCrossAttn",
        block_out_channels=tuple(s.unet_channels),
        layers_per_block=s.unet_layers_per_block,
        encoder_hid_dim=s.embed_dim,
        encoder_hid_dim_type="image_proj",
        cross_attention_dim=s.unet_cross_dim,
        attention_head_dim=s.unet_head_dim,
        addition_embed_type="image",
        resnet_time_scale_shift="scale_shift",
        class_embed_type=None,
        norm_num_groups=min(32, s.unet_channels[0]),
    )


def build_unet(s: Kandinsky22Sizes, kind: str = "text2img"):
    """Builds a decoder UNet: `kind` is "text2img", "inpaint" (9 input channels) or "controlnet" (depth hint)."""
    from diffusers import UNet2DConditionModel

    kw = _unet_kwargs(s)
    if kind == "inpaint":
        kw["in_channels"] = 2 * s.movq_latent_channels + 1
    elif kind == "controlnet":
        kw["addition_embed_type"] = "image_hint"
        # The hint encoder outputs 4 channels that are concatenated to the latents.
        kw["in_channels"] = s.movq_latent_channels + 4
    elif kind != "text2img":
        raise ValueError(f"unet kind must be 'text2img', 'inpaint' or 'controlnet', got {kind!r}")
    return UNet2DConditionModel(**kw)


def build_movq(s: Kandinsky22Sizes):
    from diffusers import VQModel

    n = len(s.movq_channels)
    down = ["DownEncoderBlock2D"] * n
    up = ["UpDecoderBlock2D"] * n
    if s.movq_attention:
        down[-1] = "AttnDownEncoderBlock2D"
        up[0] = "AttnUpDecoderBlock2D"
    return VQModel(
        in_channels=3,
        out_channels=3,
        down_block_types=tuple(down),
        up_block_types=tuple(up),
        block_out_channels=tuple(s.movq_channels),
        layers_per_block=s.movq_layers_per_block,
        latent_channels=s.movq_latent_channels,
        num_vq_embeddings=s.movq_codebook,
        vq_embed_dim=s.movq_latent_channels,
        norm_num_groups=s.movq_norm_groups,
        norm_type="spatial",
    )


def build_text_encoder(s: Kandinsky22Sizes, tokenizer):
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    cfg = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=s.text_hidden,
        intermediate_size=4 * s.text_hidden,
        num_hidden_layers=s.text_layers,
        num_attention_heads=s.text_heads,
        max_position_embeddings=s.max_text_len,
        projection_dim=s.embed_dim,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return CLIPTextModelWithProjection(cfg)


def build_image_encoder(s: Kandinsky22Sizes):
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    cfg = CLIPVisionConfig(
        hidden_size=s.vision_hidden,
        intermediate_size=4 * s.vision_hidden,
        num_hidden_layers=s.vision_layers,
        num_attention_heads=s.vision_heads,
        image_size=s.vision_image_size,
        patch_size=s.vision_patch,
        projection_dim=s.embed_dim,
    )
    model = CLIPVisionModelWithProjection(cfg)
    if s.vision_pos_sincos:
        import torch

        table = model.vision_model.embeddings.position_embedding.weight
        grid = s.vision_image_size // s.vision_patch
        with torch.no_grad():
            table[0] = 0  # the class token has no place
            table[1:] = sincos_2d(grid, s.vision_hidden) * s.vision_pos_sincos
    return model


def sincos_2d(grid: int, dim: int):
    """Returns the 2-D sin-cos position table (`grid * grid` rows, row-major patches, `dim` columns) of MAE/ViT."""
    import torch

    if dim % 4:
        raise ValueError(f"sin-cos position embeddings need a width divisible by 4, got {dim}")
    ys, xs = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")
    freqs = 1.0 / (100 ** (torch.arange(dim // 4) / (dim // 4)))
    x = xs.flatten()[:, None].float() * freqs
    y = ys.flatten()[:, None].float() * freqs
    return torch.cat([x.sin(), x.cos(), y.sin(), y.cos()], dim=1)


def build_image_processor(s: Kandinsky22Sizes):
    from transformers import CLIPImageProcessor

    size = s.vision_image_size
    return CLIPImageProcessor(
        size={"shortest_edge": size},
        crop_size={"height": size, "width": size},
        do_center_crop=True,
        do_normalize=True,
        do_resize=True,
        image_mean=CLIP_MEAN,
        image_std=CLIP_STD,
        resample=3,
    )


def build_prior(s: Kandinsky22Sizes):
    from diffusers import PriorTransformer

    return PriorTransformer(
        num_attention_heads=s.prior_heads,
        attention_head_dim=s.prior_head_dim,
        num_layers=s.prior_layers,
        embedding_dim=s.embed_dim,
        num_embeddings=s.max_text_len,
        additional_embeddings=4,
    )


def prior_scheduler():
    """The prior's scheduler, configured as in kandinsky-community/kandinsky-2-2-prior."""
    from diffusers import UnCLIPScheduler

    return UnCLIPScheduler(
        variance_type="fixed_small_log",
        prediction_type="sample",
        num_train_timesteps=1000,
        clip_sample=True,
        clip_sample_range=10.0,
    )


def decoder_scheduler():
    """The decoder's noise schedule: Kandinsky 2.2's linear betas, with v-prediction.

    The real decoder predicts epsilon; from scratch on a CPU budget, v-prediction learns far faster (at 800
    steps its samples had clean, right-coloured backgrounds where epsilon's drifted into noise), and every
    scheduler pintor offers reads `prediction_type` from this config.
    """
    from diffusers import DDPMScheduler

    return DDPMScheduler(
        num_train_timesteps=1000,
        beta_schedule="linear",
        beta_start=0.00085,
        beta_end=0.012,
        clip_sample=False,
        prediction_type="v_prediction",
        variance_type="fixed_small",
    )


@dataclass
class Kandinsky22Components:
    """Every Kandinsky 2.2 component, as the diffusers pipelines name them."""

    tokenizer: object
    text_encoder: object
    image_encoder: object
    image_processor: object
    prior: object
    prior_scheduler: object
    unet: object
    movq: object
    scheduler: object
    inpaint_unet: object | None = None
    controlnet_unet: object | None = None
    extra: dict = field(default_factory=dict)


def build_kandinsky22(s: Kandinsky22Sizes = TINY, words: list[str] | None = None, seed: int = 0) -> Kandinsky22Components:
    """Builds randomly initialised Kandinsky 2.2 components of the given sizes.

    Args:
        s (`Kandinsky22Sizes`): the sizes; `TINY` for tests, `SHAPES` for the embedded model.
        words (`list[str]`, *optional*): the tokenizer's words; defaults to the shapes-world vocabulary.
        seed (`int`): seeds the weight initialisation, so the same call builds the same weights.
    """
    import torch

    from pintor.tokenizer import build_clip_tokenizer

    if words is None:
        from pintor.data.vocabulary import WORDS

        words = list(WORDS)
    torch.manual_seed(seed)
    tokenizer = build_clip_tokenizer(words, model_max_length=s.max_text_len)
    return Kandinsky22Components(
        tokenizer=tokenizer,
        text_encoder=build_text_encoder(s, tokenizer),
        image_encoder=build_image_encoder(s),
        image_processor=build_image_processor(s),
        prior=build_prior(s),
        prior_scheduler=prior_scheduler(),
        unet=build_unet(s, "text2img"),
        movq=build_movq(s),
        scheduler=decoder_scheduler(),
        inpaint_unet=build_unet(s, "inpaint"),
        controlnet_unet=build_unet(s, "controlnet"),
    )


def save_kandinsky22(c: Kandinsky22Components, path: str | Path, *, name: str | None = None, defaults: dict | None = None,
                     fp16: bool = False) -> Path:
    """Saves components in the folder layout `pintor.load(path)` opens, as safetensors.

    Args:
        c (`Kandinsky22Components`): what to save.
        path (`str` or `Path`): the folder; created if missing.
        name (`str`, *optional*): the model name recorded in `pintor.json`.
        defaults (`dict`, *optional*): default generation settings recorded in `pintor.json`
            (for example `{"num_inference_steps": 20}`).
        fp16 (`bool`): store weights as float16 to halve the size on disk.
    """
    import copy

    from diffusers import KandinskyV22Pipeline, KandinskyV22PriorPipeline

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)

    def stored(m):
        # Cast a copy, so the caller's modules stay in full precision.
        return copy.deepcopy(m).half() if fp16 and hasattr(m, "half") else m

    prior = KandinskyV22PriorPipeline(
        prior=stored(c.prior),
        image_encoder=stored(c.image_encoder),
        text_encoder=stored(c.text_encoder),
        tokenizer=c.tokenizer,
        scheduler=c.prior_scheduler,
        image_processor=c.image_processor,
    )
    decoder = KandinskyV22Pipeline(unet=stored(c.unet), scheduler=c.scheduler, movq=stored(c.movq))
    prior.save_pretrained(path / "prior", safe_serialization=True)
    decoder.save_pretrained(path / "decoder", safe_serialization=True)
    for role, unet in (("inpaint", c.inpaint_unet), ("controlnet-depth", c.controlnet_unet)):
        if unet is not None:
            stored(unet).save_pretrained(path / role / "unet", safe_serialization=True)
    meta = {"name": name or path.name, "family": "kandinsky-2.2", "defaults": defaults or {}}
    if c.extra:
        meta.update(c.extra)
    (path / "pintor.json").write_text(json.dumps(meta, indent=2) + "\n")
    # diffusers records where each module was loaded from; a shipped model should not carry local paths.
    for cfg in path.rglob("config.json"):
        data = json.loads(cfg.read_text())
        if data.pop("_name_or_path", None) is not None:
            cfg.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    return path


def sizes_to_dict(s: Kandinsky22Sizes) -> dict:
    return asdict(s)
