"""Diffusion-prior training: text -> CLIP image embedding, as the Kandinsky 2.2 prior pipeline samples it."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from pintor.training.cache import fingerprint, load_or_compute, processor_settings
from pintor.training.clip import image_embeddings, layout_loss, layout_outputs
from pintor.training.components import frozen
from pintor.training.data import ImagePool, clip_resize, tokenize
from pintor.training.loop import LoopResult, TrainConfig, check_device, train_loop


@dataclass
class PriorConfig(TrainConfig):
    """Prior training settings (see `TrainConfig` for the shared ones).

    Args:
        drop_caption (`float`): how often the caption is replaced by `""`, the prior pipeline's negative
            prompt, so classifier-free guidance has an unconditional model to extrapolate from.
        set_clip_stats (`bool`, *optional*): set the prior's `clip_mean` / `clip_std` (which
            `post_process_latents` uses to de-normalise) from the training images' embeddings. `None`
            sets them only when they are unset (all zero), so fine-tuning keeps a pretrained prior's.
        layout_weight (`float`): weight of an auxiliary loss, for pools with a `layout` (shapes-world):
            a small probe, first fitted to read the layout from the pool's true image embeddings and then
            frozen, reads it from the prior's predicted embedding. Object positions are a small part of an
            embedding's variance, so plain MSE leaves the prior placing objects at random; this loss asks
            for them. 0 trains the plain diffusers objective.
        layout_probe_steps (`int`): training steps of that probe.
        relation_weight (`float`): captions that place one object relative to another (see
            `caption_weights`) are drawn this many times as often as the others; 1 draws uniformly. The
            layout loss learns where objects go mostly from those captions, about a quarter of the shapes world.
    """

    steps: int = 3000
    batch_size: int = 128
    lr: float = 3e-4
    weight_decay: float = 1e-2
    warmup_steps: int = 100
    drop_caption: float = 0.1
    set_clip_stats: bool | None = None
    layout_weight: float = 0.0
    layout_probe_steps: int = 3000
    relation_weight: float = 1.0

    def validate(self) -> None:
        super().validate()
        if not (self.relation_weight > 0 and math.isfinite(self.relation_weight)):
            raise ValueError(f"relation_weight must be a positive number, got {self.relation_weight!r}")
        if not (self.layout_weight >= 0 and math.isfinite(self.layout_weight)):
            raise ValueError(f"layout_weight must be 0 or a positive number, got {self.layout_weight!r}")


def caption_weights(captions: list[str], relation_weight: float) -> torch.Tensor:
    """Sampling weights of `captions`: `relation_weight` for those naming a relation of the shapes world's
    vocabulary (`"to the left of"`, `"above"`, ...), 1 for the rest."""
    from pintor.data.vocabulary import RELATIONS

    return torch.tensor([relation_weight if any(f" {r} " in f" {c} " for r in RELATIONS) else 1.0
                         for c in captions])


def train_prior(prior, text_encoder, image_encoder, tokenizer, image_processor, noise_scheduler, pool: ImagePool,
                cfg: PriorConfig, out_dir: str | Path, *, image_embeds: torch.Tensor | None = None) -> LoopResult:
    """Trains a `PriorTransformer` to predict the normalised CLIP image embedding (the *sample*).

    Matches `KandinskyV22PriorPipeline`: the frozen text tower gives `text_embeds` (the projection
    embedding) and `last_hidden_state` with the token attention mask; targets are the frozen image
    tower's `image_embeds`, standardised with the prior's `clip_mean` / `clip_std`; noise follows
    `noise_scheduler` (the prior's `UnCLIPScheduler`), as in diffusers' `train_text_to_image_prior.py`.

    Args:
        prior (`PriorTransformer`): trained in place.
        text_encoder (`CLIPTextModelWithProjection`), image_encoder (`CLIPVisionModelWithProjection`): frozen.
        tokenizer (`CLIPTokenizer`), image_processor (`CLIPImageProcessor`): the towers' preprocessing.
        noise_scheduler (`UnCLIPScheduler` or `DDPMScheduler`): the training noise schedule.
        pool (`ImagePool`): image-caption pairs.
        cfg (`PriorConfig`): settings.
        out_dir (`str` or `Path`): checkpoints and logs.
        image_embeds (`torch.Tensor`, *optional*): precomputed `image_embeds` of the pool.
    """
    device = check_device(cfg.device)
    torch.manual_seed(cfg.seed)
    te = frozen(text_encoder, device)
    if image_embeds is None:  # kept in OUT/cache so that --resume does not encode the pool again
        key = fingerprint("image_embeds", pool.images, image_encoder, processor_settings(image_processor), str(device))
        image_embeds = load_or_compute(Path(out_dir) / "cache" / "image_embeds.safetensors", key, lambda: {
            "image_embeds": image_embeddings(image_encoder, clip_resize(pool, image_processor, progress=cfg.progress),
                                             image_processor, device=device, progress=cfg.progress)})["image_embeds"]
    if len(image_embeds) != len(pool):
        raise ValueError(f"got {len(image_embeds)} image embeddings for {len(pool)} pool images")
    set_stats = cfg.set_clip_stats
    if set_stats is None:
        set_stats = bool(torch.all(prior.clip_std == 0))
    if set_stats:
        with torch.no_grad():
            prior.clip_mean.copy_(image_embeds.mean(0, keepdim=True))
            prior.clip_std.copy_(image_embeds.std(0, keepdim=True).clamp_min(1e-6))
    # The statistics are fixed data facts, not weights to learn.
    prior.clip_mean.requires_grad_(False)
    prior.clip_std.requires_grad_(False)
    prior = prior.to(device)
    ids, mask = tokenize(tokenizer, pool.captions + [""])
    empty_ids, empty_mask = ids[-1:], mask[-1:]
    ids, mask = ids[:-1], mask[:-1]
    alphas = noise_scheduler.alphas_cumprod.float()
    n_t = len(alphas)
    weights = caption_weights(pool.captions, cfg.relation_weight) if cfg.relation_weight != 1 else None
    probe = None
    if cfg.layout_weight > 0 and pool.layout is not None:
        probe = fit_layout_probe(image_embeds, pool.layout, seed=cfg.seed, steps=cfg.layout_probe_steps).to(device)

    def step(i: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
        b = cfg.batch_size
        if weights is None:
            idx = torch.randint(len(pool), (b,), generator=gen)
        else:
            idx = torch.multinomial(weights, b, replacement=True, generator=gen)
        drop = torch.rand(b, generator=gen) < cfg.drop_caption
        tok = torch.where(drop[:, None], empty_ids, ids[idx])
        att = torch.where(drop[:, None], empty_mask, mask[idx])
        t = torch.randint(n_t, (b,), generator=gen)
        noise = torch.randn(b, image_embeds.shape[1], generator=gen)
        with torch.no_grad():
            out = te(tok.to(device))
        x0 = (image_embeds[idx].to(device) - prior.clip_mean) / prior.clip_std
        a = alphas[t].to(device)[:, None]
        xt = a.sqrt() * x0 + (1 - a).sqrt() * noise.to(device)
        pred = prior(xt, timestep=t.to(device), proj_embedding=out.text_embeds,
                     encoder_hidden_states=out.last_hidden_state, attention_mask=att.to(device)).predicted_image_embedding
        loss = F.mse_loss(pred, x0)
        if probe is None:
            return {"loss": loss}
        keep = ~drop.to(device)  # an empty caption says nothing about the layout
        emb = F.normalize((pred * prior.clip_std + prior.clip_mean)[keep], dim=-1)
        lay = layout_loss(probe(emb), pool.layout[idx][keep.cpu()].to(device))
        return {"loss": loss + cfg.layout_weight * lay, "mse": loss.detach(), "layout": lay.detach()}

    return train_loop(prior, step, cfg, out_dir, name="prior")


def fit_layout_probe(image_embeds: torch.Tensor, layout: torch.Tensor, *, seed: int = 0, steps: int = 3000,
                     batch_size: int = 256) -> torch.nn.Module:
    """Fits a small MLP that reads `layout` (see `layout_targets`) from normalised `image_embeds`; returns it frozen.

    Runs on the CPU in about 30 s for a 15000-image pool; seeded, so the same inputs give the same probe.
    """
    g = torch.Generator().manual_seed(seed)
    dim = image_embeds.shape[1]
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        probe = torch.nn.Sequential(torch.nn.Linear(dim, 512), torch.nn.GELU(), torch.nn.Linear(512, 512),
                                    torch.nn.GELU(), torch.nn.Linear(512, layout_outputs(layout.shape[1])))
    x = F.normalize(image_embeds.float(), dim=-1)
    opt = torch.optim.Adam(probe.parameters(), 1e-3)
    for _ in range(steps):
        idx = torch.randint(len(x), (batch_size,), generator=g)
        loss = layout_loss(probe(x[idx]), layout[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return probe.requires_grad_(False).eval()


@torch.no_grad()
def sample_prior_embeddings(prior, text_encoder, tokenizer, image_encoder, image_processor, scheduler,
                            captions: list[str], *, num_inference_steps: int, guidance_scale: float, seed: int = 0,
                            device="cpu", batch_size: int = 256, progress: bool = True) -> torch.Tensor:
    """One `KandinskyV22PriorPipeline` sample per caption, `(len(captions), D)` float32 on the CPU.

    These are the embeddings the decoder is given at inference (text to image), as opposed to the true
    embeddings of training images; batch `k` is drawn with the generator seeded `seed + k`.
    """
    from diffusers import KandinskyV22PriorPipeline
    from tqdm.auto import tqdm

    pipe = KandinskyV22PriorPipeline(prior=frozen(prior, device), text_encoder=frozen(text_encoder, device),
                                     tokenizer=tokenizer, image_encoder=frozen(image_encoder, device),
                                     image_processor=image_processor, scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    out = []
    for k, s in enumerate(tqdm(range(0, len(captions), batch_size), desc="prior embeds", disable=not progress,
                               mininterval=5)):
        gen = torch.Generator(device).manual_seed(seed + k)
        r = pipe(captions[s:s + batch_size], num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
                 generator=gen, output_type="pt")
        out.append(r.image_embeds.float().cpu())
    return torch.cat(out)
