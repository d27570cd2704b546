"""Decoder schedulers by name: each maps to a diffusers scheduler class built from the model's own config."""

from __future__ import annotations

import functools
from types import MappingProxyType

from pintor.errors import PintorError

# name -> (diffusers class name, config overrides)
SCHEDULERS = MappingProxyType({
    "ddpm": ("DDPMScheduler", {}),
    "ddim": ("DDIMScheduler", {}),
    "dpm++2m": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    "dpm++2m-karras": ("DPMSolverMultistepScheduler",
                       {"algorithm_type": "dpmsolver++", "solver_order": 2, "use_karras_sigmas": True}),
    "unipc": ("UniPCMultistepScheduler", {}),
    "euler": ("EulerDiscreteScheduler", {}),
    "euler-a": ("EulerAncestralDiscreteScheduler", {}),
    "heun": ("HeunDiscreteScheduler", {}),
})
# Samplers whose UNet input must go through `scheduler.scale_model_input`, which the Kandinsky pipelines'
# loops never call; for those pipelines they run in unit-variance coordinates (`_unit_variance`).
SCALED_INPUT = frozenset({"euler", "euler-a", "heun"})


def make_scheduler(name: str, base_config, *, scales_input: bool = True):
    """Builds the scheduler `name` from a model's scheduler config (so betas and prediction type carry over).

    Args:
        scales_input (`bool`): whether the pipeline calls `scheduler.scale_model_input`; when it does not
            (Kandinsky), the samplers in `SCALED_INPUT` run in unit-variance coordinates (see `_unit_variance`).
    """
    import diffusers

    try:
        cls_name, overrides = SCHEDULERS[name]
    except KeyError:
        raise PintorError(f"unknown scheduler {name!r}: expected one of {', '.join(SCHEDULERS)}") from None
    cls = _takes_generator(getattr(diffusers, cls_name))
    if not scales_input and name in SCALED_INPUT:
        if name == "heun":  # its corrector pass still gives blank images in unit-variance coordinates
            ok = ", ".join(n for n in SCHEDULERS if n != "heun")
            raise PintorError(f"scheduler 'heun' does not run with this model's pipelines yet; use one of {ok}")
        cls = _unit_variance(cls)
    cfg = dict(base_config)
    # Kandinsky decoders predict a learned variance; samplers other than DDPM must ignore it.
    if cls_name != "DDPMScheduler" and cfg.get("variance_type") in ("learned", "learned_range"):
        cfg.pop("variance_type")
    return cls.from_config(cfg, **overrides)


@functools.cache
def _takes_generator(cls: type) -> type:
    """`cls`, or a same-named subclass whose `step` accepts (and ignores) `generator`.

    The Kandinsky pipelines call `scheduler.step(..., generator=generator)`; deterministic samplers such as
    UniPC have no such argument and would raise a TypeError mid-run.
    """
    import inspect

    if "generator" in inspect.signature(cls.step).parameters:
        return cls

    def step(self, *args, generator=None, **kwargs):
        return cls.step(self, *args, **kwargs)

    return type(cls.__name__, (cls,), {"step": step, "__module__": cls.__module__})


@functools.cache
def _unit_variance(cls: type) -> type:
    """A same-named subclass of a sigma-space sampler (Euler, Heun) that keeps its latents divided by
    sqrt(sigma^2 + 1), i.e. already scaled for the UNet.

    The Kandinsky pipelines feed the latents to the UNet as they are and never call `scale_model_input`;
    in these coordinates that is exactly right, and `step` / `add_noise` convert to sigma space and back.
    The samples are the sampler's own (only the coordinates of the intermediate latents change).
    """
    import torch

    def _scale(sigma):
        return (sigma ** 2 + 1) ** 0.5

    def step(self, model_output, timestep, sample, *args, **kwargs):
        if self.step_index is None:
            self._init_step_index(timestep)
        x = sample * _scale(self.sigmas[self.step_index]).to(sample.dtype)
        self.is_scale_input_called = True
        out = cls.step(self, model_output, timestep, x, *args, **kwargs)
        prev = out[0] if isinstance(out, tuple) else out.prev_sample
        # The new sample sits at the next sigma, except after Heun's second (corrector) call, which lands
        # on the sigma its first call already stepped to.
        at = self.step_index - (1 if getattr(self, "state_in_first_order", None) is True else 0)
        prev = prev / _scale(self.sigmas[at]).to(prev.dtype)
        if isinstance(out, tuple):
            return (prev, *out[1:])
        out.prev_sample = prev
        return out

    def add_noise(self, original_samples, noise, timesteps):
        sigma = cls.add_noise(self, torch.zeros_like(original_samples), torch.ones_like(original_samples), timesteps)
        return cls.add_noise(self, original_samples, noise, timesteps) / _scale(sigma)

    def init_noise_sigma(self):
        s = cls.init_noise_sigma.fget(self)
        return s / _scale(torch.as_tensor(s, dtype=torch.float32)).item()

    return type(cls.__name__, (cls,), {"step": step, "add_noise": add_noise,
                                       "init_noise_sigma": property(init_noise_sigma), "__module__": cls.__module__})


def scheduler_name(scheduler) -> str:
    """The pintor name of a scheduler instance (or its class name when it is not one of ours)."""
    cls = type(scheduler).__name__
    # Most specific first, so a Karras DPM++ is not reported as plain DPM++.
    for name, (cls_name, overrides) in sorted(SCHEDULERS.items(), key=lambda kv: -len(kv[1][1])):
        if cls_name == cls and all(scheduler.config.get(k) == v for k, v in overrides.items()):
            return name
    return cls
