"""AUTOMATIC1111-compatible endpoints (`/sdapi/v1/...`), for the many clients written against that API.

Field names and response shapes follow A1111: requests carry `prompt`, `negative_prompt`, `seed` (-1 is
random), `steps`, `cfg_scale`, `width`, `height`, `batch_size`, `n_iter`, `sampler_name`, `init_images`,
`mask`, `denoising_strength`; responses are `{images, parameters, info}` with `info` a JSON string. Fields
that only make sense for Stable Diffusion add-ons (`enable_hr`, `alwayson_scripts`, `restore_faces`...) are
accepted and ignored, because clients send them with every request. Missing settings take the model's
defaults rather than A1111's (Kandinsky's are different).
"""

from __future__ import annotations

import base64
import json
import re
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from pintor.request import GenerationRequest
from pintor.server.errors import APIError

router = APIRouter(prefix="/sdapi/v1", tags=["A1111-compatible"])

# A1111 sampler names -> pintor scheduler names. A1111 1.9+ names the noise schedule separately
# (`scheduler: "Karras"`), older versions fold it into the sampler name; both are understood.
SAMPLERS = {"Euler a": "euler-a", "Euler": "euler", "Heun": "heun", "DDIM": "ddim", "DDPM": "ddpm", "UniPC": "unipc",
            "DPM++ 2M": "dpm++2m", "DPM++ 2M Karras": "dpm++2m-karras"}
_SAMPLER_OF = {v: k for k, v in SAMPLERS.items()}


class Txt2ImgBody(BaseModel):
    """`POST /sdapi/v1/txt2img`, in A1111's field names."""

    model_config = ConfigDict(extra="allow")

    prompt: str = ""
    negative_prompt: str = ""
    seed: int = Field(-1, description="-1 for a random seed")
    steps: int | None = Field(None, description="decoder steps (default: the model's)")
    cfg_scale: float | None = Field(None, description="guidance scale (default: the model's)")
    width: int | None = None
    height: int | None = None
    batch_size: int = 1
    n_iter: int = 1
    sampler_name: str | None = None
    sampler_index: str | None = None
    scheduler: str | None = None
    override_settings: dict[str, Any] | None = Field(None, description="`sd_model_checkpoint` picks the model")
    send_images: bool = True


class Img2ImgBody(Txt2ImgBody):
    """`POST /sdapi/v1/img2img`; with a `mask` it inpaints (white is repainted)."""

    init_images: list[str] = Field(default_factory=list, description="base64 images; the first is used")
    mask: str | None = Field(None, description="base64 mask, white where the image is repainted")
    denoising_strength: float = 0.75
    inpainting_mask_invert: int = 0
    include_init_images: bool = False


def _service(request: Request):
    return request.app.state.service


def scheduler_of(sampler_name: str | None, schedule: str | None) -> str | None:
    """The pintor scheduler for A1111's sampler (and schedule) name; None means the model's default."""
    if sampler_name is None or not sampler_name.strip():
        return None
    from pintor.schedulers import SCHEDULERS

    name = sampler_name.strip()
    if name in SCHEDULERS:
        return name
    by_lower = {k.lower(): v for k, v in SAMPLERS.items()}
    key = name.lower()
    if schedule and schedule.strip().lower() == "karras" and f"{key} karras" in by_lower:
        key = f"{key} karras"
    if key not in by_lower:
        raise APIError(400, f"unknown sampler_name {name[:40]!r}: pintor has {', '.join(SAMPLERS)}",
                       param="sampler_name")
    return by_lower[key]


def _model(body: Txt2ImgBody) -> str | None:
    ckpt = (body.override_settings or {}).get("sd_model_checkpoint")
    if not ckpt:
        return None
    # A1111 titles are "name [hash]"; the name is what selects.
    return re.sub(r"\s*\[[0-9a-fA-F]*\]\s*$", "", str(ckpt))


def _common(body: Txt2ImgBody) -> dict[str, Any]:
    for name in ("batch_size", "n_iter"):
        if getattr(body, name) < 1:
            raise APIError(400, f"{name} must be at least 1, got {getattr(body, name)}", param=name)
    return dict(prompt=body.prompt, negative_prompt=body.negative_prompt or "",
                seed=None if body.seed is None or body.seed < 0 else body.seed,
                n=body.batch_size * body.n_iter, steps=body.steps, guidance_scale=body.cfg_scale,
                width=body.width, height=body.height, model=_model(body),
                scheduler=scheduler_of(body.sampler_name or body.sampler_index, body.scheduler))


def _limit_batch(service, body: Txt2ImgBody) -> None:
    max_n = service.config.limits.max_n
    if body.batch_size * body.n_iter > max_n:
        raise APIError(400, f"batch_size x n_iter is {body.batch_size * body.n_iter}: at most {max_n} images per "
                            "request", param="batch_size")


async def _respond(request: Request, body: Txt2ImgBody, req: GenerationRequest):
    service = _service(request)
    job = await run_in_threadpool(service.submit, req, api="a1111", user=None)
    await service.wait(job)
    images, infotexts = [], []
    for im in job.images:
        raw = await run_in_threadpool(service.image_bytes, im["id"])
        if body.send_images:
            images.append(base64.b64encode(raw).decode("ascii"))
        row = service.store.get_image(im["id"])
        from pintor.metadata import a1111_parameters

        infotexts.append(a1111_parameters(row["record"]))
    r = job.request
    n = len(job.images)
    info = {
        "prompt": r.prompt, "all_prompts": [r.prompt] * n, "negative_prompt": r.negative_prompt,
        "all_negative_prompts": [r.negative_prompt] * n, "seed": r.seed, "all_seeds": [r.seed + i for i in range(n)],
        "subseed": -1, "all_subseeds": [-1] * n, "subseed_strength": 0, "width": r.width, "height": r.height,
        "sampler_name": _SAMPLER_OF.get(r.scheduler, r.scheduler), "cfg_scale": r.guidance_scale, "steps": r.steps,
        "batch_size": body.batch_size, "restore_faces": False, "face_restoration_model": None,
        "sd_model_name": job.model, "sd_model_hash": None, "sd_vae_name": None, "sd_vae_hash": None,
        "seed_resize_from_w": -1, "seed_resize_from_h": -1,
        "denoising_strength": r.strength if r.mode == "img2img" else None, "extra_generation_params": {},
        "index_of_first_image": 0, "infotexts": infotexts, "styles": [], "clip_skip": 1,
        "job_timestamp": datetime.fromtimestamp(job.created).strftime("%Y%m%d%H%M%S"),
        "is_using_inpainting_conditioning": r.mode == "inpaint", "version": _version(), "pintor_job": job.id,
    }
    parameters = body.model_dump()
    if isinstance(body, Img2ImgBody) and not body.include_init_images:
        parameters.update(init_images=None, mask=None)
    return JSONResponse({"images": images, "parameters": parameters, "info": json.dumps(info)},
                        headers={"X-Pintor-Job": job.id})


def _version() -> str:
    import pintor

    return f"pintor {pintor.__version__}"


@router.post("/txt2img", summary="Text to image (A1111)")
async def txt2img(body: Txt2ImgBody, request: Request):
    _limit_batch(_service(request), body)
    req = GenerationRequest(mode="generate", **_common(body))
    return await _respond(request, body, req)


def _img2img_inputs(service, body: Img2ImgBody):
    if not body.init_images:
        raise APIError(400, "init_images is empty: give one base64 image", param="init_images")
    image = service.input_path(body.init_images[0], "init_images[0]")
    if body.mask is None:
        return image, None
    mask = service.input_image(body.mask, "mask", mode="L")
    if body.inpainting_mask_invert:
        from PIL import ImageOps

        mask = ImageOps.invert(mask)
    return image, service.store_input(mask)


@router.post("/img2img", summary="Image to image; with a mask, inpainting (A1111)")
async def img2img(body: Img2ImgBody, request: Request):
    service = _service(request)
    _limit_batch(service, body)
    fields = _common(body)
    image, mask = await run_in_threadpool(_img2img_inputs, service, body)
    if mask is None:
        req = GenerationRequest(mode="img2img", image=image, strength=body.denoising_strength, **fields)
    else:
        req = GenerationRequest(mode="inpaint", image=image, mask=mask, **fields)
    return await _respond(request, body, req)


@router.get("/progress", summary="Progress of the running job (A1111)")
async def progress(request: Request, skip_current_image: bool = False):
    queue = _service(request).queue
    job, waiting = queue.current, len(queue.queued())
    state = {"skipped": False, "interrupted": False, "job": "", "job_count": waiting, "job_timestamp": "0",
             "job_no": 0, "sampling_step": 0, "sampling_steps": 0}
    if job is None:
        return {"progress": 0.0, "eta_relative": 0.0, "state": state, "current_image": None, "textinfo": None}
    p = job.progress()
    state.update(interrupted=job.cancel_requested, job=f"job {job.id}", job_count=waiting + 1,
                 job_timestamp=datetime.fromtimestamp(job.created).strftime("%Y%m%d%H%M%S"),
                 sampling_step=p["step"], sampling_steps=p["total"])
    return {"progress": p["fraction"], "eta_relative": p["eta"] or 0.0, "state": state, "current_image": None,
            "textinfo": f"{p['stage'] or 'starting'} {p['step']}/{p['total']}"}


@router.post("/interrupt", summary="Interrupt the running job between steps (A1111)")
async def interrupt(request: Request):
    _service(request).queue.interrupt()
    return {}


@router.get("/sd-models", summary="The served models (A1111)")
async def sd_models(request: Request):
    return [{"title": m["name"], "model_name": m["name"], "hash": None, "sha256": None, "filename": m["name"],
             "config": None} for m in _service(request).models()]


@router.get("/samplers", summary="The samplers pintor understands (A1111)")
async def samplers():
    return [{"name": name, "aliases": [pintor_name], "options": {}} for name, pintor_name in SAMPLERS.items()]


@router.get("/options", summary="Current options (A1111; read-only here)")
async def options(request: Request):
    return {"sd_model_checkpoint": _service(request).default_model}


@router.get("/scripts", summary="Installed scripts (A1111; pintor has none)")
async def scripts():
    return {"txt2img": [], "img2img": []}
