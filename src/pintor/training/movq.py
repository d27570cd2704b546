"""MoVQ autoencoder training: reconstruction plus VQ commitment, on random crops; or its decoder alone, on round
trips through the frozen encoder (whose latents the decoder UNets were trained on)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from pintor.data.shapes import named_background
from pintor.training.components import frozen, standardize_movq_latents
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
        decoder_only (`bool`): train only the decoder and `post_quant_conv`, on round trips through the frozen
            encoder: every latent stays what it was, so decoder UNets trained on them keep working. No VQ loss,
            no standardising; crops are cut on the latent grid from whole-image latents, as the pipelines
            decode them.
        background_share (`tuple[str, float]`, *optional*): `(name, p)`: draw a fraction `p` of each batch from
            the pool's images whose caption names that background (`"gray"`: its edges weigh least in a
            pixel loss, gray being nearer every palette colour than white or black); `None` draws uniformly.
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
    decoder_only: bool = False
    background_share: tuple[str, float] | None = None

    def validate(self) -> None:
        super().validate()
        if self.background_share is not None:
            name, share = self.background_share
            if not (isinstance(name, str) and name and 0 <= share <= 1):
                raise ValueError(f"background_share must be (background name, share in [0, 1]), "
                                 f"got {self.background_share!r}")


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
def encode_latents(movq, pool: ImagePool, *, device, batch_size: int | None = None,
                   progress: bool = True) -> torch.Tensor:
    """MoVQ latents (`movq.encode(x).latents`, un-quantised) of every pool image, on the CPU.

    `batch_size` defaults to 4 on the CPU and 64 elsewhere.
    """
    from tqdm.auto import tqdm

    if batch_size is None:
        # On the CPU, small batches: glibc serves each allocation over 32 MB with a fresh mmap and returns it on
        # free, so a batch of 64 (a 134 MB activation per 128 px layer) spends most of its time faulting in zeroed
        # pages. Batches of 4 stay under that and encoded 3x faster per image on the 2-core CPU (session 30).
        batch_size = 4 if torch.device(device).type == "cpu" else 64
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
    if cfg.decoder_only:
        return train_movq_decoder(movq, pool, cfg, out_dir)
    if cfg.background_share is not None:
        raise ValueError("background_share is only supported with decoder_only")
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


def train_movq_decoder(movq, pool: ImagePool, cfg: MovqConfig, out_dir: str | Path, *,
                       estimates: torch.Tensor | None = None, p_clean: float = 1.0) -> LoopResult:
    """Fine-tunes a MoVQ's decoder (and `post_quant_conv`) with its encoder frozen (`cfg.decoder_only`).

    The encoder's latents of every pool image are made once; each step decodes a batch of them (crops on the
    latent grid, object-centred as in `train_movq`, then whole latents for the last `cfg.full_fraction` of the
    steps) and fits the image. v9's MoVQ decoder was made this way, with `background_share=("gray", 0.6)`.

    Args:
        movq (`VQModel`): its decoder and `post_quant_conv` are trained in place.
        pool (`ImagePool`): training images.
        cfg (`MovqConfig`): settings.
        out_dir (`str` or `Path`): checkpoints and logs.
        estimates (`torch.Tensor`, *optional*): `(views, len(pool), C, h, w)` other latents to decode into
            the same images, e.g. a diffusion decoder's estimates of the encoder's latents
            (`tools/movqrefine.py`); drawn for a fraction `1 - p_clean` of the samples.
        p_clean (`float`): fraction of samples decoded from the encoder's own latents (1 without `estimates`).
    """
    device = check_device(cfg.device)
    res = pool.resolution
    crop = min(cfg.crop, res)
    if crop % 8:
        raise ValueError(f"movq decoder crop must be a multiple of 8, got {crop}")
    if estimates is None and p_clean != 1:
        raise ValueError(f"p_clean below 1 needs estimates to decode, got p_clean={p_clean}")
    torch.manual_seed(cfg.seed)
    latents = encode_latents(frozen(movq, device), pool, device=device, progress=cfg.progress)
    views = latents[None] if estimates is None else estimates
    if views.shape[1:] != latents.shape:
        raise ValueError(f"estimates must be (views, {', '.join(map(str, latents.shape))}), got {tuple(views.shape)}")
    focus = cfg.background_share[0] if cfg.background_share else None
    share = cfg.background_share[1] if cfg.background_share else None
    picked = torch.tensor([named_background(c) == focus for c in pool.captions])
    picked_idx, other_idx = picked.nonzero()[:, 0], (~picked).nonzero()[:, 0]
    if focus is not None and not len(picked_idx):
        raise ValueError(f"background_share names {focus!r}, but no caption in the pool names that background")
    scale = res // latents.shape[-1]
    movq = movq.to(device)
    movq.requires_grad_(False)
    params = [p for m in (movq.decoder, movq.post_quant_conv) for p in m.parameters()]
    for p in params:
        p.requires_grad_(True)
    full_from = int(cfg.steps * (1 - cfg.full_fraction)) if cfg.full_fraction > 0 else cfg.steps
    full_batch = max(1, round(cfg.batch_size * (crop / res) ** 2))
    lc = crop // scale

    def step(i: int, g: torch.Generator) -> dict[str, torch.Tensor]:
        full = i >= full_from or crop == res
        b = (full_batch if crop != res else cfg.batch_size) if full else cfg.batch_size
        if share is None or not len(other_idx):
            idx = torch.randint(len(pool), (b,), generator=g)
        else:
            pick = torch.rand(b, generator=g) < share
            idx = torch.where(pick, picked_idx[torch.randint(len(picked_idx), (b,), generator=g)],
                              other_idx[torch.randint(len(other_idx), (b,), generator=g)])
        # Every draw below is made even when it cannot matter, so a run's batches depend only on its settings.
        view = torch.randint(len(views), (b,), generator=g)
        clean = torch.rand(b, generator=g) < p_clean
        z = torch.where(clean[:, None, None, None], latents[idx], views[view, idx])
        x = pool.images[idx].float() / 127.5 - 1
        if not full:
            # Crops are cut on the latent grid so latent and pixel crops show the same region.
            u = torch.rand(b, 3, generator=g)
            off = torch.randint(latents.shape[-1] - lc + 1, (b, 2), generator=g)
            if pool.boxes is not None:
                for n, j in enumerate(idx.tolist()):
                    valid = pool.boxes[j][pool.boxes[j, :, 0] >= 0]
                    if u[n, 0] < cfg.object_crops and len(valid):
                        x0, y0, x1, y1 = valid[int(u[n, 1] * len(valid)) % len(valid)].tolist()
                        jit = (float(u[n, 2]) * 2 - 1) * lc / 4
                        for axis, centre in ((0, (y0 + y1) / 2), (1, (x0 + x1) / 2)):
                            o = round(centre / scale + jit - lc / 2)
                            off[n, axis] = min(max(o, 0), latents.shape[-1] - lc)
            z = torch.stack([z[n, :, oy:oy + lc, ox:ox + lc] for n, (oy, ox) in enumerate(off.tolist())])
            x = torch.stack([x[n, :, oy * scale:(oy + lc) * scale, ox * scale:(ox + lc) * scale]
                             for n, (oy, ox) in enumerate(off.tolist())])
        rec = movq.decode(z.to(device), force_not_quantize=True).sample
        x = x.to(device)
        l1 = F.l1_loss(rec, x)
        l2 = F.mse_loss(rec, x)
        return {"loss": cfg.l1_weight * l1 + cfg.l2_weight * l2, "l1": l1.detach(), "l2": l2.detach()}

    return train_loop(movq, step, cfg, out_dir, name="movq decoder", parameters=params)
