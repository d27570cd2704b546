"""MoVQ autoencoder training: reconstruction plus VQ commitment, on random crops."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from pintor.training.components import standardize_movq_latents
from pintor.training.data import ImagePool
from pintor.training.loop import LoopResult, TrainConfig, check_device, train_loop


@dataclass
class MovqConfig(TrainConfig):
    """MoVQ training settings (see `TrainConfig` for the shared ones).

    Args:
        crop (`int`): side of the random crops (a multiple of 8); the model is fully convolutional.
        full_fraction (`float`): the last fraction of steps trains on whole images instead, with
            `batch_size * (crop / resolution)**2` images per step (same pixels), so the decoder's
            GroupNorm statistics match whole images at inference.
        l1_weight, l2_weight (`float`): reconstruction loss weights.
        vq_weight (`float`): weight of the codebook + commitment loss.
        object_crops (`float`): fraction of crops centred (with jitter) on an object, when the pool knows
            object boxes: shapes-world images are mostly flat background, which teaches little.
        standardize (`bool`): afterwards, fold a reparameterisation into the model so its latents have
            zero mean and unit variance (what the unscaled Kandinsky pipelines expect).
    """

    steps: int = 2000
    batch_size: int = 16
    lr: float = 5e-4
    weight_decay: float = 0.0
    warmup_steps: int = 100
    ema_decay: float | None = 0.998
    crop: int = 64
    full_fraction: float = 0.2
    l1_weight: float = 1.0
    l2_weight: float = 1.0
    vq_weight: float = 0.1
    object_crops: float = 0.7
    standardize: bool = True


def movq_losses(movq, x: torch.Tensor, cfg: MovqConfig) -> dict[str, torch.Tensor]:
    """Reconstruction through the un-quantised path the pipelines decode with, plus the VQ loss."""
    z = movq.encode(x).latents
    _, vq_loss, _ = movq.quantize(z)
    # The pipelines decode diffusion latents with force_not_quantize=True, so that is the path to train.
    rec = movq.decode(z, force_not_quantize=True).sample
    l1 = F.l1_loss(rec, x)
    l2 = F.mse_loss(rec, x)
    loss = cfg.l1_weight * l1 + cfg.l2_weight * l2 + cfg.vq_weight * vq_loss
    return {"loss": loss, "l1": l1.detach(), "l2": l2.detach(), "vq": vq_loss.detach()}


@torch.no_grad()
def encode_latents(movq, pool: ImagePool, *, device, batch_size: int = 64, progress: bool = True) -> torch.Tensor:
    """MoVQ latents (`movq.encode(x).latents`, un-quantised) of every pool image, on the CPU."""
    from tqdm.auto import tqdm

    movq.eval()
    out = []
    for s in tqdm(range(0, len(pool), batch_size), desc="encode latents", disable=not progress, mininterval=5):
        idx = torch.arange(s, min(s + batch_size, len(pool)))
        out.append(movq.encode(pool.pixels(idx).to(device)).latents.float().cpu())
    return torch.cat(out)


def train_movq(movq, pool: ImagePool, cfg: MovqConfig, out_dir: str | Path) -> LoopResult:
    """Trains a `VQModel` (MoVQ, `norm_type="spatial"`) on `pool`'s images.

    Args:
        movq (`VQModel`): trained in place.
        pool (`ImagePool`): training images.
        cfg (`MovqConfig`): settings.
        out_dir (`str` or `Path`): checkpoints and logs.

    Returns:
        `LoopResult`; when `cfg.standardize`, its model's latents are standardised (see
        `standardize_movq_latents`) and the removed mean and std are in `result.info`.
    """
    device = check_device(cfg.device)
    res = pool.resolution
    crop = min(cfg.crop, res)
    if crop % 8:
        raise ValueError(f"movq crop must be a multiple of 8, got {crop}")
    movq = movq.to(device)
    full_from = int(cfg.steps * (1 - cfg.full_fraction)) if cfg.full_fraction > 0 else cfg.steps
    full_batch = max(1, round(cfg.batch_size * (crop / res) ** 2))

    def step(i: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
        if i >= full_from or crop == res:
            idx = torch.randint(len(pool), (full_batch if crop != res else cfg.batch_size,), generator=gen)
            x = pool.pixels(idx)
        else:
            idx = torch.randint(len(pool), (cfg.batch_size,), generator=gen)
            off = torch.randint(res - crop + 1, (cfg.batch_size, 2), generator=gen)
            u = torch.rand(cfg.batch_size, 4, generator=gen)
            if pool.boxes is not None:
                for n, j in enumerate(idx.tolist()):
                    valid = pool.boxes[j][pool.boxes[j, :, 0] >= 0]
                    if u[n, 0] < cfg.object_crops and len(valid):
                        x0, y0, x1, y1 = valid[int(u[n, 1] * len(valid)) % len(valid)].tolist()
                        jitter = (u[n, 2:] * 2 - 1) * crop / 4
                        cy = (y0 + y1) / 2 + float(jitter[0]) - crop / 2
                        cx = (x0 + x1) / 2 + float(jitter[1]) - crop / 2
                        off[n, 0] = int(min(max(cy, 0), res - crop))
                        off[n, 1] = int(min(max(cx, 0), res - crop))
            x = torch.stack([pool.images[j, :, y:y + crop, x0:x0 + crop]
                             for j, (y, x0) in zip(idx.tolist(), off.tolist(), strict=True)]).float() / 127.5 - 1
        return movq_losses(movq, x.to(device), cfg)

    result = train_loop(movq, step, cfg, out_dir, name="movq")
    if cfg.standardize:
        sample = encode_latents(result.model, ImagePool(pool.images[:512], pool.captions[:512]), device=device,
                                progress=False)
        mean, std = standardize_movq_latents(result.model, sample.to(device))
        result.info.update(latent_mean=mean, latent_std=std)
    return result
