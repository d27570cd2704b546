"""Fine-tunes the shipped MoVQ's decoder (its encoder, and so every latent, fixed): v9's MoVQ decoder came from plain
round trips weighted towards gray backgrounds (`--p-clean 1 --p-gray 0.6`, session 17; the library's
`pintor train movq --decoder-only --background-share gray 0.6` trains the same, batch for batch); session 15 tried
it on the decoder UNet's predicted latents.

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

from pintor.training.components import load_components
from pintor.training.data import ImagePool, build_shapes_pool
from pintor.training.loop import LoopResult, check_device
from pintor.training.movq import MovqConfig, encode_latents, train_movq_decoder


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
    fraction `cfg.p_clean` of plain round trips (`pintor.training.movq.train_movq_decoder` does the training;
    with `p_clean` 1 this is `pintor train movq --decoder-only`). It is the idea of the consistency decoders
    trained for Stable Diffusion's VAE, with a one-step estimate in place of a sampler run.
    """
    from pintor.training.clip import image_embeddings, zero_image_embedding
    from pintor.training.components import frozen
    from pintor.training.data import clip_resize

    device = check_device(cfg.device)
    if not 0 < cfg.t_max <= noise_scheduler.config.num_train_timesteps:
        raise ValueError(f"t_max must be in 1..{noise_scheduler.config.num_train_timesteps}, got {cfg.t_max}")
    if cfg.views < 1:
        raise ValueError(f"views must be >= 1, got {cfg.views}")
    cfg.decoder_only = True
    cfg.background_share = None if cfg.p_gray is None else ("gray", cfg.p_gray)
    estimates = None
    if cfg.p_clean < 1:
        torch.manual_seed(cfg.seed)
        latents = encode_latents(frozen(movq, device), pool, device=device, progress=cfg.progress)
        embeds = image_embeddings(image_encoder, clip_resize(pool, image_processor, progress=cfg.progress),
                                  image_processor, device=device, progress=cfg.progress)
        negative = zero_image_embedding(frozen(image_encoder, device), device=device)
        gen = torch.Generator().manual_seed(cfg.seed + 1)
        fixed_unet = frozen(unet, device)
        estimates = torch.stack([predicted_latents(fixed_unet, noise_scheduler, latents, embeds, negative,
                                                   t_max=cfg.t_max, guidance_scale=cfg.guidance_scale,
                                                   generator=gen, device=device, progress=cfg.progress)
                                 for _ in range(cfg.views)])
        del fixed_unet
    return train_movq_decoder(movq, pool, cfg, out_dir, estimates=estimates, p_clean=cfg.p_clean)


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
