"""The one typed request that flows from the CLI, the HTTP API and the UI into the library."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field, fields, replace
from typing import Any

from pintor.errors import PintorError
from pintor.registry import MODES


@dataclass(frozen=True)
class Limits:
    """Bounds on what a request may ask for; the server tightens them, a user may raise them."""

    max_size: int = 2048
    min_size: int = 64
    max_steps: int = 1000
    max_n: int = 64
    max_prompt_chars: int = 10_000
    max_items: int = 16
    max_candidates: int = 16


DEFAULT_LIMITS = Limits()
_MODEL_DEFAULT = {"model_default": True}


@dataclass
class GenerationRequest:
    """Everything that determines a set of images.

    Image-valued fields (`image`, `mask`, `hint` and image entries of `items`) hold whatever the caller
    gave (a path, a PIL image or an array); `pintor.images.load_image` turns them into pixels.
    `None` for a setting means the model's default.

    Args:
        mode (`str`): one of `generate`, `mix`, `img2img`, `inpaint`, `control`, `variations`.
        prompt (`str`): the text prompt (not used by `mix` and `variations`).
        negative_prompt (`str`): what to steer away from.
        items (`list`): `mix` items, images and/or texts.
        weights (`list[float]`): one weight per item.
        image: the input image of `img2img`, `inpaint` and `variations`.
        mask: the `inpaint` mask, white where the image is repainted.
        hint: the `control` depth map (white is near), or a photo with `estimate_depth=True`.
        strength (`float`): how much `img2img` changes the input, in (0, 1].
        estimate_depth (`bool`): turn `hint` into a depth map with a depth-estimation model first.
        seed (`int`): seed of the first image; image `i` uses `seed + i`. Random when `None`.
        n (`int`): number of images.
        steps, prior_steps (`int`): decoder and prior denoising steps.
        guidance_scale, prior_guidance_scale (`float`): classifier-free guidance of decoder and prior.
        width, height (`int`): output size in pixels.
        scheduler (`str`): decoder scheduler name (see `pintor.schedulers.SCHEDULERS`).
        candidates (`int`): images drawn for each one returned; the one whose CLIP image embedding is nearest
            the embedding the decoder was given is kept (Kandinsky models). 1 draws each image once.
        autoguidance_scale (`float`): how hard the decoder is steered away from the model's weak decoder
            (`pintor.guidance`; models with an `autoguide/` folder, decoder modes only). 0 turns it off.
        model (`str`): registry name or folder; recorded in metadata.
    """

    mode: str = "generate"
    prompt: str = ""
    negative_prompt: str = ""
    items: list[Any] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)
    image: Any = None
    mask: Any = None
    hint: Any = None
    strength: float = 0.5
    estimate_depth: bool = False
    seed: int | None = None
    n: int = 1
    # The model-default settings: `None` takes the model's value (`with_defaults`), and every front end passes
    # them through by name (`SETTING_NAMES`), so a new one is added here and as an option, nowhere else.
    steps: int | None = field(default=None, metadata=_MODEL_DEFAULT)
    prior_steps: int | None = field(default=None, metadata=_MODEL_DEFAULT)
    guidance_scale: float | None = field(default=None, metadata=_MODEL_DEFAULT)
    prior_guidance_scale: float | None = field(default=None, metadata=_MODEL_DEFAULT)
    width: int | None = field(default=None, metadata=_MODEL_DEFAULT)
    height: int | None = field(default=None, metadata=_MODEL_DEFAULT)
    scheduler: str | None = field(default=None, metadata=_MODEL_DEFAULT)
    candidates: int | None = field(default=None, metadata=_MODEL_DEFAULT)
    autoguidance_scale: float | None = field(default=None, metadata=_MODEL_DEFAULT)
    model: str | None = None

    def with_defaults(self, defaults: dict[str, Any]) -> GenerationRequest:
        """Fills every `None` setting from `defaults` and draws a seed if none was given."""
        updates = {k: v for k, v in defaults.items() if k in SETTING_NAMES and getattr(self, k) is None}
        if self.seed is None:
            updates["seed"] = random.SystemRandom().randrange(0, 2**32)
        return replace(self, **updates)

    def validate(self, limits: Limits = DEFAULT_LIMITS) -> GenerationRequest:
        """Checks every field; raises `PintorError` naming what was got and what is allowed. Returns self."""
        if self.mode not in MODES:
            raise PintorError(f"unknown mode {self.mode!r}: expected one of {', '.join(MODES)}")
        if not isinstance(self.prompt, str) or not isinstance(self.negative_prompt, str):
            raise PintorError("prompt and negative_prompt must be strings")
        if self.mode in _PROMPT_MODES and not self.prompt.strip():
            raise PintorError(f"the prompt is empty: {self.mode} needs a text prompt")
        for name in ("prompt", "negative_prompt"):
            if len(getattr(self, name)) > limits.max_prompt_chars:
                raise PintorError(f"{name} has {len(getattr(self, name))} characters: at most {limits.max_prompt_chars}")
        if self.mode == "mix":
            self._validate_mix(limits)
        for name, needed in (("image", ("img2img", "inpaint", "variations")), ("mask", ("inpaint",)),
                             ("hint", ("control",))):
            if self.mode in needed and getattr(self, name) is None:
                raise PintorError(f"{self.mode} needs an input {name}")
        if not _is_int(self.n) or not 1 <= self.n <= limits.max_n:
            raise PintorError(f"n must be an integer from 1 to {limits.max_n}, got {self.n!r}")
        if self.candidates is not None:
            if not _is_int(self.candidates) or not 1 <= self.candidates <= limits.max_candidates:
                raise PintorError(f"candidates must be an integer from 1 to {limits.max_candidates}, got {self.candidates!r}")
            if self.n * self.candidates > limits.max_n:
                raise PintorError(f"n x candidates is {self.n * self.candidates}: at most {limits.max_n} images are drawn "
                                  "per request")
        if self.seed is not None and (not _is_int(self.seed) or not 0 <= self.seed < 2**63):
            raise PintorError(f"seed must be an integer from 0 to 2**63-1, got {self.seed!r}")
        for name in ("steps", "prior_steps"):
            v = getattr(self, name)
            if v is not None and (not _is_int(v) or not 1 <= v <= limits.max_steps):
                raise PintorError(f"{name} must be a positive integer of at most {limits.max_steps}, got {v!r}")
        for name in ("guidance_scale", "prior_guidance_scale", "autoguidance_scale"):
            v = getattr(self, name)
            if v is not None and (not _is_number(v) or not 0 <= v <= 100):
                raise PintorError(f"{name} must be a number from 0 to 100, got {v!r}")
        if self.mode == "img2img" and (not _is_number(self.strength) or not 0 < self.strength <= 1):
            raise PintorError(f"strength must be in (0, 1], got {self.strength!r}")
        if self.mode == "img2img" and self.steps is not None and int(self.steps * self.strength) < 1:
            # diffusers runs int(steps * strength) steps: zero would return the input unchanged, or crash.
            raise PintorError(f"img2img with strength {self.strength} and {self.steps} steps runs no denoising step: "
                              "raise steps or strength")
        for name in ("width", "height"):
            v = getattr(self, name)
            if v is None:
                continue
            if not _is_int(v) or v % 8:
                raise PintorError(f"{name} must be a multiple of 8, got {v!r}")
            if v < limits.min_size:
                raise PintorError(f"{name} {v} is below the minimum of {limits.min_size}")
            if v > limits.max_size:
                raise PintorError(f"{name} {v} is above the limit of {limits.max_size} (raise it with --max-size)")
        if self.scheduler is not None:
            from pintor.schedulers import SCHEDULERS

            if self.scheduler not in SCHEDULERS:
                raise PintorError(f"unknown scheduler {self.scheduler!r}: expected one of {', '.join(SCHEDULERS)}")
        return self

    def _validate_mix(self, limits: Limits) -> None:
        if not self.items:
            raise PintorError("mix needs at least one item (an image or a text)")
        if len(self.items) > limits.max_items:
            raise PintorError(f"mix takes at most {limits.max_items} items, got {len(self.items)}")
        if len(self.weights) != len(self.items):
            raise PintorError(f"mix got {len(self.items)} items but {len(self.weights)} weights: give one weight per item")
        for w in self.weights:
            if not _is_number(w) or not math.isfinite(w):
                raise PintorError(f"mix weights must be finite numbers, got {w!r}")
        from pintor.images import is_image_item

        for item in self.items:
            if not is_image_item(item) and not isinstance(item, str):
                raise PintorError(f"a mix item must be a text, an image path, a PIL image or an array, got {type(item).__name__}")
            if isinstance(item, str) and not is_image_item(item) and not item.strip():
                raise PintorError("a mix item is an empty text: give a prompt or an image")

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict; image inputs are recorded by `describe_image` (their path when they have one)."""
        from pintor.images import describe_image, is_image_item

        d = {f.name: getattr(self, f.name) for f in fields(self)}
        for name in IMAGE_FIELDS:
            d[name] = None if d[name] is None else describe_image(d[name])
        d["items"] = [{"image": describe_image(it)} if is_image_item(it) else it for it in self.items]
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> GenerationRequest:
        """Rebuilds a request recorded by `to_json`; image inputs come back as their recorded paths."""
        if not isinstance(d, dict):
            raise PintorError(f"a request must be a JSON object, got {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise PintorError(f"unknown request field(s) {', '.join(unknown)}: expected some of {', '.join(sorted(known))}")
        d = dict(d)
        for name in IMAGE_FIELDS:
            if isinstance(d.get(name), dict):
                d[name] = _recorded_image(d[name], name)
        d["items"] = [_recorded_image(it["image"], "mix item") if isinstance(it, dict) else it
                      for it in d.get("items", [])]
        return cls(**d)


_PROMPT_MODES = ("generate", "img2img", "inpaint", "control")
#: The request's model-default settings (`steps`, `guidance_scale`, ...), in field order.
SETTING_NAMES = tuple(f.name for f in fields(GenerationRequest) if f.metadata.get("model_default"))
#: The fields that hold image inputs: front ends decode and store them before building a request.
IMAGE_FIELDS = ("image", "mask", "hint")


def candidates_that_fit(n: int, candidates: int, max_n: int) -> int:
    """The most of `candidates` that `n` images may each draw when at most `max_n` images are drawn (at least 1)."""
    return min(int(candidates), max(1, int(max_n) // int(n)))


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _recorded_image(desc: dict, what: str):
    path = desc.get("path") if isinstance(desc, dict) else None
    if not path:
        raise PintorError(f"the recorded {what} was given in memory, not as a file, so it cannot be replayed")
    from pathlib import Path

    return Path(path)
