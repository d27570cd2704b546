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

# Submodules import torch; load them on first use so the CLI (which registers `train`) starts fast.
_EXPORTS = {
    "ClipConfig": "pintor.training.clip",
    "ClipPair": "pintor.training.clip",
    "image_embeddings": "pintor.training.clip",
    "train_clip": "pintor.training.clip",
    "zero_image_embedding": "pintor.training.clip",
    "controlnet_unet_from": "pintor.training.components",
    "inpaint_unet_from": "pintor.training.components",
    "load_components": "pintor.training.components",
    "resolve_model": "pintor.training.components",
    "standardize_movq_latents": "pintor.training.components",
    "ImagePool": "pintor.training.data",
    "build_shapes_pool": "pintor.training.data",
    "load_imagefolder_pool": "pintor.training.data",
    "DecoderConfig": "pintor.training.decoder",
    "train_decoder": "pintor.training.decoder",
    "LoopResult": "pintor.training.loop",
    "TrainConfig": "pintor.training.loop",
    "load_weights": "pintor.training.loop",
    "train_loop": "pintor.training.loop",
    "MovqConfig": "pintor.training.movq",
    "encode_latents": "pintor.training.movq",
    "train_movq": "pintor.training.movq",
    "PriorConfig": "pintor.training.prior",
    "train_prior": "pintor.training.prior",
    "DEFAULTS": "pintor.training.shapes",
    "ShapesPlan": "pintor.training.shapes",
    "plan_for_budget": "pintor.training.shapes",
    "train_shapes": "pintor.training.shapes",
}


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


def __getattr__(name):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'pintor.training' has no attribute {name!r}")
