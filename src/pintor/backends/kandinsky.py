"""Kandinsky 2.x: a prior turns text (or mixed images and texts) into a CLIP image embedding, a decoder paints it.

Every mode is a diffusers pipeline built over one set of loaded components: one prior (with its CLIP
text and image towers), one MoVQ, one decoder scheduler config. Mode-specific UNets (inpainting,
depth ControlNet) load on first use and join the shared set.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from pintor.backends.common import (
    RunControl,
    apply_memory_mode,
    attach_progress,
    dtype_kwargs,
    from_pretrained,
    generators,
)
from pintor.errors import ModeNotSupportedError, PintorError
from pintor.images import is_image_item, load_image
from pintor.request import GenerationRequest


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
    """

    def __init__(self, name, family, sources, modes, device, dtype, *, low_vram=False, lowest_vram=False,
                 depth_estimator=None):
        import diffusers

        self.name, self.family, self.sources, self.modes = name, FAMILIES[family], dict(sources), tuple(modes)
        self.device, self.dtype = device, dtype
        self.low_vram, self.lowest_vram = low_vram, lowest_vram
        self.depth_estimator_source = depth_estimator
        self._diffusers = diffusers
        self._pipes: dict[str, object] = {}
        self._unets: dict[str | None, object] = {}
        kw = dtype_kwargs(dtype)
        self.prior = from_pretrained(getattr(diffusers, self.family.prior), self.sources["prior"], "prior", name, **kw)
        decoder_cls = getattr(diffusers, self.family.text2img)
        self.decoder = from_pretrained(decoder_cls, self.sources[self.family.decoder_role], "decoder", name, **kw)
        self._unets[None] = self.decoder.unet
        self._base_scheduler_config = dict(self.decoder.scheduler.config)
        for pipe in (self.prior, self.decoder):
            self._place(pipe)
        self._pipes["prior"] = self.prior
        self._pipes["text2img"] = self.decoder
        self._depth = None

    # -- components ---------------------------------------------------------------------------------------
    @property
    def components(self) -> dict[str, object]:
        """Every loaded module, by name; each is loaded once and shared by all the pipelines that use it."""
        comps = {f"prior.{k}": v for k, v in self.prior.components.items()}
        comps.update({k: v for k, v in self.decoder.components.items() if k != "scheduler"})
        for role, unet in self._unets.items():
            if role is not None:
                comps[f"{role}.unet"] = unet
        if self._depth is not None:
            comps["depth_estimator"] = self._depth[0]
        return comps

    def _place(self, pipe):
        if self.device != "cpu" and not (self.low_vram or self.lowest_vram):
            pipe.to(self.device)
        apply_memory_mode(pipe, self.device, self.low_vram, self.lowest_vram)

    def _unet_for(self, mode: str):
        role = _MODE_ROLE[mode]
        if role not in self._unets:
            source = self.sources.get(role)
            if source is None:
                raise ModeNotSupportedError(f"{self.name} has no {mode} model: its modes are {', '.join(self.modes)}")
            unet = from_pretrained(self._diffusers.UNet2DConditionModel, source, f"{role} UNet", self.name,
                                   subfolder="unet", **dtype_kwargs(self.dtype))
            if self.device != "cpu" and not (self.low_vram or self.lowest_vram):
                unet.to(self.device)
            self._unets[role] = unet
        return self._unets[role]

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
        import torch

        from pintor.schedulers import make_scheduler

        pipe = self.pipeline(req.mode)
        gens = generators(req.seed, req.n)
        with torch.inference_mode():
            embeds, negative = self._embeddings(req, gens, control)
            pipe.scheduler = make_scheduler(req.scheduler, self._base_scheduler_config)
            attach_progress(pipe, "decoder", control)
            kwargs = dict(image_embeds=embeds, negative_image_embeds=negative, num_inference_steps=req.steps,
                          guidance_scale=req.guidance_scale, height=req.height, width=req.width, generator=gens,
                          output_type="pil")
            if self.family.decoder_takes_prompt:
                kwargs.update(prompt=[req.prompt or ""] * req.n, negative_prompt=[req.negative_prompt] * req.n)
            if req.mode == "img2img":
                init = load_image(req.image, "image").resize((req.width, req.height), Image.LANCZOS)
                kwargs.update(image=[init] * req.n, strength=req.strength)
            elif req.mode == "inpaint":
                init, mask = self._inpaint_inputs(req)
                kwargs.update(image=[init] * req.n, mask_image=[mask] * req.n)
            elif req.mode == "control":
                kwargs["hint"] = self._hint(req).repeat(req.n, 1, 1, 1)
            images = pipe(**kwargs).images
        if req.mode == "inpaint":
            images = [composite_inpaint(init, out, mask) for out in images]
        return images

    def _embeddings(self, req: GenerationRequest, gens, control: RunControl):
        """CLIP image embeddings for the decoder: from the prior (text), from mixing, or from the image itself."""
        attach_progress(self.prior, "prior", control)
        common = dict(num_inference_steps=req.prior_steps, generator=gens, guidance_scale=req.prior_guidance_scale)
        negative = req.negative_prompt or None
        if req.mode in ("mix", "variations"):
            items = list(req.items) if req.mode == "mix" else [req.image]
            weights = list(req.weights) if req.mode == "mix" else [1.0]
            items = [load_image(it, "mix item") if is_image_item(it) else it for it in items]
            out = self.prior.interpolate(items, weights, num_images_per_prompt=req.n,
                                         negative_prior_prompt=negative, negative_prompt=req.negative_prompt,
                                         device=self._exec_device(self.prior), **common)
        else:
            out = self.prior(req.prompt, negative_prompt=negative, num_images_per_prompt=req.n, **common)
        return out.image_embeds, out.negative_image_embeds

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
    for role in ("prior", "decoder", "inpaint", "controlnet-depth"):
        if (path / role).is_dir():
            sources[role] = str(path / role)
    missing = [r for r in ("prior", "decoder") if r not in sources]
    if missing:
        raise PintorError(f"{path} is not a Kandinsky 2.2 model folder: it lacks {' and '.join(missing)}/")
    modes = tuple(m for m in KANDINSKY22_MODES
                  if _MODE_ROLE[m] is None or _MODE_ROLE[m] in sources)
    return sources, modes

