"""Kandinsky 2.x: a prior turns text (or mixed images and texts) into a CLIP image embedding, a decoder paints it.

Every mode is a diffusers pipeline built over one set of loaded components: one prior (with its CLIP
text and image towers), one MoVQ, one decoder scheduler config. Mode-specific UNets (inpainting,
depth ControlNet) load on first use and join the shared set.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path

from PIL import Image

from pintor.backends.common import (
    RunControl,
    attach_progress,
    dtype_kwargs,
    from_pretrained,
    generators,
)
from pintor.errors import ModeNotSupportedError, PintorError
from pintor.guidance import autoguidance
from pintor.images import is_image_item, load_image
from pintor.request import GenerationRequest
from pintor.schedulers import scheduler_name


@dataclass(frozen=True)
class KandinskyFamily:
    """The diffusers classes of one Kandinsky generation; `None` where it has no such pipeline."""

    prior: str
    text2img: str
    img2img: str
    inpaint: str
    control: str | None
    decoder_role: str
    decoder_takes_prompt: bool  # 2.1's decoder also reads the text through its own text encoder


FAMILIES = {
    "kandinsky-2.2": KandinskyFamily("KandinskyV22PriorPipeline", "KandinskyV22Pipeline", "KandinskyV22Img2ImgPipeline",
                                     "KandinskyV22InpaintPipeline", "KandinskyV22ControlnetPipeline", "decoder", False),
    "kandinsky-2.1": KandinskyFamily("KandinskyPriorPipeline", "KandinskyPipeline", "KandinskyImg2ImgPipeline",
                                     "KandinskyInpaintPipeline", None, "main", True),
}

# Mode -> the source role whose UNet it needs (None: the base decoder).
_MODE_ROLE = {"generate": None, "mix": None, "img2img": None, "variations": None, "inpaint": "inpaint",
              "control": "controlnet-depth"}


class KandinskyBackend:
    """Runs Kandinsky 2.2 (and 2.1) requests on shared components.

    Args:
        name (`str`): the model name, for messages and metadata.
        family (`str`): "kandinsky-2.2" or "kandinsky-2.1".
        sources (`dict[str, str]`): role -> hub id or folder (`prior`, `decoder`/`main`, `inpaint`, `controlnet-depth`).
        modes (`tuple[str, ...]`): the modes this model offers.
        device (`str`), dtype (`torch.dtype`): where and how to run.
        low_vram, lowest_vram (`bool`): model or sequential CPU offload on accelerators.
        depth_estimator (`str`): hub id or folder of the depth-estimation model for `estimate_depth`.
        optimizations (`pintor.optim.Optimizations`, *optional*): speed and memory options; the device's
            defaults when `None`.
    """

    def __init__(self, name, family, sources, modes, device, dtype, *, low_vram=False, lowest_vram=False,
                 depth_estimator=None, optimizations=None):
        import diffusers

        from pintor import optim

        self.name, self.family, self.sources, self.modes = name, FAMILIES[family], dict(sources), tuple(modes)
        self.device, self.dtype = device, dtype
        self.low_vram, self.lowest_vram = low_vram, lowest_vram
        self.depth_estimator_source = depth_estimator
        self.opts = (optimizations or optim.default_optimizations(device)).resolved(device, low_vram, lowest_vram)
        self.cache = optim.EmbeddingCache(self.opts.cache_size) if self.opts.embed_cache else None
        self._zero_embed = None
        self._diffusers = diffusers
        self._pipes: dict[str, object] = {}
        self._unets: dict[str | None, object] = {}
        kw = dtype_kwargs(dtype)
        if self.opts.lazy_image_encoder:
            kw_prior = dict(kw, image_encoder=None)  # loaded on first use by a mode that reads images
        else:
            kw_prior = kw
        self.prior = from_pretrained(getattr(diffusers, self.family.prior), self.sources["prior"], "prior", name,
                                     **kw_prior)
        decoder_cls = getattr(diffusers, self.family.text2img)
        decoder_source = self.sources.get(self.family.decoder_role) or self.sources["decoder"]
        self.decoder = from_pretrained(decoder_cls, decoder_source, "decoder", name, **kw)
        self._unets[None] = self.decoder.unet
        self._base_scheduler_config = dict(self.decoder.scheduler.config)
        self.default_scheduler = scheduler_name(self.decoder.scheduler)
        if self.opts.prior_scheduler == "ddim":
            self.prior.scheduler = optim.prior_ddim_scheduler(self.prior.scheduler.config)
        # Its output for a zero image is a constant; stock recomputes it (1.8B parameters) on every call.
        self._stock_zero_embed = self.prior.get_zero_embed
        self.prior.get_zero_embed = self._get_zero_embed
        for role, module in (("prior", self.prior.prior), ("text_encoder", self.prior.text_encoder),
                             ("image_encoder", self.prior.image_encoder), ("unet", self.decoder.unet),
                             ("movq", self.decoder.movq), ("text_encoder", getattr(self.decoder, "text_encoder", None))):
            optim.optimize_module(module, self.opts, device, role)
        for pipe in (self.prior, self.decoder):
            self._place(pipe)
        self._pipes["prior"] = self.prior
        self._pipes["text2img"] = self.decoder
        self._depth = None

    # -- components ---------------------------------------------------------------------------------------
    @property
    def components(self) -> dict[str, object]:
        """Every loaded module, by name; each is loaded once and shared by all the pipelines that use it."""
        # A component not loaded (the lazily loaded image encoder) is absent, not None.
        comps = {f"prior.{k}": v for k, v in self.prior.components.items() if v is not None}
        comps.update({k: v for k, v in self.decoder.components.items() if k != "scheduler" and v is not None})
        for role, unet in self._unets.items():
            if role is not None:
                comps[f"{role}.unet"] = unet
        if self._depth is not None:
            comps["depth_estimator"] = self._depth[0]
        return comps

    def _place(self, pipe):
        from pintor.optim import place

        place(pipe, self.device, self.low_vram, self.lowest_vram, self.opts)

    def _ensure_image_encoder(self):
        """Loads the CLIP image encoder when it was left out at load time (`lazy_image_encoder`)."""
        if self.prior.image_encoder is not None:
            return self.prior.image_encoder
        from transformers import CLIPVisionModelWithProjection

        from pintor import optim

        enc = from_pretrained(CLIPVisionModelWithProjection, self.sources["prior"], "image encoder", self.name,
                              subfolder="image_encoder", **dtype_kwargs(self.dtype))
        optim.optimize_module(enc, self.opts, self.device, "image_encoder")
        self.prior.register_modules(image_encoder=enc)
        self._place(self.prior)
        return enc

    def _get_zero_embed(self, batch_size=1, device=None):
        """The prior pipeline's `get_zero_embed`, computed once per backend when the embedding cache is on."""
        if self.cache is None and self.prior.image_encoder is not None:
            return self._stock_zero_embed(batch_size, device=device)
        if self._zero_embed is None:
            if self.prior.image_encoder is not None:
                self._zero_embed = self._stock_zero_embed(1, device=device)
            else:
                self._zero_embed = self._zero_embed_without_encoder()
        return self._zero_embed.to(device=device or self._exec_device(self.prior)).repeat(batch_size, 1)

    def _zero_embed_without_encoder(self):
        # Lazy image encoder: load it for this one constant and let it go, so text to image never keeps its
        # 1.8B parameters. On an accelerator its layers stream through one at a time (sequential offload), so
        # even this moment stays within the memory modes' budgets, with the stock pipeline's dtype and device.
        import torch
        from transformers import CLIPVisionModelWithProjection

        enc = from_pretrained(CLIPVisionModelWithProjection, self.sources["prior"], "image encoder", self.name,
                              subfolder="image_encoder", **dtype_kwargs(self.dtype))
        device = str(self._exec_device(self.prior))
        if device != "cpu":
            from accelerate import cpu_offload

            cpu_offload(enc, execution_device=device)
        size = enc.config.image_size
        with torch.inference_mode():
            emb = enc(torch.zeros(1, 3, size, size, device=device, dtype=self.dtype))["image_embeds"]
        del enc
        return emb

    def _unet_for(self, mode: str):
        role = _MODE_ROLE[mode]
        if role not in self._unets:
            source = self.sources.get(role)
            if source is None:
                raise ModeNotSupportedError(f"{self.name} has no {mode} model: its modes are {', '.join(self.modes)}")
            unet = from_pretrained(self._diffusers.UNet2DConditionModel, source, f"{role} UNet", self.name,
                                   subfolder="unet", **dtype_kwargs(self.dtype))
            from pintor.optim import optimize_module

            optimize_module(unet, self.opts, self.device, "unet")
            if self.device != "cpu" and not (self.low_vram or self.lowest_vram):
                unet.to(self.device)
            self._unets[role] = unet
        return self._unets[role]

    @property
    def autoguidance_modes(self) -> tuple[str, ...]:
        """The modes `autoguidance_scale` applies to: those of the base decoder, when the model has a weak
        decoder to guide it (an `autoguide/unet` folder)."""
        if "autoguide" not in self.sources:
            return ()
        return tuple(m for m in self.modes if _MODE_ROLE[m] is None)

    def _weak_unet(self):
        """The autoguidance model, loaded on first use and kept beside the other UNets."""
        if "autoguide" not in self._unets:
            unet = from_pretrained(self._diffusers.UNet2DConditionModel, self.sources["autoguide"], "autoguide UNet",
                                   self.name, subfolder="unet", **dtype_kwargs(self.dtype))
            # It is small, and the hook calls it beside whichever device the offloaded decoder runs on.
            self._unets["autoguide"] = unet.to(self.device).eval()
        return self._unets["autoguide"]

    def pipeline(self, mode: str):
        """The decoder pipeline of `mode`, built once from the shared components."""
        if mode not in self.modes:
            raise ModeNotSupportedError(f"{self.name} does not offer {mode}: its modes are {', '.join(self.modes)}")
        key = {"img2img": "img2img", "inpaint": "inpaint", "control": "control"}.get(mode, "text2img")
        if key not in self._pipes:
            cls_name = {"img2img": self.family.img2img, "inpaint": self.family.inpaint, "control": self.family.control}[key]
            comps = {k: v for k, v in self.decoder.components.items()}
            comps["unet"] = self._unet_for(mode)
            pipe = getattr(self._diffusers, cls_name)(**comps)
            self._place(pipe)
            self._pipes[key] = pipe
        return self._pipes[key]

    # -- running ------------------------------------------------------------------------------------------
    def run(self, req: GenerationRequest, control: RunControl):
        """Runs a validated request with every setting filled in; returns a list of PIL images."""
        return self.run_many([req], control)[0]

    def run_many(self, reqs: list[GenerationRequest], control: RunControl) -> list[list]:
        """Runs requests in one prior call and one decoder call; returns each request's images.

        Several requests must be text to image with the same settings (see `batch_key`); their prompts and
        seeds may differ, and each image gets the generator it would get alone.
        """
        import torch

        from pintor.optim import reset_step_state
        from pintor.schedulers import make_scheduler

        keys = {batch_key(r) for r in reqs}
        if len(reqs) > 1 and (len(keys) != 1 or None in keys):
            raise PintorError("run_many needs text-to-image requests that share every setting but prompt and seed")
        wanted = reqs
        # Candidate j of image i is drawn with seed + i + j * n: candidate 0 gets the noise `candidates=1` gets.
        reqs = [replace(r, n=r.n * (r.candidates or 1)) for r in reqs]
        req = reqs[0]
        pipe = self.pipeline(req.mode)
        gens = [g for r in reqs for g in generators(r.seed, r.n)]
        total = len(gens)
        # These pipelines never call scale_model_input (see make_scheduler).
        scheduler = make_scheduler(req.scheduler, self._base_scheduler_config, scales_input=False)
        with torch.inference_mode():
            embeds, negative = self._embeddings(reqs, gens, control)
            pipe.scheduler = scheduler
            attach_progress(pipe, "decoder", control)
            reset_step_state(pipe.unet)
            kwargs = dict(image_embeds=embeds, negative_image_embeds=negative, num_inference_steps=req.steps,
                          guidance_scale=req.guidance_scale, height=req.height, width=req.width, generator=gens,
                          output_type="pil")
            if self.family.decoder_takes_prompt:
                kwargs.update(prompt=[r.prompt or "" for r in reqs for _ in range(r.n)],
                              negative_prompt=[req.negative_prompt] * total)
            if req.mode == "img2img":
                init = load_image(req.image, "image").resize((req.width, req.height), Image.LANCZOS)
                kwargs.update(image=[init] * req.n, strength=req.strength)
            elif req.mode == "inpaint":
                init, mask = self._inpaint_inputs(req)
                kwargs.update(image=[init] * req.n, mask_image=[mask] * req.n)
            elif req.mode == "control":
                kwargs["hint"] = self._hint(req).repeat(req.n, 1, 1, 1)
            # `Painter.prepare` has refused autoguidance wherever `autoguidance_modes` lacks the mode.
            guided = (autoguidance(pipe.unet, self._weak_unet(), req.autoguidance_scale, req.guidance_scale)
                      if req.autoguidance_scale else nullcontext())
            with guided:
                images = pipe(**kwargs).images
        if req.mode == "inpaint":
            images = [composite_inpaint(init, out, mask) for out in images]
        out, i = [], 0
        for r, w in zip(reqs, wanted, strict=True):
            block = images[i:i + r.n]
            if r.n > w.n:
                block = self._best_candidates(block, embeds[i:i + r.n] if len(embeds) > 1 else embeds, w)
            out.append(block)
            i += r.n
        return out

    def _best_candidates(self, images: list, embeds, req: GenerationRequest) -> list:
        """Keeps, for each of `req.n` images, the candidate whose CLIP image embedding is nearest (cosine) the
        embedding its decoder call was given; records the pick in `image.info["pintor_candidate"]`."""
        import torch

        enc = self._ensure_image_encoder()
        device = self._exec_device(self.prior)
        with torch.inference_mode():
            pixels = self.prior.image_processor(images, return_tensors="pt").pixel_values
            got = enc(pixels.to(dtype=enc.dtype, device=device))["image_embeds"].float()
            target = embeds.to(got.device).float().expand_as(got)
            sims = torch.nn.functional.cosine_similarity(got, target, dim=-1).cpu()
        picks = best_candidate_indices(sims, req.n, req.candidates)
        kept = []
        for k in picks:
            img = images[k]
            img.info["pintor_candidate"] = {"seed": req.seed + k, "index": k // req.n, "of": req.candidates,
                                            "similarity": round(float(sims[k]), 4)}
            kept.append(img)
        return kept

    def _embeddings(self, reqs: list[GenerationRequest], gens, control: RunControl):
        """CLIP image embeddings for the decoder: from the prior (text), from mixing, or from the image itself."""
        req = reqs[0]
        attach_progress(self.prior, "prior", control)
        negative = req.negative_prompt or None
        if negative is not None:
            # With a negative prompt the prior runs positive and negative texts as one batch of 2n latents, so
            # it needs 2n generators; the second n are seeded like the first, image by image.
            gens = gens + [g for r in reqs for g in generators(r.seed, r.n)]
        if req.mode in ("mix", "variations"):
            items = list(req.items) if req.mode == "mix" else [req.image]
            weights = list(req.weights) if req.mode == "mix" else [1.0]
            items = [load_image(it, "mix item") if is_image_item(it) else it for it in items]
            return self._interpolate(req, items, weights, gens, negative)
        prompt = req.prompt if len(reqs) == 1 else [r.prompt for r in reqs]
        return self._prior(prompt, negative, req.n, gens, req.prior_steps, req.prior_guidance_scale)

    def _prior(self, prompt, negative, n, gens, steps, guidance):
        """One prior pipeline call, through the embedding cache when it is on.

        The key holds the generators' states, and a hit leaves them where the run would have: the decoder then
        draws exactly the noise it would draw without the cache.
        """
        def call():
            out = self.prior(prompt, negative_prompt=negative, num_images_per_prompt=n, generator=gens,
                             num_inference_steps=steps, guidance_scale=guidance)
            return out.image_embeds, out.negative_image_embeds

        if self.cache is None:
            return call()
        from pintor.optim import generator_digest, scheduler_digest

        key = ("prior", repr(prompt), negative, n, steps, guidance, scheduler_digest(self.prior.scheduler),
               generator_digest(gens), str(self.dtype))
        hit = self.cache.get(key)
        if hit is not None:
            embeds, neg, states = hit
            for g, st in zip(gens, states, strict=True):
                g.set_state(st)
            return embeds, neg
        embeds, neg = call()
        self.cache.put(key, (embeds, neg, [g.get_state() for g in gens]))
        return embeds, neg

    def _image_embed(self, image, device):
        """CLIP image embedding of one mix item, as the prior pipeline's `interpolate` computes it (cached by pixels)."""
        key = None
        if self.cache is not None:
            from pintor.optim import pixel_digest

            key = ("image", pixel_digest(image), str(self.dtype))
            hit = self.cache.get(key)
            if hit is not None:
                return hit
        enc = self._ensure_image_encoder()
        pixels = self.prior.image_processor(image, return_tensors="pt").pixel_values[0].unsqueeze(0)
        emb = enc(pixels.to(dtype=enc.dtype, device=device))["image_embeds"]
        if key is not None:
            self.cache.put(key, emb)
        return emb

    def _interpolate(self, req, items, weights, gens, negative):
        """The prior pipelines' `interpolate` (2.2 and 2.1 differ in how they stack), with cached parts."""
        import torch

        v22 = self.family.prior == "KandinskyV22PriorPipeline"
        n, steps, guidance = req.n, req.prior_steps, req.prior_guidance_scale
        device = self._exec_device(self.prior)
        parts = []
        for cond, weight in zip(items, weights, strict=True):
            if isinstance(cond, str):
                emb = self._prior(cond, negative, n, gens, steps, guidance)[0]
                emb = emb.unsqueeze(0) if v22 else emb
            else:
                emb = self._image_embed(cond, device)
                emb = emb.repeat(n, 1).unsqueeze(0) if v22 else emb
            parts.append(emb * weight)
        image_emb = torch.cat(parts).sum(dim=0) if v22 else torch.cat(parts).sum(dim=0, keepdim=True)
        zero_image, zero_negative = self._prior(req.negative_prompt, negative, n, gens, steps, guidance)
        return image_emb, (zero_negative if req.negative_prompt == "" else zero_image)

    def _exec_device(self, pipe):
        return getattr(pipe, "_execution_device", None) or self.device

    def _inpaint_inputs(self, req):
        init = load_image(req.image, "image").resize((req.width, req.height), Image.LANCZOS)
        mask = load_image(req.mask, "mask", mode="L").resize((req.width, req.height), Image.NEAREST)
        return init, mask

    def _hint(self, req):
        import numpy as np
        import torch

        if req.estimate_depth:
            depth = self.estimate_depth(req.hint)
        else:
            depth = load_image(req.hint, "depth map", mode="L")
        depth = depth.resize((req.width, req.height), Image.BICUBIC)
        arr = np.asarray(depth, dtype=np.float32) / 255.0
        hint = torch.from_numpy(np.repeat(arr[None, None], 3, axis=1))
        return hint.to(device=self._exec_device(self._pipes.get("control", self.decoder)), dtype=self.dtype)

    def estimate_depth(self, image):
        """A depth map (white is near) of a photo, from the transformers depth-estimation model."""
        from pintor.depth import DepthEstimator

        if self._depth is None:
            if not self.depth_estimator_source:
                raise PintorError("estimate_depth needs a depth-estimation model: none is configured")
            est = DepthEstimator(self.depth_estimator_source, device=self.device)
            self._depth = (est.model, est)
        return self._depth[1](load_image(image, "photo"))


def best_candidate_indices(scores, n: int, candidates: int) -> list[int]:
    """For each of `n` images drawn `candidates` times (candidate j of image i at index `i + j * n` of `scores`),
    the index of its highest-scoring candidate; ties keep the earliest."""
    if len(scores) != n * candidates:
        raise ValueError(f"expected {n} x {candidates} = {n * candidates} scores, got {len(scores)}")
    return [max(range(i, n * candidates, n), key=lambda k: (float(scores[k]), -k)) for i in range(n)]


def batch_key(req: GenerationRequest):
    """Requests with equal keys can share one pipeline call (`KandinskyBackend.run_many`); `None`: never batched."""
    if req.mode != "generate":
        return None
    return (req.negative_prompt, req.n, req.steps, req.prior_steps, req.guidance_scale, req.prior_guidance_scale,
            req.width, req.height, req.scheduler, req.candidates, req.autoguidance_scale)


def composite_inpaint(original, generated, mask, feather: int = 2):
    """Keeps every pixel outside the mask exactly; blends only across a thin feathered band inside it.

    Args:
        original, generated (`PIL.Image.Image`): same-size RGB images.
        mask (`PIL.Image.Image`): L mode, white (>= 128) where the image was repainted.
        feather (`int`): width in pixels of the blend band, inside the mask edge.
    """
    import numpy as np
    from PIL import ImageFilter

    if generated.size != original.size:
        generated = generated.resize(original.size, Image.LANCZOS)
    inside = (np.asarray(mask.convert("L")) >= 128).astype(np.float32)
    soft = np.asarray(Image.fromarray((inside * 255).astype(np.uint8)).filter(ImageFilter.BoxBlur(feather)),
                      dtype=np.float32) / 255.0
    # Multiplying by `inside` pins the weight to exactly 0 outside the mask, so those pixels are untouched.
    alpha = (soft * inside)[..., None]
    orig = np.asarray(original.convert("RGB"), dtype=np.float32)
    gen = np.asarray(generated.convert("RGB"), dtype=np.float32)
    out = orig * (1 - alpha) + gen * alpha
    out = np.where(alpha > 0, out, orig)
    return Image.fromarray(np.clip(out.round(), 0, 255).astype(np.uint8))


def local_sources(path: Path) -> tuple[dict[str, str], tuple[str, ...]]:
    """Role sources and available modes of a local Kandinsky 2.2 folder (see `pintor.architectures`)."""
    from pintor.registry import KANDINSKY22_MODES

    sources = {}
    for role in ("prior", "decoder", "inpaint", "controlnet-depth", "autoguide"):
        if (path / role).is_dir():
            sources[role] = str(path / role)
    missing = [r for r in ("prior", "decoder") if r not in sources]
    if missing:
        raise PintorError(f"{path} is not a Kandinsky 2.2 model folder: it lacks {' and '.join(missing)}/")
    modes = tuple(m for m in KANDINSKY22_MODES
                  if _MODE_ROLE[m] is None or _MODE_ROLE[m] in sources)
    return sources, modes

