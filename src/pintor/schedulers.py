"""Decoder schedulers by name: each maps to a diffusers scheduler class built from the model's own config."""

from __future__ import annotations

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


def make_scheduler(name: str, base_config):
    """Builds the scheduler `name` from a model's scheduler config (so betas and prediction type carry over)."""
    import diffusers

    try:
        cls_name, overrides = SCHEDULERS[name]
    except KeyError:
        raise PintorError(f"unknown scheduler {name!r}: expected one of {', '.join(SCHEDULERS)}") from None
    cls = getattr(diffusers, cls_name)
    cfg = dict(base_config)
    # Kandinsky decoders predict a learned variance; samplers other than DDPM must ignore it.
    if cls_name != "DDPMScheduler" and cfg.get("variance_type") in ("learned", "learned_range"):
        cfg.pop("variance_type")
    return cls.from_config(cfg, **overrides)


def scheduler_name(scheduler) -> str:
    """The pintor name of a scheduler instance (or its class name when it is not one of ours)."""
    cls = type(scheduler).__name__
    # Most specific first, so a Karras DPM++ is not reported as plain DPM++.
    for name, (cls_name, overrides) in sorted(SCHEDULERS.items(), key=lambda kv: -len(kv[1][1])):
        if cls_name == cls and all(scheduler.config.get(k) == v for k, v in overrides.items()):
            return name
    return cls
