"""Autoguidance: steer a decoder away from a weaker model of itself (Karras et al., 2024, "Guiding a diffusion
model with a bad version of itself").

The weak model (smaller, trained for less) makes the same kinds of mistakes as the decoder, more often; the
difference of their noise predictions points away from those mistakes. It adds to classifier-free guidance:

    eps = eps_uncond + g * (eps_cond - eps_uncond) + a * (eps_cond - eps_weak)

with `g` the `guidance_scale` and `a` the `autoguidance_scale` (0: plain classifier-free guidance).
"""

from __future__ import annotations

from contextlib import contextmanager


def autoguided_noise(uncond, cond, weak, guidance_scale: float, autoguidance_scale: float):
    """The guided noise prediction `uncond + g (cond - uncond) + a (cond - weak)`; `uncond` may be `None` (no
    classifier-free guidance: `cond + a (cond - weak)`)."""
    base = cond if uncond is None else uncond + guidance_scale * (cond - uncond)
    return base + autoguidance_scale * (cond - weak)


@contextmanager
def autoguidance(unet, weak_unet, autoguidance_scale: float, guidance_scale: float):
    """While open, every call of `unet` made by a diffusers Kandinsky 2.2 decoder pipeline is autoguided by
    `weak_unet` (a UNet that takes the same inputs).

    Those pipelines batch `[uncond; cond]` when `guidance_scale > 1` and combine the halves as
    `u + g (c - u)`; the hook rewrites the unconditional half to `u' = (target - g c) / (1 - g)`, so the
    pipeline's own combination yields `autoguided_noise`. Without guidance the batch is `cond` alone and is
    replaced by the target. Learned-variance channels pass through unchanged.

    Args:
        unet (`UNet2DConditionModel`): the decoder the pipeline calls.
        weak_unet (`UNet2DConditionModel`): the weak model.
        autoguidance_scale (`float`): `a` above; 0 leaves the UNet untouched.
        guidance_scale (`float`): the pipeline's `guidance_scale` for this call.
    """
    import torch

    if autoguidance_scale < 0:
        raise ValueError(f"autoguidance_scale must be >= 0, got {autoguidance_scale}")
    if not autoguidance_scale:
        yield
        return
    halves = guidance_scale > 1
    g = float(guidance_scale)

    def hook(module, args, kwargs, output):
        sample = kwargs["sample"] if "sample" in kwargs else args[0]
        timestep = kwargs["timestep"] if "timestep" in kwargs else args[1]
        out = output[0] if isinstance(output, tuple) else output.sample
        c = sample.shape[1]
        b = out.shape[0] // 2 if halves else 0
        cond_kwargs = {k: v[b:] for k, v in (kwargs.get("added_cond_kwargs") or {}).items()}
        weak = weak_unet(sample[b:], timestep, None, added_cond_kwargs=cond_kwargs, return_dict=False)[0]
        eps_c = out[b:, :c]
        target = autoguided_noise(out[:b, :c] if halves else None, eps_c, weak[:, :c].to(out.dtype), g,
                                  autoguidance_scale)
        if halves:
            new = torch.cat([torch.cat([(target - g * eps_c) / (1 - g), out[:b, c:]], 1), out[b:]], 0)
        else:
            new = torch.cat([target, out[:, c:]], 1)
        if isinstance(output, tuple):
            return (new, *output[1:])
        output.sample = new
        return output

    handle = unet.register_forward_hook(hook, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()
