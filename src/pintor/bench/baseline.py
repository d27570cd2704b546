"""The stock baseline: diffusers' own Kandinsky pipelines, built by hand from the same weights.

Nothing of pintor runs between the start and the end of a timed baseline call: the functions here
only call diffusers (the timing hooks of `StageTimer` are attached to both sides alike).
"""

from __future__ import annotations

# diffusers class names of each family's prior and text-to-image pipelines.
STOCK_PIPELINES = {
    "kandinsky-2.2": ("KandinskyV22PriorPipeline", "KandinskyV22Pipeline"),
    "kandinsky-2.1": ("KandinskyPriorPipeline", "KandinskyPipeline"),
}


def load_stock(family: str, prior_source: str, decoder_source: str, device: str, dtype):
    """`from_pretrained` of both pipelines, moved to `device`, as a diffusers user writes it."""
    import diffusers

    from pintor.backends.common import dtype_kwargs

    prior_cls, decoder_cls = (getattr(diffusers, n) for n in STOCK_PIPELINES[family])
    kw = dict(dtype_kwargs(dtype), use_safetensors=True)
    prior = prior_cls.from_pretrained(prior_source, **kw).to(device)
    decoder = decoder_cls.from_pretrained(decoder_source, **kw).to(device)
    for pipe in (prior, decoder):
        pipe.set_progress_bar_config(disable=True)
    return prior, decoder


def stock_generate(prior, decoder, family: str, prompts: list[str], seed: int, *, steps: int, prior_steps: int,
                   guidance_scale: float, prior_guidance_scale: float, width: int, height: int) -> list:
    """Text to image with the stock pipelines: image `i` is seeded `seed + i`, one CPU generator each, as pintor does."""
    import torch

    gens = [torch.Generator("cpu").manual_seed(seed + i) for i in range(len(prompts))]
    with torch.inference_mode():
        out = prior(prompts, num_images_per_prompt=1, generator=gens, num_inference_steps=prior_steps,
                    guidance_scale=prior_guidance_scale)
        kwargs = dict(image_embeds=out.image_embeds, negative_image_embeds=out.negative_image_embeds,
                      num_inference_steps=steps, guidance_scale=guidance_scale, height=height, width=width,
                      generator=gens, output_type="pil")
        if family == "kandinsky-2.1":
            kwargs.update(prompt=list(prompts), negative_prompt=[""] * len(prompts))
        return decoder(**kwargs).images


COLD_START_SCRIPT = '''\
import sys, torch, diffusers
prior_cls, decoder_cls, prior_src, decoder_src, device, dtype, prompt, seed, steps, prior_steps, w, h, out = sys.argv[1:]
kw = {{"{dtype_kw}": getattr(torch, dtype), "use_safetensors": True}}
prior = getattr(diffusers, prior_cls).from_pretrained(prior_src, **kw).to(device)
decoder = getattr(diffusers, decoder_cls).from_pretrained(decoder_src, **kw).to(device)
g = torch.Generator("cpu").manual_seed(int(seed))
e = prior(prompt, generator=g, num_inference_steps=int(prior_steps))
extra = {{"prompt": prompt}} if decoder_cls == "KandinskyPipeline" else {{}}
img = decoder(image_embeds=e.image_embeds, negative_image_embeds=e.negative_image_embeds, generator=g,
              num_inference_steps=int(steps), height=int(h), width=int(w), **extra).images[0]
img.save(out)
'''


def cold_start_script(dtype_kw: str) -> str:
    """A stand-alone stock diffusers script (no pintor import) for the baseline's cold start."""
    return COLD_START_SCRIPT.format(dtype_kw=dtype_kw)
