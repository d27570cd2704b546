"""Contrastive training of the CLIP text and image towers (InfoNCE with a learnable temperature)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from pintor.training.data import ImagePool, caption_key, clip_normalize, clip_resize, tokenize
from pintor.training.loop import LoopResult, TrainConfig, check_device, train_loop


@dataclass
class ClipConfig(TrainConfig):
    """CLIP training settings (see `TrainConfig` for the shared ones).

    Args:
        temperature (`float`): initial softmax temperature; learned during training (as `logit_scale`).
        empty_pair (`bool`): add one extra pair per batch, the empty caption `""` with an all-zero
            `pixel_values` image. That image's embedding is what the prior pipeline returns as
            `negative_image_embeds` (`get_zero_embed`) and what the decoder learns as its unconditional
            input, so this keeps it apart from every real image's embedding.
    """

    steps: int = 2000
    batch_size: int = 128
    lr: float = 5e-4
    weight_decay: float = 0.1
    warmup_steps: int = 100
    temperature: float = 0.07
    empty_pair: bool = True


class ClipPair(torch.nn.Module):
    """The text and image towers trained together, plus CLIP's learnable `logit_scale`."""

    def __init__(self, text_encoder, image_encoder, temperature: float = 0.07):
        super().__init__()
        self.text_encoder = text_encoder
        self.image_encoder = image_encoder
        self.logit_scale = torch.nn.Parameter(torch.tensor(math.log(1 / temperature)))


def clip_loss(text_embeds: torch.Tensor, image_embeds: torch.Tensor, logit_scale: torch.Tensor,
              keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric InfoNCE; items whose captions share a key are all positives for each other.

    Returns `(loss, accuracy)`, accuracy being how often an image's nearest caption is a positive.
    """
    t = F.normalize(text_embeds, dim=-1)
    i = F.normalize(image_embeds, dim=-1)
    scale = logit_scale.clamp(max=math.log(100)).exp()
    logits = scale * t @ i.T
    pos = (keys[:, None] == keys[None, :]).float()
    target = pos / pos.sum(1, keepdim=True)
    loss = 0.5 * (torch.sum(-target * logits.log_softmax(1), 1).mean() + torch.sum(-target * logits.T.log_softmax(1), 1).mean())
    acc = pos.gather(1, logits.T.argmax(1, keepdim=True)).mean()
    return loss, acc


def train_clip(text_encoder, image_encoder, tokenizer, image_processor, pool: ImagePool, cfg: ClipConfig,
               out_dir: str | Path) -> LoopResult:
    """Trains the CLIP towers on `pool`'s image-caption pairs; the result's `model` is a `ClipPair`.

    The text tower is run on token ids without an attention mask, as the prior pipeline runs it.

    Args:
        text_encoder (`CLIPTextModelWithProjection`): trained in place.
        image_encoder (`CLIPVisionModelWithProjection`): trained in place.
        tokenizer (`CLIPTokenizer`): the text tower's tokenizer.
        image_processor (`CLIPImageProcessor`): its size, mean and std define the image preprocessing.
        pool (`ImagePool`): training pairs.
        cfg (`ClipConfig`): settings.
        out_dir (`str` or `Path`): checkpoints and logs.
    """
    device = check_device(cfg.device)
    torch.manual_seed(cfg.seed)
    model = ClipPair(text_encoder, image_encoder, cfg.temperature).to(device)
    ids, _ = tokenize(tokenizer, pool.captions + [""])
    empty_ids = ids[-1:]
    ids = ids[:-1]
    key_names = [caption_key(c) for c in pool.captions]
    vocab = {k: n for n, k in enumerate(dict.fromkeys(key_names))}
    keys = torch.tensor([vocab[k] for k in key_names])
    pixels = clip_resize(pool, image_processor, progress=cfg.progress)
    size = pixels.shape[-1]

    def step(i: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
        idx = torch.randint(len(pool), (cfg.batch_size,), generator=gen)
        x = clip_normalize(pixels[idx].to(device), image_processor)
        tok, k = ids[idx], keys[idx]
        if cfg.empty_pair:
            x = torch.cat([x, torch.zeros(1, 3, size, size, device=device)])
            tok = torch.cat([tok, empty_ids])
            k = torch.cat([k, torch.tensor([-1])])
        te = model.text_encoder(tok.to(device)).text_embeds
        ie = model.image_encoder(x).image_embeds
        loss, acc = clip_loss(te, ie, model.logit_scale, k.to(device))
        return {"loss": loss, "acc": acc.detach(), "scale": model.logit_scale.detach().exp()}

    return train_loop(model, step, cfg, out_dir, name="clip")


@torch.no_grad()
def image_embeddings(image_encoder, pixels: torch.Tensor, image_processor, *, device, batch_size: int = 256,
                     progress: bool = True) -> torch.Tensor:
    """CLIP `image_embeds` of CLIP-sized uint8 images (`clip_resize`), on the CPU, float32."""
    from tqdm.auto import tqdm

    image_encoder = image_encoder.to(device).eval()
    out = []
    for s in tqdm(range(0, len(pixels), batch_size), desc="image embeds", disable=not progress, mininterval=5):
        x = clip_normalize(pixels[s:s + batch_size].to(device), image_processor)
        out.append(image_encoder(x.to(image_encoder.dtype)).image_embeds.float().cpu())
    return torch.cat(out)


@torch.no_grad()
def zero_image_embedding(image_encoder, *, device) -> torch.Tensor:
    """The embedding of an all-zero `pixel_values` image, `(1, D)`.

    This is `KandinskyV22PriorPipeline.get_zero_embed`, the `negative_image_embeds` the prior pipeline
    returns when no negative prompt is given; the decoders learn it as their unconditional input.
    """
    size = image_encoder.config.image_size
    x = torch.zeros(1, 3, size, size, device=device, dtype=image_encoder.dtype)
    return image_encoder.to(device).eval()(x).image_embeds.float().cpu()
