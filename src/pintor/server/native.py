"""pintor's own API (`/api/v1/...`): every mode including weighted mixing and depth control, the jobs
(list, get, cancel, re-run, progress stream), the history and the images, and `/health`.

Jobs are asynchronous here: `POST /api/v1/jobs` answers 202 with the queued job at once (`?wait=true` waits).
`/api/v1/mix` and `/api/v1/control` are synchronous shortcuts for the two modes the other APIs lack.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import time
from dataclasses import fields as dataclass_fields
from typing import Literal

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from pintor.request import IMAGE_FIELDS, GenerationRequest
from pintor.server.errors import APIError
from pintor.server.jobs import STATES, Job

router = APIRouter(tags=["native"])

Mode = Literal["generate", "mix", "img2img", "inpaint", "control", "variations"]


class MixItem(BaseModel):
    """One ingredient of a mix: a text or a base64 image, and its weight."""

    model_config = ConfigDict(extra="forbid")

    text: str | None = Field(None, description="a prompt")
    image: str | None = Field(None, description="a base64-encoded image")
    weight: float = Field(1.0, description="its weight; weights need not sum to 1")


class JobRequest(BaseModel):
    """A request in pintor's own terms (the fields of `pintor.GenerationRequest`); images are base64."""

    model_config = ConfigDict(extra="forbid")

    mode: Mode = "generate"
    prompt: str = ""
    negative_prompt: str = ""
    items: list[MixItem] = Field(default_factory=list, description="mix: texts and/or images with weights")
    image: str | None = Field(None, description="base64 input of img2img, inpaint and variations")
    mask: str | None = Field(None, description="base64 inpaint mask, white where the image is repainted")
    hint: str | None = Field(None, description="base64 depth map (white is near), or a photo with estimate_depth")
    strength: float = Field(0.5, description="img2img: how much to change, in (0, 1]")
    estimate_depth: bool = Field(False, description="control: estimate the depth map from a photo first")
    seed: int | None = None
    n: int = 1
    steps: int | None = None
    prior_steps: int | None = None
    guidance_scale: float | None = None
    prior_guidance_scale: float | None = None
    width: int | None = None
    height: int | None = None
    scheduler: str | None = None
    candidates: int | None = Field(None, description="images drawn per image kept, the one CLIP ranks best")
    autoguidance_scale: float | None = Field(None, description="steer away from the model's weak decoder; 0 is off")
    model: str | None = Field(None, description="a served model name (GET /api/v1/models)")
    user: str | None = Field(None, max_length=256, description="who asked, recorded in the history")
    response_format: Literal["url", "b64_json"] = Field("url", description="when waiting: add b64_json to images")


def _service(request: Request):
    return request.app.state.service


def _base(request: Request) -> str:
    return str(request.base_url).rstrip("/")


# The request's fields that the body carries as they are (not mode, mix items and weights, or images). JobRequest
# has every field of GenerationRequest but `weights`, which travel inside its items; a test holds it so.
_PLAIN_FIELDS = tuple(f.name for f in dataclass_fields(GenerationRequest)
                      if f.name not in ("mode", "items", "weights", *IMAGE_FIELDS))


def to_generation_request(service, body: JobRequest, mode: str | None = None) -> GenerationRequest:
    """Decodes the body's images (with every guard) into stored inputs and builds the `GenerationRequest`."""
    mode = mode or body.mode
    if mode != "mix" and body.items:
        raise APIError(400, f"items are for mix, not {mode}", param="items")
    items, weights = [], []
    for i, it in enumerate(body.items):
        if (it.text is None) == (it.image is None):
            raise APIError(400, f"items[{i}] needs exactly one of text or image", param="items")
        items.append(service.text_item(it.text) if it.text is not None
                     else service.input_path(it.image, f"items[{i}].image"))
        weights.append(it.weight)
    fields = {name: getattr(body, name) for name in _PLAIN_FIELDS}
    for name in ("image", "hint"):
        if getattr(body, name) is not None:
            fields[name] = service.input_path(getattr(body, name), name)
    if body.mask is not None:
        fields["mask"] = service.store_input(service.input_image(body.mask, "mask", mode="L"))
    return GenerationRequest(mode=mode, items=items, weights=weights, **fields)


async def _submit(request: Request, body: JobRequest, mode: str | None = None) -> Job:
    service = _service(request)

    def build_and_submit():
        return service.submit(to_generation_request(service, body, mode), api="native", user=body.user)

    return await run_in_threadpool(build_and_submit)


async def _finished_json(request: Request, job: Job, b64: bool) -> dict:
    service = _service(request)
    await service.wait(job)
    d = service.job_json(job, _base(request))
    if b64:
        for im in d["images"]:
            raw = await run_in_threadpool(service.image_bytes, im["id"])
            im["b64_json"] = base64.b64encode(raw).decode("ascii")
    return d


# -- generation ------------------------------------------------------------------------------------------------
@router.post("/api/v1/jobs", status_code=202, summary="Queue a job in any mode")
async def create_job(body: JobRequest, request: Request, wait: bool = Query(False, description="wait until done")):
    """Queues the request and answers 202 with the job; with `wait=true`, answers 200 when it is done."""
    job = await _submit(request, body)
    if wait:
        return JSONResponse(await _finished_json(request, job, body.response_format == "b64_json"))
    return _service(request).job_json(job, _base(request))


@router.post("/api/v1/mix", summary="Mix weighted images and texts (waits)")
async def mix(body: JobRequest, request: Request):
    """Kandinsky mixing: `items` are texts and/or base64 images, each with a weight."""
    job = await _submit(request, body, "mix")
    return await _finished_json(request, job, body.response_format == "b64_json")


@router.post("/api/v1/control", summary="Paint following a depth map (waits)")
async def control(body: JobRequest, request: Request):
    """Depth ControlNet: `hint` is a depth map, or a photo with `estimate_depth=true`."""
    job = await _submit(request, body, "control")
    return await _finished_json(request, job, body.response_format == "b64_json")


# -- jobs ------------------------------------------------------------------------------------------------------
@router.get("/api/v1/jobs", summary="List jobs, newest first")
async def list_jobs(request: Request, state: str | None = None, limit: int = Query(50, ge=1, le=500),
                    offset: int = Query(0, ge=0)):
    if state is not None and state not in STATES:
        raise APIError(400, f"unknown state {state[:20]!r}: expected one of {', '.join(STATES)}", param="state")
    service = _service(request)
    rows = await run_in_threadpool(service.store.list_jobs, state=state, limit=limit, offset=offset)
    live = [service.queue.get(r["id"]) for r in rows]
    jobs = [service.job_json(j if j is not None else r, _base(request)) for j, r in zip(live, rows, strict=True)]
    return {"jobs": jobs, "limit": limit, "offset": offset}


@router.get("/api/v1/jobs/{job_id}", summary="One job, with its progress")
async def get_job(job_id: str, request: Request):
    service = _service(request)
    return service.job_json(service.find_job(job_id), _base(request))


@router.post("/api/v1/jobs/{job_id}/cancel", summary="Cancel a queued job or interrupt a running one")
async def cancel_job(job_id: str, request: Request):
    service = _service(request)
    job = service.find_job(job_id)
    if not isinstance(job, Job) or not service.queue.cancel(job):
        state = job.state if isinstance(job, Job) else job["state"]
        raise APIError(409, f"job {job_id} has already finished ({state})", "conflict")
    return service.job_json(job, _base(request))


@router.delete("/api/v1/jobs/{job_id}", summary="Same as POST /api/v1/jobs/{id}/cancel")
async def delete_job(job_id: str, request: Request):
    return await cancel_job(job_id, request)


@router.post("/api/v1/jobs/{job_id}/rerun", status_code=202, summary="Queue a job's recorded request again")
async def rerun_job(job_id: str, request: Request, wait: bool = Query(False)):
    """Same request, same seed: the one call that re-runs a job a restart marked failed."""
    service = _service(request)
    job = await run_in_threadpool(service.rerun, job_id)
    if wait:
        return JSONResponse(await _finished_json(request, job, False))
    return service.job_json(job, _base(request))


@router.get("/api/v1/jobs/{job_id}/events", summary="Progress as Server-Sent Events")
async def job_events(job_id: str, request: Request):
    """`event: progress` on every step, then one `event: done|failed|cancelled`; each `data:` is the job JSON."""
    service = _service(request)
    job = service.find_job(job_id)
    base = _base(request)

    def event(name: str, data: dict) -> str:
        return f"event: {name}\ndata: {json.dumps(data)}\n\n"

    async def stream():
        if not isinstance(job, Job):
            yield event(job["state"], service.job_json(job, base))
            return
        seen, last_beat = -1, time.monotonic()
        while True:
            version = job.version
            if version != seen:
                seen = version
                data = service.job_json(job, base)
                if job.is_finished:
                    yield event(job.state, data)
                    return
                yield event("progress", data)
            elif time.monotonic() - last_beat > 15:
                yield ": keep-alive\n\n"  # proxies drop idle streams
                last_beat = time.monotonic()
            if await request.is_disconnected():
                return
            await asyncio.sleep(0.1)

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


# -- history and images ------------------------------------------------------------------------------------------
def _history_item(row: dict, base: str) -> dict:
    from pintor.metadata import a1111_parameters

    keys = ("id", "job_id", "created", "model", "mode", "prompt", "negative_prompt", "seed", "width", "height",
            "steps", "guidance_scale", "scheduler", "user", "seconds", "queue_seconds")
    d = {k: row[k] for k in keys}
    d.update(url=f"{base}/api/v1/images/{row['id']}.png", parameters=a1111_parameters(row["record"]),
             request=row["record"].get("request"))
    return d


@router.get("/api/v1/history", summary="Finished images, newest first; search by prompt text")
async def history(request: Request, q: str | None = Query(None, max_length=2000, description="prompt contains"),
                  user: str | None = Query(None, max_length=256), limit: int = Query(50, ge=1, le=500),
                  offset: int = Query(0, ge=0)):
    service = _service(request)
    rows, total = await run_in_threadpool(service.store.history, q=q, user=user, limit=limit, offset=offset)
    return {"items": [_history_item(r, _base(request)) for r in rows], "total": total, "limit": limit,
            "offset": offset}


@router.get("/api/v1/history/{image_id}", summary="One finished image's record")
async def history_item(image_id: int, request: Request):
    row = await run_in_threadpool(_service(request).store.get_image, image_id)
    if row is None:
        raise APIError(404, f"no image {image_id}", "not_found", "image_id")
    return _history_item(row, _base(request))


@router.get("/api/v1/images/{name}", summary="An image file (PNG with its metadata)",
            response_class=FileResponse)
async def image_file(name: str, request: Request):
    m = re.fullmatch(r"(\d{1,18})(\.png)?", name)
    if not m:
        raise APIError(404, f"no image {name[:40]!r}: images are /api/v1/images/<id>.png", "not_found")
    path = _service(request).image_path(int(m.group(1)))
    return FileResponse(path, media_type="image/png", filename=path.name, content_disposition_type="inline")


# -- models and health -----------------------------------------------------------------------------------------
@router.get("/api/v1/models", summary="The served models, their modes and defaults")
async def models(request: Request):
    return {"models": _service(request).models()}


@router.get("/health", summary="Liveness, models and queue")
@router.get("/api/v1/health", include_in_schema=False)
async def health(request: Request):
    import pintor

    service = _service(request)
    current = service.queue.current
    return {"status": "ok", "version": pintor.__version__, "models": list(service.painters),
            "queue": {"running": current.id if current is not None else None, "queued": len(service.queue.queued())},
            "uptime": round(time.time() - service.started, 1)}
