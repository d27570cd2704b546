"""Decoder training: CLIP image embedding -> MoVQ latents, plus the inpainting and depth-ControlNet variants."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from pintor.data.shapes import named_background
from pintor.training.cache import fingerprint, load_or_compute, processor_settings
from pintor.training.clip import image_embeddings, zero_image_embedding
from pintor.training.components import frozen
from pintor.training.data import ImagePool, clip_resize, inpaint_inputs, random_repaint_masks
from pintor.training.loop import LoopResult, TrainConfig, check_device, train_loop
from pintor.training.movq import encode_latents

KINDS = ("text2img", "inpaint", "controlnet")


@dataclass
class DecoderConfig(TrainConfig):
    """Decoder training settings (see `TrainConfig` for the shared ones).

    Args:
        kind (`str`): `"text2img"`, `"inpaint"` or `"controlnet"` (depth hint).
        drop_image_embeds (`float`): how often the image embedding is replaced by the unconditional one
            (the zero-image embedding, see `zero_image_embedding`) for classifier-free guidance.
        snr_gamma (`float`, *optional*): min-SNR-gamma loss weighting (Hang et al. 2023); `None` for
            plain MSE.
        snr_floor (`float`, *optional*): with `snr_gamma`, the least weight a step's error in the predicted
            clean latents gets, `clamp(snr, snr_floor, snr_gamma)` (1 is the "truncated SNR" weighting of
            Salimans & Ho 2022). Min-SNR alone weighs the noisiest steps by their SNR, near 0, and those are
            where the layout (where objects go, how many) is decided; `None` keeps min-SNR as it is.
        p_object_mask, p_full_mask (`float`): inpainting mask mix (see `random_repaint_masks`).
        p_moved_embeds (`float`): inpainting only: how often the image embedding is that of the image turned
            half a turn (every object elsewhere), so the decoder takes positions from the mask and the kept
            pixels, and only what to paint from the embedding; at inference the prior's embedding of the
            prompt places objects anywhere.
        p_prior_embeds (`float`): text to image and ControlNet: how often the image embedding is the prior's
            sample for the image's caption (`prior_embeds` of `train_decoder`) instead of the image's own. At
            inference the decoder paints from the prior's embeddings, which name the caption's objects but not
            this image's exact layout; 0 trains on true embeddings only, as diffusers' script does.
        low_noise_fraction (`float`): fraction of samples whose timestep is drawn from `[0, low_noise_max)`
            instead of the whole schedule. The last sampling steps decide an object's outline, and a MoVQ
            decoder turns small errors in those latents into rounded squares and blunted stars.
        low_noise_max (`int`): the end (exclusive) of those timesteps.
        background_balance (`float`): how far to even out the backgrounds that captions name (`" on a
            {background} background"`, white when none) when drawing training images: 0 draws images
            uniformly, 1 draws each background equally often, values between mix the two. The shapes world
            names no background 40% of the time, so its gray and black scenes are a fifth each of the data.
        object_weight (`float`): extra loss weight of the latent cells that objects cover (depth map above 0,
            pooled to the latent grid), so each cell weighs `1 + object_weight * coverage` and the loss is
            normalised by the mean weight. Shapes-world objects cover 14% of the 16x16 cells while the flat
            background is most of the loss; 0 (default) weighs every cell alike. Needs the pool's depth maps.
    """

    kind: str = "text2img"
    steps: int = 5000
    batch_size: int = 32
    lr: float = 3e-4
    weight_decay: float = 1e-2
    warmup_steps: int = 200
    drop_image_embeds: float = 0.1
    snr_gamma: float | None = 5.0
    snr_floor: float | None = None
    p_object_mask: float = 0.5
    p_full_mask: float = 0.1
    p_moved_embeds: float = 0.5
    p_prior_embeds: float = 0.0
    low_noise_fraction: float = 0.0
    low_noise_max: int = 250
    background_balance: float = 0.0
    object_weight: float = 0.0

    def validate(self) -> None:
        super().validate()
        if not 0 <= self.background_balance <= 1:
            raise ValueError(f"background_balance must be in [0, 1], got {self.background_balance!r}")
        if not self.object_weight >= 0:
            raise ValueError(f"object_weight must be >= 0, got {self.object_weight!r}")
        if not 0 <= self.p_prior_embeds <= 1:
            raise ValueError(f"p_prior_embeds must be in [0, 1], got {self.p_prior_embeds!r}")
        if self.p_prior_embeds and self.kind == "inpaint":
            raise ValueError("p_prior_embeds is for text2img and controlnet decoders; inpainting has p_moved_embeds")
        if not 0 <= self.low_noise_fraction <= 1:
            raise ValueError(f"low_noise_fraction must be in [0, 1], got {self.low_noise_fraction!r}")
        if not self.low_noise_max >= 1:
            raise ValueError(f"low_noise_max must be a timestep count >= 1, got {self.low_noise_max!r}")
        # clamp(snr, floor, gamma) with floor > gamma would weigh every step by gamma: plain loss, silently.
        if self.snr_gamma is not None and not self.snr_gamma > 0:
            raise ValueError(f"snr_gamma must be positive or None (plain loss), got {self.snr_gamma!r}")
        if self.snr_floor is not None and (self.snr_gamma is None or not 0 < self.snr_floor <= self.snr_gamma):
            raise ValueError(f"snr_floor must be positive and at most snr_gamma ({self.snr_gamma}), "
                             f"got {self.snr_floor!r}")


def background_weights(captions: list[str], balance: float) -> torch.Tensor:
    """Sampling weights of `captions` that give each named background (white when none) a share between its
    share of the data (`balance` 0) and an equal one (`balance` 1); they sum to 1."""
    names = [named_background(c) for c in captions]
    counts = Counter(names)
    uniform = torch.full((len(names),), 1.0 / len(names), dtype=torch.float64)
    even = torch.tensor([1.0 / (len(counts) * counts[n]) for n in names], dtype=torch.float64)
    return ((1 - balance) * uniform + balance * even).float()


def object_weighted_error(err: torch.Tensor, depth: torch.Tensor, weight: float) -> torch.Tensor:
    """Per-sample mean of `err` `(B, C, h, w)` with each latent cell weighted `1 + weight * coverage`, where
    coverage is the share of the cell's pixels that objects cover (`depth` `(B, 1, H, W)` above 0), normalised
    by the mean weight so that an error equal everywhere keeps its value."""
    cover = F.adaptive_avg_pool2d((depth > 0).float(), err.shape[-2:])
    w = 1 + weight * cover
    return (err * w).mean(dim=(1, 2, 3)) / w.mean(dim=(1, 2, 3))


def snr_weights(snr: torch.Tensor, gamma: float, floor: float | None = None, *, v_pred: bool) -> torch.Tensor:
    """Per-sample loss weights that give the error in the predicted clean latents the weight
    `clamp(snr, floor, gamma)` (min-SNR-gamma; with `floor`, truncated below too).

    The epsilon loss already weighs that error by `snr`, the v loss by `snr + 1`; these weights replace that.
    """
    return torch.clamp(snr, min=floor, max=gamma) / (snr + 1 if v_pred else snr)


def check_unet_kind(unet, kind: str, latent_channels: int) -> None:
    """Raises `ValueError` when `unet` does not have the inputs `kind` needs."""
    if kind not in KINDS:
        raise ValueError(f"decoder kind must be one of {', '.join(KINDS)}, got {kind!r}")
    c = unet.config
    want = {"text2img": latent_channels, "inpaint": 2 * latent_channels + 1, "controlnet": latent_channels + 4}[kind]
    if c.in_channels != want:
        raise ValueError(f"a {kind} UNet takes {want} input channels, this one takes {c.in_channels}")
    hint = c.addition_embed_type == "image_hint"
    if hint != (kind == "controlnet"):
        raise ValueError(f"a {kind} UNet needs addition_embed_type "
                         f"{'image_hint' if kind == 'controlnet' else 'image'}, got {c.addition_embed_type!r}")


def train_decoder(unet, movq, image_encoder, image_processor, noise_scheduler, pool: ImagePool, cfg: DecoderConfig,
                  out_dir: str | Path, *, latents: torch.Tensor | None = None,
                  image_embeds: torch.Tensor | None = None, prior_embeds: torch.Tensor | None = None) -> LoopResult:
    """Trains a Kandinsky 2.2 decoder UNet to predict the noise on MoVQ latents given the CLIP image embedding.

    Matches `KandinskyV22Pipeline` and its inpaint / ControlNet variants: latents are
    `movq.encode(image).latents` of images in [-1, 1], the UNet gets
    `added_cond_kwargs={"image_embeds": ...}` (plus `"hint"`, the depth map as 3 channels in [0, 1], for
    the ControlNet) and its first `C` output channels are the prediction the noise scheduler's
    `prediction_type` names (epsilon or v). The inpaint UNet's
    input is `[noisy latents, latents * keep, keep]` with the pipeline's own mask preparation.
    As in diffusers' `train_text_to_image_decoder.py`, MoVQ and the image tower are frozen.

    Args:
        unet (`UNet2DConditionModel`): trained in place.
        movq (`VQModel`): frozen autoencoder.
        image_encoder (`CLIPVisionModelWithProjection`), image_processor: frozen image tower.
        noise_scheduler: the decoder's training schedule (`DDPMScheduler`; its `prediction_type`, epsilon or
            v_prediction, is the training target, so the pipelines sample it with the same config).
        pool (`ImagePool`): training images (with `depth` for the ControlNet).
        cfg (`DecoderConfig`): settings.
        out_dir (`str` or `Path`): checkpoints and logs.
        latents, image_embeds (`torch.Tensor`, *optional*): precomputed for the pool, to share between stages.
        prior_embeds (`torch.Tensor`, *optional*): the prior's embedding of each pool caption
            (`pintor.training.prior.sample_prior_embeddings`); needed when `cfg.p_prior_embeds` > 0.
    """
    device = check_device(cfg.device)
    if cfg.object_weight and pool.depth is None:
        raise ValueError(f"object_weight {cfg.object_weight:g} needs the pool's depth maps (where the objects are); "
                         "this pool has none (an image folder's metadata.jsonl needs a 'depth_file' column)")
    torch.manual_seed(cfg.seed)
    c = movq.config.latent_channels
    check_unet_kind(unet, cfg.kind, c)
    if cfg.kind == "controlnet" and pool.depth is None:
        raise ValueError("controlnet training needs depth maps; the image folder's metadata.jsonl needs a "
                         "'depth_file' (or 'conditioning_image') column")
    if cfg.low_noise_max > len(noise_scheduler.alphas_cumprod):
        raise ValueError(f"low_noise_max is {cfg.low_noise_max}, but the schedule has "
                         f"{len(noise_scheduler.alphas_cumprod)} timesteps")
    if cfg.p_prior_embeds and (prior_embeds is None or len(prior_embeds) != len(pool)):
        got = "none" if prior_embeds is None else len(prior_embeds)
        raise ValueError(f"p_prior_embeds is {cfg.p_prior_embeds} but got {got} prior embeddings for {len(pool)} images")
    moved = cfg.kind == "inpaint" and cfg.p_moved_embeds > 0
    cache = Path(out_dir) / "cache"  # what --resume reads back instead of encoding the pool again
    pool_key = fingerprint(pool.images) if latents is None or image_embeds is None or moved else None
    if latents is None:
        latents = load_or_compute(
            cache / "latents.safetensors", fingerprint("latents", pool_key, movq, str(device)),
            lambda: {"latents": encode_latents(frozen(movq, device), pool, device=device, progress=cfg.progress)},
        )["latents"]
    pixels = None

    def clip_pixels():  # the CLIP-sized pixels serve both embeddings: resize the pool once, and only if needed
        nonlocal pixels
        if pixels is None:
            pixels = clip_resize(pool, image_processor, progress=cfg.progress)
        return pixels

    def embeds(name: str, flip: bool) -> torch.Tensor:
        key = fingerprint(name, pool_key, image_encoder, processor_settings(image_processor), str(device))
        return load_or_compute(cache / f"{name}.safetensors", key, lambda: {name: image_embeddings(
            image_encoder, clip_pixels().flip(-2, -1) if flip else clip_pixels(), image_processor, device=device,
            progress=cfg.progress)})[name]

    if image_embeds is None:
        image_embeds = embeds("image_embeds", flip=False)
    if len(latents) != len(pool) or len(image_embeds) != len(pool):
        raise ValueError(f"got {len(latents)} latents and {len(image_embeds)} embeddings for {len(pool)} images")
    moved_embeds = embeds("moved_embeds", flip=True) if moved else None
    negative = zero_image_embedding(frozen(image_encoder, device), device=device)
    unet = unet.to(device)
    alphas = noise_scheduler.alphas_cumprod.float()
    prediction = noise_scheduler.config.prediction_type
    if prediction not in ("epsilon", "v_prediction"):
        raise ValueError(f"the decoder trains epsilon or v_prediction, the scheduler says {prediction!r}")
    v_pred = prediction == "v_prediction"
    n_t = len(alphas)
    res = pool.resolution

    draw = background_weights(pool.captions, cfg.background_balance) if cfg.background_balance else None

    def step(i: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
        b = cfg.batch_size
        if draw is None:
            idx = torch.randint(len(pool), (b,), generator=gen)
        else:
            idx = torch.multinomial(draw, b, replacement=True, generator=gen)
        x0 = latents[idx]
        noise = torch.randn(x0.shape, generator=gen)
        t = torch.randint(n_t, (b,), generator=gen)
        if cfg.low_noise_fraction:
            low = torch.rand(b, generator=gen) < cfg.low_noise_fraction
            t = torch.where(low, torch.randint(cfg.low_noise_max, (b,), generator=gen), t)
        drop = torch.rand(b, generator=gen) < cfg.drop_image_embeds
        emb = image_embeds[idx]
        if moved_embeds is not None:
            emb = torch.where((torch.rand(b, generator=gen) < cfg.p_moved_embeds)[:, None], moved_embeds[idx], emb)
        if cfg.p_prior_embeds:
            emb = torch.where((torch.rand(b, generator=gen) < cfg.p_prior_embeds)[:, None], prior_embeds[idx], emb)
        emb = torch.where(drop[:, None], negative, emb)
        a = alphas[t][:, None, None, None]
        xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
        cond = {"image_embeds": emb.to(device)}
        if cfg.kind == "inpaint":
            repaint = random_repaint_masks(pool.boxes[idx] if pool.boxes is not None else None, b, res, gen,
                                           p_object=cfg.p_object_mask, p_full=cfg.p_full_mask)
            masked, keep = inpaint_inputs(x0, repaint)
            xt = torch.cat([xt, masked, keep], dim=1)
        elif cfg.kind == "controlnet":
            cond["hint"] = (pool.depth[idx].float() / 255.0).expand(-1, 3, -1, -1).to(device)
        pred = unet(xt.to(device), t.to(device), encoder_hidden_states=None, added_cond_kwargs=cond).sample[:, :c]
        target = (a.sqrt() * noise - (1 - a).sqrt() * x0) if v_pred else noise
        err = F.mse_loss(pred, target.to(device), reduction="none")
        if cfg.object_weight:
            err = object_weighted_error(err, pool.depth[idx].to(device), cfg.object_weight)
        else:
            err = err.mean(dim=(1, 2, 3))
        if cfg.snr_gamma:
            err = err * snr_weights((a / (1 - a)).flatten().to(device), cfg.snr_gamma, cfg.snr_floor, v_pred=v_pred)
        mse = F.mse_loss(pred.detach(), target.to(device))
        return {"loss": err.mean(), "mse": mse}

    return train_loop(unet, step, cfg, out_dir, name=cfg.kind if cfg.kind != "text2img" else "decoder")
