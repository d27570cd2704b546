"""The model registry: one typed `ModelSpec` per name, all in this file.

A spec says where each role's weights live (hub repository ids, or a folder inside the package for
the embedded model), which modes the model offers and its default settings. Loading code reads
specs; it never branches on model names.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from types import MappingProxyType

from pintor.errors import PintorError

MODES = ("generate", "mix", "img2img", "inpaint", "control", "variations")
KANDINSKY22_MODES = MODES


@dataclass(frozen=True)
class ModelSpec:
    """A named model.

    Args:
        name (`str`): the registry name users type.
        family (`str`): the backend that runs it (a key of `pintor.backends.BACKENDS`).
        sources (`Mapping[str, str]`): role -> hub repository id or local folder. Kandinsky 2.2 roles are
            `prior`, `decoder`, `inpaint` and `controlnet-depth`; single-repository models use `main`
            (and optionally `inpaint`).
        modes (`tuple[str, ...]`): the modes it offers.
        size_gb (`float`): approximate size of its safetensors weights, all roles together.
        defaults (`Mapping[str, object]`): default generation settings (`steps`, `prior_steps`,
            `guidance_scale`, `prior_guidance_scale`, `width`, `height`, `scheduler`).
        description (`str`): one line for `pintor models`.
        embedded (`bool`): weights ship inside the package (no download).
        size_multiple (`int`): width and height are rounded up to a multiple of this (64 for Kandinsky's
            MoVQ, 8 for Stable Diffusion's VAE).
    """

    name: str
    family: str
    sources: MappingProxyType
    modes: tuple[str, ...]
    size_gb: float
    defaults: MappingProxyType = field(default_factory=lambda: MappingProxyType({}))
    description: str = ""
    embedded: bool = False
    size_multiple: int = 64

    def source(self, role: str) -> str | None:
        return self.sources.get(role)

    @property
    def hub_repos(self) -> tuple[str, ...]:
        return () if self.embedded else tuple(dict.fromkeys(self.sources.values()))


def _spec(name, family, sources, modes, size_gb, defaults, description, embedded=False) -> ModelSpec:
    return ModelSpec(name, family, MappingProxyType(dict(sources)), tuple(modes), size_gb,
                     MappingProxyType(dict(defaults)), description, embedded,
                     size_multiple=8 if family == "diffusers-auto" else 64)


EMBEDDED_DIR = "weights/pintor-shapes"

# Settings every model of a family starts from; a spec's or a folder's `defaults` override them.
FAMILY_DEFAULTS = MappingProxyType({
    "kandinsky-2.2": dict(steps=50, prior_steps=25, guidance_scale=4.0, prior_guidance_scale=4.0, width=768, height=768,
                          candidates=1),
    "kandinsky-2.1": dict(steps=50, prior_steps=25, guidance_scale=4.0, prior_guidance_scale=4.0, width=768, height=768,
                          candidates=1),
    "diffusers-auto": dict(steps=30, guidance_scale=7.5, width=512, height=512, candidates=1),
})

_K22_DEFAULTS = dict(steps=50, prior_steps=25, guidance_scale=4.0, prior_guidance_scale=4.0, width=768, height=768,
                     scheduler="ddpm")

REGISTRY: MappingProxyType = MappingProxyType({s.name: s for s in (
    _spec("pintor-shapes", "kandinsky-2.2", {"root": EMBEDDED_DIR}, KANDINSKY22_MODES, 0.03,
          dict(steps=20, prior_steps=10, guidance_scale=4.0, prior_guidance_scale=4.0, width=128, height=128),
          "Embedded Kandinsky 2.2 model of the shapes world, trained by pintor; runs offline on a CPU.",
          embedded=True),
    _spec("kandinsky-2.2", "kandinsky-2.2",
          {"prior": "kandinsky-community/kandinsky-2-2-prior",
           "decoder": "kandinsky-community/kandinsky-2-2-decoder",
           "inpaint": "kandinsky-community/kandinsky-2-2-decoder-inpaint",
           "controlnet-depth": "kandinsky-community/kandinsky-2-2-controlnet-depth"},
          KANDINSKY22_MODES, 14.0, _K22_DEFAULTS,
          "Kandinsky 2.2: CLIP ViT-bigG prior + 1.2B UNet decoder + MoVQ; mixing, depth ControlNet."),
    _spec("kandinsky-2.1", "kandinsky-2.1",
          {"prior": "kandinsky-community/kandinsky-2-1-prior",
           "main": "kandinsky-community/kandinsky-2-1",
           "inpaint": "kandinsky-community/kandinsky-2-1-inpaint"},
          ("generate", "mix", "img2img", "inpaint", "variations"), 12.0,
          dict(_K22_DEFAULTS, scheduler="ddim", width=768, height=768),
          "Kandinsky 2.1: CLIP prior + multilingual text encoder + UNet decoder + MoVQ."),
    _spec("kandinsky-3", "diffusers-auto", {"main": "kandinsky-community/kandinsky-3"},
          ("generate", "img2img"), 24.0,
          dict(steps=25, guidance_scale=3.0, width=1024, height=1024),
          "Kandinsky 3: Flan-UL2 text encoder + 3B UNet + MoVQ."),
    _spec("stable-diffusion-1.5", "diffusers-auto",
          {"main": "stable-diffusion-v1-5/stable-diffusion-v1-5",
           "inpaint": "stable-diffusion-v1-5/stable-diffusion-inpainting"},
          ("generate", "img2img", "inpaint"), 5.5,
          dict(steps=30, guidance_scale=7.5, width=512, height=512),
          "Stable Diffusion 1.5 (text2img, img2img, inpaint)."),
    _spec("sdxl", "diffusers-auto", {"main": "stabilityai/stable-diffusion-xl-base-1.0"},
          ("generate", "img2img", "inpaint"), 7.0,
          dict(steps=30, guidance_scale=5.0, width=1024, height=1024),
          "Stable Diffusion XL base 1.0 (text2img, img2img, inpaint)."),
)})

DEFAULT_MODEL = "pintor-shapes"


def get_spec(name: str) -> ModelSpec:
    """Returns the spec registered under `name`, or raises `PintorError` listing the known names."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise PintorError(f"unknown model {name!r}: expected one of {', '.join(REGISTRY)} or a local folder") from None


def embedded_path() -> Path:
    """The folder of the embedded model's weights inside the installed package."""
    return Path(str(resources.files("pintor"))) / EMBEDDED_DIR
