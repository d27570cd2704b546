"""OpenAI-compatible image endpoints (`/v1/images/...`, `/v1/models`), for the official `openai` client and others.

Payloads translate into a `GenerationRequest`; the job runs through the shared FIFO queue and the request
waits for it. pintor extras (`negative_prompt`, `seed`, `steps`, `guidance_scale`) ride in the same body
(`extra_body=` in the `openai` client). OpenAI fields pintor cannot honour (streaming, other output formats)
are refused with a clear 400; purely descriptive ones (`quality`, `style`...) are ignored.
"""

from __future__ import annotations

import base64
from typing import Annotated, Literal

from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from pintor.request import GenerationRequest
from pintor.server.config import megabytes
from pintor.server.errors import APIError
from pintor.server.uploads import parse_size

router = APIRouter(prefix="/v1", tags=["OpenAI-compatible"])

ResponseFormat = Literal["b64_json", "url"]


class ImageGenerationBody(BaseModel):
    """`POST /v1/images/generations`, with OpenAI's field names plus pintor's extras."""

    model_config = ConfigDict(extra="allow")

    prompt: str = Field(description="what to paint")
    model: str | None = Field(None, description="a served model name (see GET /v1/models); default: the first")
    n: int | None = Field(1, description="number of images")
    size: str | None = Field(None, description="WIDTHxHEIGHT, e.g. 512x512, or 'auto' for the model's default")
    response_format: ResponseFormat | None = Field(None, description="b64_json (default) or url")
    user: str | None = Field(None, max_length=256, description="an end-user id, recorded in the history")
    negative_prompt: str | None = Field(None, description="pintor extra: what to steer away from")
    seed: int | None = Field(None, description="pintor extra: seed of the first image (random if omitted)")
    steps: int | None = Field(None, description="pintor extra: decoder steps")
    guidance_scale: float | None = Field(None, description="pintor extra: decoder guidance scale")


def _service(request: Request):
    return request.app.state.service


def _refuse_unsupported(extra: dict) -> None:
    if extra.get("stream"):
        raise APIError(400, "stream=true is not supported: follow progress on /api/v1/jobs/{id}/events",
                       param="stream")
    fmt = extra.get("output_format")
    if fmt not in (None, "png"):
        raise APIError(400, f"output_format {fmt!r} is not supported: pintor writes PNG", param="output_format")


async def _respond(request: Request, req: GenerationRequest, user: str | None, response_format: str | None):
    service = _service(request)
    job = await run_in_threadpool(service.submit, req, api="openai", user=user)
    await service.wait(job)
    data = []
    for im in job.images:
        if response_format == "url":
            data.append({"url": f"{str(request.base_url).rstrip('/')}/api/v1/images/{im['id']}.png",
                         "revised_prompt": None})
        else:
            raw = await run_in_threadpool(service.image_bytes, im["id"])
            data.append({"b64_json": base64.b64encode(raw).decode("ascii"), "revised_prompt": None})
    body = {"created": int(job.finished or job.created), "data": data, "output_format": "png"}
    return JSONResponse(body, headers={"X-Pintor-Job": job.id})


@router.post("/images/generations", summary="Create images from a prompt")
async def generations(body: ImageGenerationBody, request: Request):
    """OpenAI's `images.generate`. Returns `{created, data: [{b64_json | url}]}`."""
    _refuse_unsupported(body.model_extra or {})
    width, height = parse_size(body.size)
    req = GenerationRequest(mode="generate", prompt=body.prompt, negative_prompt=body.negative_prompt or "",
                            seed=body.seed, n=1 if body.n is None else body.n, steps=body.steps,
                            guidance_scale=body.guidance_scale, width=width, height=height, model=body.model)
    return await _respond(request, req, body.user, body.response_format)


def _opt_int(value: str | None, name: str) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise APIError(400, f"{name} must be an integer, got {value[:40]!r}", param=name) from None


def _opt_float(value: str | None, name: str) -> float | None:
    if value is None or value == "":
        return None
    try:
        return float(value)
    except ValueError:
        raise APIError(400, f"{name} must be a number, got {value[:40]!r}", param=name) from None


async def _read_upload(service, upload: UploadFile, what: str) -> bytes:
    # Read one byte past the cap, so an oversized upload is refused without holding all of it.
    data = await upload.read(service.config.max_upload_bytes + 1)
    if len(data) > service.config.max_upload_bytes:
        raise APIError(413, f"{what} is larger than {megabytes(service.config.max_upload_bytes)}",
                       "too_large", what)
    return data


def _one_image(image: list[UploadFile] | None, image_array: list[UploadFile] | None) -> UploadFile:
    files = [f for f in (image or []) + (image_array or []) if f is not None]
    if not files:
        raise APIError(400, "image is required: upload one PNG, JPEG or WebP file", param="image")
    if len(files) > 1:
        raise APIError(400, f"got {len(files)} images: pintor edits one image at a time", param="image")
    return files[0]


def _edit_inputs(service, image_bytes: bytes, mask_bytes: bytes | None):
    """The image and a pintor mask (white = repaint) from OpenAI's conventions.

    OpenAI repaints where the mask (or, without a mask, the image itself) is fully transparent. A mask with
    no transparency is read the A1111/pintor way instead: white is repainted.
    """
    from PIL import Image

    rgba = service.input_image(image_bytes, "image", mode="RGBA")
    if mask_bytes is not None:
        m = service.input_image(mask_bytes, "mask", mode="RGBA")
        alpha = m.getchannel("A")
        mask = alpha.point(lambda a: 255 if a == 0 else 0) if alpha.getextrema()[0] < 255 else m.convert("L")
    else:
        alpha = rgba.getchannel("A")
        if alpha.getextrema()[0] > 0:
            raise APIError(400, "edits needs a mask, or an image with fully transparent areas to repaint",
                           param="mask")
        mask = alpha.point(lambda a: 255 if a == 0 else 0)
    if mask.getextrema()[1] == 0:
        raise APIError(400, "the mask marks nothing to repaint (no transparent or white area)", param="mask")
    from pintor.images import load_image

    rgb = load_image(rgba, "image")  # transparent areas composited on white, as a viewer shows them
    image_path = service.store_input(rgb)
    mask_path = service.store_input(mask.convert("L") if isinstance(mask, Image.Image) else mask)
    return image_path, mask_path


@router.post("/images/edits", summary="Inpaint an image where the mask says")
async def edits(
    request: Request,
    prompt: Annotated[str, Form(description="what to paint in the masked region")],
    image: Annotated[list[UploadFile] | None, File(description="the image (PNG, JPEG or WebP)")] = None,
    image_array: Annotated[list[UploadFile] | None, File(alias="image[]", description="same, array form")] = None,
    mask: Annotated[UploadFile | None, File(description="transparent (or, if opaque, white) = repaint")] = None,
    model: Annotated[str | None, Form()] = None,
    n: Annotated[int, Form()] = 1,
    size: Annotated[str | None, Form()] = None,
    response_format: Annotated[ResponseFormat | None, Form()] = None,
    user: Annotated[str | None, Form(max_length=256)] = None,
    negative_prompt: Annotated[str | None, Form()] = None,
    seed: Annotated[str | None, Form()] = None,
    steps: Annotated[str | None, Form()] = None,
    guidance_scale: Annotated[str | None, Form()] = None,
    stream: Annotated[str | None, Form()] = None,
    output_format: Annotated[str | None, Form()] = None,
):
    """OpenAI's `images.edit`: inpainting. Returns `{created, data: [{b64_json | url}]}`."""
    service = _service(request)
    _refuse_unsupported({"stream": stream not in (None, "", "false", "False"), "output_format": output_format})
    # The cheap checks first: a typo in a field is reported before any image is decoded.
    width, height = parse_size(size)
    settings = dict(seed=_opt_int(seed, "seed"), steps=_opt_int(steps, "steps"),
                    guidance_scale=_opt_float(guidance_scale, "guidance_scale"))
    service.model_name(model)
    upload = _one_image(image, image_array)
    image_bytes = await _read_upload(service, upload, "image")
    mask_bytes = await _read_upload(service, mask, "mask") if mask is not None else None
    image_path, mask_path = await run_in_threadpool(_edit_inputs, service, image_bytes, mask_bytes)
    req = GenerationRequest(mode="inpaint", prompt=prompt, negative_prompt=negative_prompt or "", image=image_path,
                            mask=mask_path, n=n, width=width, height=height, model=model, **settings)
    return await _respond(request, req, user, response_format)


@router.post("/images/variations", summary="Variations of an image")
async def variations(
    request: Request,
    image: Annotated[UploadFile, File(description="the image (PNG, JPEG or WebP)")],
    model: Annotated[str | None, Form()] = None,
    n: Annotated[int, Form()] = 1,
    size: Annotated[str | None, Form()] = None,
    response_format: Annotated[ResponseFormat | None, Form()] = None,
    user: Annotated[str | None, Form(max_length=256)] = None,
    seed: Annotated[str | None, Form()] = None,
    steps: Annotated[str | None, Form()] = None,
    guidance_scale: Annotated[str | None, Form()] = None,
):
    """OpenAI's `images.create_variation`: new images with the same CLIP image embedding."""
    service = _service(request)
    width, height = parse_size(size)
    settings = dict(seed=_opt_int(seed, "seed"), steps=_opt_int(steps, "steps"),
                    guidance_scale=_opt_float(guidance_scale, "guidance_scale"))
    service.model_name(model)
    data = await _read_upload(service, image, "image")
    path = await run_in_threadpool(service.input_path, data, "image")
    req = GenerationRequest(mode="variations", image=path, n=n, width=width, height=height, model=model, **settings)
    return await _respond(request, req, user, response_format)


@router.get("/models", summary="The served models")
async def models(request: Request):
    service = _service(request)
    created = int(service.started)
    return {"object": "list", "data": [{"id": m["name"], "object": "model", "created": created, "owned_by": "pintor",
                                        "modes": m["modes"]} for m in service.models()]}


@router.get("/models/{model_id}", summary="One served model")
async def model(model_id: str, request: Request):
    service = _service(request)
    name = service.model_name(model_id, param="model_id")
    m = next(m for m in service.models() if m["name"] == name)
    return {"id": name, "object": "model", "created": int(service.started), "owned_by": "pintor", "modes": m["modes"]}
