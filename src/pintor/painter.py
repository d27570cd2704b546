"""`pintor.load()` and the `Painter`: one object, every mode, shared weights."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pintor.backends import backend_class
from pintor.backends.common import RunControl, oom_as_error
from pintor.errors import ModeNotSupportedError, PintorError
from pintor.registry import DEFAULT_MODEL, REGISTRY, ModelSpec, embedded_path, get_spec
from pintor.request import DEFAULT_LIMITS, GenerationRequest, Limits, candidates_that_fit


@dataclass
class Result:
    """Images of one request, each with the metadata record written into its PNG."""

    images: list
    records: list[dict]
    request: GenerationRequest
    seconds: float


def resolve_model(model: str | Path | None) -> tuple[ModelSpec, dict]:
    """Returns the spec of a registry name or local folder, and the folder's `pintor.json` (or `{}`)."""
    model = DEFAULT_MODEL if model is None else model
    as_path = Path(model).expanduser()
    if str(model) not in REGISTRY and (as_path.is_dir() or isinstance(model, Path) or "/" in str(model)):
        if not as_path.is_dir():
            raise PintorError(f"model folder not found: {as_path}")
        return _local_spec(as_path)
    spec = get_spec(str(model))
    if spec.embedded:
        root = embedded_path()
        if not (root / "prior").is_dir():
            raise PintorError(f"the embedded model {spec.name} is missing from this install ({root}): "
                              "reinstall pintor, or build it with `pintor train shapes`")
        local, meta = _local_spec(root)
        return replace(spec, sources=local.sources, modes=local.modes, size_gb=local.size_gb), meta
    return spec, {}


def _local_spec(path: Path) -> tuple[ModelSpec, dict]:
    from types import MappingProxyType

    meta = {}
    if (path / "pintor.json").is_file():
        try:
            meta = json.loads((path / "pintor.json").read_text())
        except json.JSONDecodeError as e:
            raise PintorError(f"{path / 'pintor.json'} is not valid JSON: {e}") from None
    if (path / "model_index.json").is_file():
        from pintor.registry import MODES

        family, sources, modes = "diffusers-auto", {"main": str(path)}, ("generate", "img2img", "inpaint")
        modes = tuple(m for m in MODES if m in modes)
    else:
        from pintor.backends.kandinsky import local_sources

        family = meta.get("family", "kandinsky-2.2")
        sources, modes = local_sources(path)
    spec = ModelSpec(name=meta.get("name", path.name), family=family, sources=MappingProxyType(sources),
                     modes=modes, size_gb=_folder_gb(path), defaults=MappingProxyType(meta.get("defaults", {})),
                     description=f"local folder {path}", size_multiple=8 if family == "diffusers-auto" else 64)
    return spec, meta


def _folder_gb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*.safetensors")) / 1e9


class Painter:
    """A loaded model that runs every mode it offers.

    Create it with `pintor.load()`. Every method returns `list[PIL.Image.Image]`; each image carries its
    metadata in `image.info` ("parameters" and "pintor"), which `pintor.save_image` writes into the PNG.
    Common keyword arguments: `seed`, `n`, `negative_prompt`, `steps`, `prior_steps`, `guidance_scale`,
    `prior_guidance_scale`, `width`, `height`, `scheduler`, `candidates`, `autoguidance_scale`.
    """

    def __init__(self, spec: ModelSpec, backend, *, model_ref: str, defaults: dict, device: str, dtype,
                 limits: Limits = DEFAULT_LIMITS, load_seconds: float = 0.0):
        self.spec, self.backend, self.model_ref = spec, backend, model_ref
        self.defaults = defaults
        self.device, self.dtype, self.limits = device, dtype, limits
        self.load_seconds = load_seconds

    @property
    def modes(self) -> tuple[str, ...]:
        return self.spec.modes

    @property
    def components(self) -> dict[str, Any]:
        """Every loaded module by name; modes share them (one prior, one MoVQ, one CLIP)."""
        return self.backend.components

    # -- the modes ------------------------------------------------------------------------------------------
    def generate(self, prompt: str, **kwargs) -> list:
        """Text to image.

        Args:
            prompt (`str`): what to paint.
            **kwargs: `seed`, `n`, `negative_prompt`, `steps`, `prior_steps`, `guidance_scale`,
                `prior_guidance_scale`, `width`, `height`, `scheduler`, `candidates` (draw that many and keep the
                one CLIP ranks nearest the embedding it was painted from), `autoguidance_scale` (steer away
                from the model's weak decoder, `pintor.guidance`).
        """
        return self._call("generate", prompt=prompt, **kwargs)

    def mix(self, items: list, weights: list[float], **kwargs) -> list:
        """Kandinsky mixing: each item's CLIP image embedding (images directly, texts through the prior) is
        weighted by its weight and summed; the decoder paints the sum.

        Args:
            items (`list`): images (paths, PIL images, arrays) and/or texts.
            weights (`list[float]`): one finite weight per item; they need not sum to 1.
        """
        return self._call("mix", items=list(items), weights=list(weights), **kwargs)

    def img2img(self, image, prompt: str, strength: float = 0.5, **kwargs) -> list:
        """Repaints `image` towards `prompt`; `strength` in (0, 1] is how much it may change."""
        return self._call("img2img", image=image, prompt=prompt, strength=strength, **kwargs)

    def inpaint(self, image, mask, prompt: str, **kwargs) -> list:
        """Repaints the region of `image` where `mask` is white; every pixel outside it is kept exactly."""
        return self._call("inpaint", image=image, mask=mask, prompt=prompt, **kwargs)

    def control(self, hint, prompt: str, estimate_depth: bool = False, **kwargs) -> list:
        """Depth ControlNet: paints `prompt` following the depth map `hint` (white is near).

        Args:
            hint: a depth map, or a photo when `estimate_depth=True`.
            estimate_depth (`bool`): turn the photo into a depth map with a depth-estimation model first.
        """
        return self._call("control", hint=hint, prompt=prompt, estimate_depth=estimate_depth, **kwargs)

    def variations(self, image, **kwargs) -> list:
        """New images with the same CLIP image embedding as `image`."""
        return self._call("variations", image=image, **kwargs)

    def _call(self, mode: str, progress=None, show_progress: bool = True, **fields) -> list:
        try:
            req = GenerationRequest(mode=mode, **fields)
        except TypeError as e:
            raise PintorError(f"{mode}: {e}") from None
        return self.run(req, RunControl(progress=progress, show_progress=show_progress)).images

    # -- the engine -----------------------------------------------------------------------------------------
    def prepare(self, req: GenerationRequest) -> GenerationRequest:
        """Validates a request and fills in the model's defaults, the seed and the size."""
        req = replace(req, model=req.model or self.model_ref)
        req.validate(self.limits)
        if req.mode not in self.modes:
            raise ModeNotSupportedError(
                f"{self.spec.name} does not offer {req.mode}: its modes are {', '.join(self.modes)}")
        defaults = dict(self.defaults)
        if req.width is None and req.height is None and req.mode in ("img2img", "inpaint", "variations"):
            from pintor.images import load_image

            w, h = load_image(req.image, "image").size
            m = self.spec.size_multiple
            defaults.update(width=_round_size(w, m, self.limits), height=_round_size(h, m, self.limits))
        asked_candidates, asked_autoguidance = req.candidates, req.autoguidance_scale
        req = req.with_defaults(defaults)
        guided_modes = getattr(self.backend, "autoguidance_modes", ())
        if req.autoguidance_scale and req.mode not in guided_modes:
            if asked_autoguidance is None:
                # A default autoguidance is for the base decoder's modes: inpaint and control decoders have no
                # weak twin.
                req = replace(req, autoguidance_scale=None)
            elif not guided_modes:
                raise ModeNotSupportedError(
                    f"{self.spec.name} has no autoguidance model (an autoguide/unet folder): got autoguidance_scale="
                    f"{req.autoguidance_scale}, expected 0")
            else:
                raise ModeNotSupportedError(
                    f"{self.spec.name}'s autoguidance model guides {', '.join(guided_modes)}, not {req.mode}: got "
                    f"autoguidance_scale={req.autoguidance_scale}, expected 0")
        if asked_candidates is None and req.candidates:
            # A model's default candidates never make a valid request invalid: they shrink to fit the image limit
            # (n=4 on a server that draws at most 8 images gets 2 candidates, not an error).
            req = replace(req, candidates=candidates_that_fit(req.n, req.candidates, self.limits.max_n))
        m = self.spec.size_multiple
        req = replace(req, width=_round_to(req.width, m, "width"), height=_round_to(req.height, m, "height"))
        return req.validate(self.limits)

    def run(self, req: GenerationRequest, control: RunControl | None = None) -> Result:
        """Runs a request: validates it, generates, and attaches a metadata record to every image."""
        control = control or RunControl()
        req = self.prepare(req)
        t0 = time.perf_counter()
        with oom_as_error():
            images = self.backend.run(req, control)
        return self._result(req, images, time.perf_counter() - t0)

    def run_batch(self, reqs: list[GenerationRequest], control: RunControl | None = None) -> list[Result]:
        """Runs several requests; text-to-image ones that share their settings (all but prompt and seed) run
        in one batched pipeline call when the backend can, with the same pixels as one by one.

        Returns one `Result` per request, in order; `seconds` of a batched one is its share of the batch.
        """
        control = control or RunControl()
        reqs = [self.prepare(r) for r in reqs]
        opts = getattr(self.backend, "opts", None)
        run_many = getattr(self.backend, "run_many", None)
        if run_many is None or opts is None or not opts.batching:
            return [self.run(r, control) for r in reqs]
        from pintor.backends.kandinsky import batch_key

        groups: dict = {}
        for i, r in enumerate(reqs):
            key = batch_key(r)
            groups.setdefault(i if key is None else key, []).append(i)
        results: list[Result | None] = [None] * len(reqs)
        for idx in groups.values():
            t0 = time.perf_counter()
            with oom_as_error():
                outs = run_many([reqs[i] for i in idx], control)
            share = (time.perf_counter() - t0) / len(idx)
            for i, images in zip(idx, outs, strict=True):
                results[i] = self._result(reqs[i], images, share)
        return results

    def _result(self, req: GenerationRequest, images: list, seconds: float) -> Result:
        """Attaches a metadata record to every image of a finished request."""
        import pintor

        records = []
        req_json = req.to_json()
        for i, img in enumerate(images):
            record = {"request": req_json, "index": i, "seed": req.seed + i, "model": self.spec.name,
                      "version": pintor.__version__, "device": self.device, "dtype": str(self.dtype).replace("torch.", ""),
                      "seconds": round(seconds, 3)}
            if "pintor_candidate" in img.info:  # the kept one of several candidates (`candidates` > 1)
                record["candidate"] = img.info.pop("pintor_candidate")
            from pintor.metadata import a1111_parameters

            img.info["parameters"] = a1111_parameters(record)
            img.info["pintor"] = json.dumps(record, sort_keys=True)
            records.append(record)
        return Result(images=images, records=records, request=req, seconds=seconds)


def _round_to(v: int, m: int, name: str) -> int:
    # Kandinsky's pipelines round latents up to whole 8x8 blocks (64 px); say so rather than surprise.
    if v % m:
        import sys

        r = (v + m - 1) // m * m
        print(f"pintor: note: {name} {v} rounded up to {r} (a multiple of {m})", file=sys.stderr)
        return r
    return v


def _round_size(v: int, m: int, limits: Limits) -> int:
    return max(limits.min_size, min(limits.max_size, (v + m - 1) // m * m))


def load(model: str | Path | None = None, *, device: str | None = None, dtype: str | None = None,
         low_vram: bool = False, lowest_vram: bool = False, limits: Limits = DEFAULT_LIMITS,
         depth_estimator: str | None = None, optimizations=None) -> Painter:
    """Loads a model and returns a `Painter` that runs every mode it offers.

    Args:
        model (`str` or `Path`, *optional*): a registry name (see `pintor models`) or a local folder in
            diffusers format. Defaults to the embedded `pintor-shapes`.
        device (`str`, *optional*): cuda, then mps, then cpu by default.
        dtype (`str`, *optional*): float16 on GPUs, float32 on CPU by default.
        low_vram (`bool`): model CPU offload and attention slicing (accelerators only).
        lowest_vram (`bool`): sequential CPU offload (accelerators only).
        limits (`Limits`): bounds on sizes, steps and counts.
        depth_estimator (`str`, *optional*): hub id or folder of the depth model for `control(estimate_depth=True)`.
        optimizations (`pintor.optim.Optimizations`, *optional*): speed and memory options (Kandinsky models);
            `pintor.optim.default_optimizations(device)` when `None`.

    Examples:
        ```py
        >>> import pintor
        >>> images = pintor.load().generate("a red circle above a blue square", seed=0)
        ```
    """
    from pintor import devices
    from pintor.depth import DEFAULT_DEPTH_ESTIMATOR

    spec, meta = resolve_model(model)
    device, torch_dtype = devices.resolve(device, dtype)
    t0 = time.perf_counter()
    extra = {"optimizations": optimizations} if spec.family.startswith("kandinsky") else {}
    backend = backend_class(spec.family)(
        spec.name, spec.family, spec.sources, spec.modes, device, torch_dtype, low_vram=low_vram,
        lowest_vram=lowest_vram, depth_estimator=depth_estimator or meta.get("depth_estimator") or DEFAULT_DEPTH_ESTIMATOR,
        **extra)
    from pintor.registry import FAMILY_DEFAULTS

    # The scheduler the weights came with, read once now: a request's own scheduler never becomes the default.
    defaults = {"scheduler": backend.default_scheduler, **FAMILY_DEFAULTS[spec.family], **spec.defaults,
                **meta.get("defaults", {})}
    model_ref = spec.name if str(model or DEFAULT_MODEL) in REGISTRY else str(Path(model).resolve())
    return Painter(spec, backend, model_ref=model_ref, defaults=defaults, device=device, dtype=torch_dtype,
                   limits=limits, load_seconds=time.perf_counter() - t0)
