"""Fine-tunes the shipped MoVQ's decoder (its encoder, and so every latent, fixed): v9's MoVQ decoder came from plain
round trips weighted towards gray backgrounds (`--p-clean 1 --p-gray 0.6`, session 17); session 15 tried it on the
decoder UNet's predicted latents.

800 steps did not help (docs/pintor-shapes-log.md, session 15): the UNet's one-step estimates have already
lost the outline that the decoder would have to restore.

Usage: python tools/movqrefine.py OUT [--model M] [--steps N] [--pool N] [--t-max T] [--p-clean P] [--p-gray P] [--lr LR]
       [--seed S] [--resume]
Writes OUT/model/decoder/movq (for tools/candidate.py --take decoder/movq=OUT/model).
"""
import argparse
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from pintor.data.shapes import named_background
from pintor.training.components import load_components
from pintor.training.data import ImagePool, build_shapes_pool
from pintor.training.loop import LoopResult, check_device, train_loop
from pintor.training.movq import MovqConfig, encode_latents


@dataclass
class MovqDecoderConfig(MovqConfig):
    """`MovqConfig`'s crops and losses (its VQ and standardising fields unused), for fine-tuning a MoVQ's decoder
    on what a diffusion decoder paints (see `refine_movq_decoder`).

    Args:
        t_max (`int`): predicted latents come from noise levels `t` drawn uniformly in `[0, t_max)`.
        p_clean (`float`): fraction of samples decoded from the encoder's own latents, which keeps the round trip.
        guidance_scale (`float`): the diffusion decoder's guidance when predicting, as the pipelines sample.
        views (`int`): predicted latents made per pool image (each with its own `t` and noise).
        p_gray (`float`, *optional*): fraction of each batch drawn from the pool's gray-background images
            (whose edges a pixel loss weighs least: gray is nearer every palette colour than white or black);
            `None` draws uniformly.
    """

    lr: float = 1e-4
    t_max: int = 250
    p_clean: float = 0.25
    guidance_scale: float = 1.75
    views: int = 2
    p_gray: float | None = None


@torch.no_grad()
def predicted_latents(unet, noise_scheduler, latents: torch.Tensor, image_embeds: torch.Tensor,
                      negative: torch.Tensor, *, t_max: int, guidance_scale: float, generator: torch.Generator,
                      device, batch_size: int = 128, progress: bool = True) -> torch.Tensor:
    """A diffusion decoder's guided estimate of each clean latent from a noised copy of it, on the CPU.

    Each latent is noised to its own `t` in `[0, t_max)` and the UNet (given the image's true CLIP embedding,
    and `negative` for the guidance's unconditional half) predicts it back: the small, structured errors
    (rounded corners, blunted points) that a sampler's last steps leave in the latents it hands the MoVQ.
    """
    from tqdm.auto import tqdm

    alphas = noise_scheduler.alphas_cumprod.float()
    v_pred = noise_scheduler.config.prediction_type == "v_prediction"
    c = latents.shape[1]
    out = []
    for s in tqdm(range(0, len(latents), batch_size), desc="predict latents", disable=not progress, mininterval=5):
        x0 = latents[s:s + batch_size]
        b = len(x0)
        t = torch.randint(t_max, (b,), generator=generator)
        noise = torch.randn(x0.shape, generator=generator)
        a = alphas[t][:, None, None, None]
        xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
        emb = torch.cat([negative.expand(b, -1), image_embeds[s:s + b]])
        pred = unet(torch.cat([xt, xt]).to(device), torch.cat([t, t]).to(device), encoder_hidden_states=None,
                    added_cond_kwargs={"image_embeds": emb.to(device)}).sample[:, :c].float().cpu()
        uncond, cond = pred.chunk(2)
        pred = uncond + guidance_scale * (cond - uncond)
        x0_hat = a.sqrt() * xt - (1 - a).sqrt() * pred if v_pred else (xt - (1 - a).sqrt() * pred) / a.sqrt()
        out.append(x0_hat)
    return torch.cat(out)


def refine_movq_decoder(movq, unet, noise_scheduler, image_encoder, image_processor, pool: ImagePool,
                        cfg: MovqDecoderConfig, out_dir: str | Path) -> LoopResult:
    """Fine-tunes a MoVQ's decoder to draw the true image from the latents a diffusion decoder paints.

    A decoder UNet trained with a mean-squared loss returns latents whose finest detail is averaged away,
    and a MoVQ decoder trained only on its encoder's latents turns those into blunted stars and rounded
    triangles. Here the encoder (and so every latent the UNets were trained on) stays fixed; the decoder
    learns from pairs of (the UNet's guided estimate of a noised latent, the original image), plus a
    fraction `cfg.p_clean` of plain round trips. It is the idea of the consistency decoders trained for
    Stable Diffusion's VAE, with a one-step estimate in place of a sampler run.

    Args:
        movq (`VQModel`): its decoder and `post_quant_conv` are trained in place.
        unet (`UNet2DConditionModel`): the frozen text-to-image decoder UNet whose latents are decoded.
        noise_scheduler: that UNet's training schedule (`DDPMScheduler`).
        image_encoder (`CLIPVisionModelWithProjection`), image_processor: frozen image tower.
        pool (`ImagePool`): training images.
        cfg (`MovqDecoderConfig`): settings.
        out_dir (`str` or `Path`): checkpoints and logs.
    """
    from pintor.training.clip import image_embeddings, zero_image_embedding
    from pintor.training.components import frozen
    from pintor.training.data import clip_resize

    device = check_device(cfg.device)
    res = pool.resolution
    crop = min(cfg.crop, res)
    if crop % 8:
        raise ValueError(f"movq decoder crop must be a multiple of 8, got {crop}")
    if not 0 < cfg.t_max <= noise_scheduler.config.num_train_timesteps:
        raise ValueError(f"t_max must be in 1..{noise_scheduler.config.num_train_timesteps}, got {cfg.t_max}")
    if cfg.views < 1:
        raise ValueError(f"views must be >= 1, got {cfg.views}")
    torch.manual_seed(cfg.seed)
    latents = encode_latents(frozen(movq, device), pool, device=device, progress=cfg.progress)
    if cfg.p_clean < 1:
        embeds = image_embeddings(image_encoder, clip_resize(pool, image_processor, progress=cfg.progress),
                                  image_processor, device=device, progress=cfg.progress)
        negative = zero_image_embedding(frozen(image_encoder, device), device=device)
        gen = torch.Generator().manual_seed(cfg.seed + 1)
        fixed_unet = frozen(unet, device)
        predicted = torch.stack([predicted_latents(fixed_unet, noise_scheduler, latents, embeds, negative,
                                                   t_max=cfg.t_max, guidance_scale=cfg.guidance_scale,
                                                   generator=gen, device=device, progress=cfg.progress)
                                 for _ in range(cfg.views)])
        del fixed_unet
    else:  # plain round trips only: no UNet estimates needed
        predicted = latents[None]
    gray = torch.tensor([named_background(c) == "gray" for c in pool.captions])
    gray_idx, other_idx = gray.nonzero()[:, 0], (~gray).nonzero()[:, 0]
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
        if cfg.p_gray is None or not len(gray_idx) or not len(other_idx):
            idx = torch.randint(len(pool), (b,), generator=g)
        else:
            pick_gray = torch.rand(b, generator=g) < cfg.p_gray
            idx = torch.where(pick_gray, gray_idx[torch.randint(len(gray_idx), (b,), generator=g)],
                              other_idx[torch.randint(len(other_idx), (b,), generator=g)])
        view = torch.randint(len(predicted), (b,), generator=g)
        clean = torch.rand(b, generator=g) < cfg.p_clean
        z = torch.where(clean[:, None, None, None], latents[idx], predicted[view, idx])
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


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--model", default="pintor-shapes")
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--pool", type=int, default=8000)
    ap.add_argument("--t-max", type=int, default=250)
    ap.add_argument("--p-clean", type=float, default=0.25)
    ap.add_argument("--views", type=int, default=2)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--p-gray", type=float, default=None)
    ap.add_argument("--seed", type=int, default=21)
    ap.add_argument("--resume", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(2)
    c = load_components(a.model)
    pool = build_shapes_pool(a.pool, seed=a.seed)
    cfg = MovqDecoderConfig(steps=a.steps, batch_size=a.batch_size, t_max=a.t_max, p_clean=a.p_clean,
                            views=a.views, lr=a.lr, p_gray=a.p_gray, seed=a.seed, resume=a.resume, checkpoint_every=250)
    res = refine_movq_decoder(c.movq, c.unet, c.scheduler, c.image_encoder, c.image_processor, pool, cfg, a.out)
    res.model.save_pretrained(Path(a.out) / "model" / "decoder" / "movq", safe_serialization=True)
    print("saved", Path(a.out) / "model" / "decoder" / "movq", f"{res.seconds:.0f}s")
