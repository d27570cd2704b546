"""Contrastive training of the CLIP text and image towers (InfoNCE with a learnable temperature)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from pintor.training.data import ImagePool, caption_key, clip_normalize, clip_resize, hard_negative, tokenize
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
        hard_negatives (`bool`): for shapes-world captions, add one near-miss caption per image as an extra
            negative (flipped relation, swapped colours, other count, ...; see `hard_negative`).
        layout_weight (`float`): weight of the auxiliary loss that makes the image embedding predict the
            scene layout (counts and positions per colour and per shape, background; see
            `layout_targets`), when the pool has one. Without it the embedding barely encodes where
            things are, so relations cannot survive the trip through the prior and decoder.
    """

    steps: int = 2000
    batch_size: int = 128
    lr: float = 5e-4
    weight_decay: float = 0.1
    warmup_steps: int = 100
    temperature: float = 0.07
    empty_pair: bool = True
    hard_negatives: bool = True
    layout_weight: float = 1.0


class ClipPair(torch.nn.Module):
    """The text and image towers trained together, plus CLIP's learnable `logit_scale`."""

    def __init__(self, text_encoder, image_encoder, temperature: float = 0.07, layout_width: int = 0):
        super().__init__()
        self.text_encoder = text_encoder
        self.image_encoder = image_encoder
        self.logit_scale = torch.nn.Parameter(torch.tensor(math.log(1 / temperature)))
        dim = image_encoder.config.projection_dim
        # Training-only head (not exported): reads the layout back from the normalised image embedding.
        # `layout_width` is that of the pool's layout targets (0: no head).
        self.layout_head = (torch.nn.Sequential(torch.nn.Linear(dim, 4 * dim), torch.nn.GELU(),
                                                torch.nn.Linear(4 * dim, layout_outputs(layout_width)))
                            if layout_width else None)


def layout_outputs(target_width: int) -> int:
    """Outputs a head needs to predict layout targets `target_width` wide (see `layout_loss`)."""
    from pintor.data.vocabulary import BACKGROUNDS

    # The targets end with one background index; the head gives one logit per background instead.
    return target_width - 1 + len(BACKGROUNDS)


def layout_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """MSE on counts and (where present) positions, cross-entropy on the background (see `layout_targets`)."""
    n = (target.shape[1] - 1) // 3
    t = target[:, :-1].view(-1, n, 3)
    p = pred[:, : 3 * n].view(-1, n, 3)
    present = (t[..., :1] > 0).float()
    count = F.mse_loss(p[..., 0], t[..., 0])
    pos = ((p[..., 1:] - t[..., 1:]) ** 2 * present).sum() / present.sum().clamp_min(1) / 2
    bg = F.cross_entropy(pred[:, 3 * n:], target[:, -1].long())
    return count * 4 + pos + 0.25 * bg


def clip_loss(text_embeds: torch.Tensor, image_embeds: torch.Tensor, logit_scale: torch.Tensor,
              keys: torch.Tensor, neg_embeds: torch.Tensor | None = None,
              neg_keys: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric InfoNCE; items whose captions share a key are all positives for each other.

    `neg_embeds` are extra captions without images: more candidates for each image to pick from.

    Returns `(loss, accuracy)`, accuracy being how often an image's nearest caption is a positive.
    """
    t = F.normalize(text_embeds, dim=-1)
    i = F.normalize(image_embeds, dim=-1)
    scale = logit_scale.clamp(max=math.log(100)).exp()
    t2i = scale * t @ i.T
    pos = (keys[:, None] == keys[None, :]).float()
    t_all, k_all = t, keys
    if neg_embeds is not None and len(neg_embeds):
        t_all = torch.cat([t, F.normalize(neg_embeds, dim=-1)])
        k_all = torch.cat([keys, neg_keys])
    i2t = scale * i @ t_all.T
    pos_i2t = (keys[:, None] == k_all[None, :]).float()
    loss_t2i = torch.sum(-(pos / pos.sum(1, keepdim=True)) * t2i.log_softmax(1), 1).mean()
    loss_i2t = torch.sum(-(pos_i2t / pos_i2t.sum(1, keepdim=True)) * i2t.log_softmax(1), 1).mean()
    acc = pos_i2t.gather(1, i2t.argmax(1, keepdim=True)).mean()
    return 0.5 * (loss_t2i + loss_i2t), acc


def train_clip(text_encoder, image_encoder, tokenizer, image_processor, pool: ImagePool, cfg: ClipConfig,
               out_dir: str | Path, *, pixels: torch.Tensor | None = None) -> LoopResult:
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
        pixels (`torch.Tensor`, *optional*): the pool's images already resized by `clip_resize`.
    """
    device = check_device(cfg.device)
    torch.manual_seed(cfg.seed)
    use_layout = cfg.layout_weight > 0 and pool.layout is not None
    model = ClipPair(text_encoder, image_encoder, cfg.temperature,
                     pool.layout.shape[1] if use_layout else 0).to(device)
    ids, _ = tokenize(tokenizer, pool.captions + [""])
    empty_ids = ids[-1:]
    ids = ids[:-1]
    key_names = [caption_key(c) for c in pool.captions]
    # Two near-miss captions per image, drawn once with a fixed generator (each step picks one).
    negs: list[str | None] = []
    if cfg.hard_negatives:
        g = torch.Generator().manual_seed(cfg.seed)
        u = torch.rand(len(pool), 2, 4, generator=g)
        negs = [hard_negative(c, u[n, j]) for n, c in enumerate(pool.captions) for j in range(2)]
    vocab = {k: n for n, k in enumerate(dict.fromkeys(key_names + [caption_key(c) for c in negs if c]))}
    keys = torch.tensor([vocab[k] for k in key_names])
    neg_ok = torch.tensor([c is not None for c in negs], dtype=torch.bool).view(-1, 2) if negs else None
    if negs:
        neg_ids = tokenize(tokenizer, [c or "" for c in negs])[0].view(len(pool), 2, -1)
        neg_keys = torch.tensor([vocab[caption_key(c)] if c else -2 for c in negs]).view(-1, 2)
    if pixels is None:
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
        ne = nk = None
        if neg_ok is not None:
            j = torch.randint(2, (len(idx),), generator=gen)
            ok = neg_ok[idx, j]
            if ok.any():
                ne = model.text_encoder(neg_ids[idx, j][ok].to(device)).text_embeds
                nk = neg_keys[idx, j][ok].to(device)
        loss, acc = clip_loss(te, ie, model.logit_scale, k.to(device), ne, nk)
        out = {"loss": loss, "acc": acc.detach(), "scale": model.logit_scale.detach().exp()}
        if use_layout:
            lay = layout_loss(model.layout_head(F.normalize(ie[: len(idx)], dim=-1)), pool.layout[idx].to(device))
            out["loss"] = loss + cfg.layout_weight * lay
            out["layout"] = lay.detach()
        return out

    return train_loop(model, step, cfg, out_dir, name="clip")


@torch.no_grad()
def image_embeddings(image_encoder, pixels: torch.Tensor, image_processor, *, device, batch_size: int | None = None,
                     progress: bool = True) -> torch.Tensor:
    """CLIP `image_embeds` of CLIP-sized uint8 images (`clip_resize`), on the CPU, float32.

    `batch_size` defaults to 32 on the CPU (twice as fast per image as 256 there: see `encode_latents`) and 256
    elsewhere.
    """
    from tqdm.auto import tqdm

    if batch_size is None:
        batch_size = 32 if torch.device(device).type == "cpu" else 256
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
