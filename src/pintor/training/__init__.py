"""Training and fine-tuning Kandinsky 2.2 models, and the embedded pintor-shapes model from scratch.

Every trainer shares one loop (`train_loop`: AdamW, EMA, safetensors checkpoints with exact resume,
`loss.csv` and `loss.png`) and takes a typed config:

- `train_clip` (`ClipConfig`): CLIP text and image towers, contrastively.
- `train_movq` (`MovqConfig`): the MoVQ autoencoder.
- `train_prior` (`PriorConfig`): the diffusion prior, text -> CLIP image embedding.
- `train_decoder` (`DecoderConfig`): the decoder UNet, and with `kind="inpaint"` / `"controlnet"` the
  inpainting and depth-ControlNet decoders (start them with `inpaint_unet_from` / `controlnet_unet_from`).
- `train_shapes`: all of the above in order, for the embedded model.

Unconditional (classifier-free guidance) conventions: the prior drops captions to `""`; the decoders
drop the image embedding to the zero-image embedding `image_encoder(zeros)`, which is what
`KandinskyV22PriorPipeline` returns as `negative_image_embeds` when no negative prompt is given.
"""

from pintor.training.clip import ClipConfig, ClipPair, image_embeddings, train_clip, zero_image_embedding
from pintor.training.components import (
    controlnet_unet_from,
    inpaint_unet_from,
    load_components,
    resolve_model,
    standardize_movq_latents,
)
from pintor.training.data import ImagePool, build_shapes_pool, load_imagefolder_pool
from pintor.training.decoder import DecoderConfig, train_decoder
from pintor.training.loop import LoopResult, TrainConfig, load_weights, train_loop
from pintor.training.movq import MovqConfig, encode_latents, train_movq
from pintor.training.prior import PriorConfig, train_prior
from pintor.training.shapes import DEFAULTS, ShapesPlan, plan_for_budget, train_shapes

__all__ = [
    "DEFAULTS",
    "ClipConfig",
    "ClipPair",
    "DecoderConfig",
    "ImagePool",
    "LoopResult",
    "MovqConfig",
    "PriorConfig",
    "ShapesPlan",
    "TrainConfig",
    "build_shapes_pool",
    "controlnet_unet_from",
    "encode_latents",
    "image_embeddings",
    "inpaint_unet_from",
    "load_components",
    "load_imagefolder_pool",
    "load_weights",
    "plan_for_budget",
    "resolve_model",
    "standardize_movq_latents",
    "train_clip",
    "train_decoder",
    "train_loop",
    "train_movq",
    "train_prior",
    "train_shapes",
    "zero_image_embedding",
]
