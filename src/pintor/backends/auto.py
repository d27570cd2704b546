"""Single-repository diffusers models (Kandinsky 3, Stable Diffusion 1.5, SDXL) through diffusers' AutoPipelines.

The text-to-image pipeline loads once; img2img and inpainting reuse its components with `from_pipe`
(or, for a dedicated inpainting repository, load only what differs and share the rest).
"""

from __future__ import annotations

from PIL import Image

from pintor.backends.common import (
    RunControl,
    apply_memory_mode,
    attach_progress,
    dtype_kwargs,
    from_pretrained,
    generators,
)
from pintor.backends.kandinsky import composite_inpaint
from pintor.errors import ModeNotSupportedError
from pintor.images import load_image
from pintor.request import GenerationRequest
from pintor.schedulers import scheduler_name

_SHAREABLE = ("text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "vae", "movq")


class AutoBackend:
    """Runs text-to-image, img2img and inpainting for a diffusers pipeline repository or folder.

    Args:
        name (`str`): model name for messages.
        family (`str`): always "diffusers-auto".
        sources (`dict[str, str]`): `main` and optionally `inpaint` (a dedicated inpainting repository).
        modes (`tuple[str, ...]`): the modes this model offers.
        device (`str`), dtype (`torch.dtype`), low_vram, lowest_vram: as for `KandinskyBackend`.
    """

    def __init__(self, name, family, sources, modes, device, dtype, *, low_vram=False, lowest_vram=False,
                 depth_estimator=None):
        import diffusers

        self.name, self.sources, self.modes = name, dict(sources), tuple(modes)
        self.device, self.dtype, self.low_vram, self.lowest_vram = device, dtype, low_vram, lowest_vram
        self._diffusers = diffusers
        self.text2img = from_pretrained(diffusers.AutoPipelineForText2Image, self.sources["main"], "pipeline", name,
                                        **dtype_kwargs(dtype))
        self._place(self.text2img)
        self._base_scheduler_config = dict(self.text2img.scheduler.config)
        self.default_scheduler = scheduler_name(self.text2img.scheduler)
        self._pipes = {"generate": self.text2img}

    @property
    def components(self) -> dict[str, object]:
        comps = {k: v for k, v in self.text2img.components.items() if k != "scheduler" and v is not None}
        inpaint = self._pipes.get("inpaint")
        if inpaint is not None and inpaint.unet is not self.text2img.unet:
            comps["inpaint.unet"] = inpaint.unet
        return comps

    def _place(self, pipe):
        if self.device != "cpu" and not (self.low_vram or self.lowest_vram):
            pipe.to(self.device)
        apply_memory_mode(pipe, self.device, self.low_vram, self.lowest_vram)

    def pipeline(self, mode: str):
        if mode not in self.modes:
            raise ModeNotSupportedError(f"{self.name} does not offer {mode}: its modes are {', '.join(self.modes)}")
        if mode not in self._pipes:
            d = self._diffusers
            if mode == "img2img":
                pipe = d.AutoPipelineForImage2Image.from_pipe(self.text2img)
            elif mode == "inpaint" and "inpaint" in self.sources:
                shared = {k: getattr(self.text2img, k) for k in _SHAREABLE if getattr(self.text2img, k, None) is not None}
                pipe = from_pretrained(d.AutoPipelineForInpainting, self.sources["inpaint"], "inpainting pipeline",
                                       self.name, **dtype_kwargs(self.dtype), **shared)
                self._place(pipe)
            elif mode == "inpaint":
                pipe = d.AutoPipelineForInpainting.from_pipe(self.text2img)
            else:
                raise ModeNotSupportedError(f"{self.name} does not offer {mode}: its modes are {', '.join(self.modes)}")
            self._pipes[mode] = pipe
        return self._pipes[mode]

    def run(self, req: GenerationRequest, control: RunControl):
        import torch

        from pintor.schedulers import make_scheduler

        if (req.candidates or 1) > 1:
            raise ModeNotSupportedError(f"{self.name} cannot pick among candidates: that needs a Kandinsky model's "
                                        f"CLIP image encoder (got candidates={req.candidates}; use 1)")
        pipe = self.pipeline(req.mode)
        if req.scheduler:
            pipe.scheduler = make_scheduler(req.scheduler, self._base_scheduler_config)
        attach_progress(pipe, "unet", control)
        kwargs = dict(prompt=req.prompt, negative_prompt=req.negative_prompt or None, num_inference_steps=req.steps,
                      guidance_scale=req.guidance_scale, num_images_per_prompt=req.n,
                      generator=generators(req.seed, req.n), output_type="pil")
        init = mask = None
        if req.mode in ("img2img", "inpaint"):
            init = load_image(req.image, "image").resize((req.width, req.height), Image.LANCZOS)
            kwargs.update(image=init, strength=req.strength if req.mode == "img2img" else 1.0)
        if req.mode == "inpaint":
            mask = load_image(req.mask, "mask", mode="L").resize((req.width, req.height), Image.NEAREST)
            kwargs["mask_image"] = mask
        if req.mode != "img2img":
            kwargs.update(width=req.width, height=req.height)
        with torch.inference_mode():
            images = pipe(**kwargs).images
        if mask is not None:
            images = [composite_inpaint(init, out, mask) for out in images]
        return images
