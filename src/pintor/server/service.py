"""What every HTTP layer and the UI share: the loaded models, the queue, the history and the outputs folder.

The layers translate their payloads into a `GenerationRequest` and call `Service.submit`; they own no
generation logic. Models are loaded once at start-up and serve every mode.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

from pintor.errors import PintorError
from pintor.request import GenerationRequest
from pintor.server.config import ServerConfig
from pintor.server.errors import APIError, from_pintor_error
from pintor.server.jobs import Job, JobQueue, expected_steps
from pintor.server.store import Store

log = logging.getLogger("pintor.server")


class Service:
    """The server's state: `painters` (served name -> `Painter`), `store`, `queue` and `config`.

    Args:
        config (`ServerConfig`): the settings.
        painters (`dict`, *optional*): already loaded painters by served name (otherwise `config.models` load).
    """

    def __init__(self, config: ServerConfig, painters: dict | None = None):
        self.config = config
        self.started = time.time()
        # Models first: a model that cannot load stops the server before it creates anything on disk.
        self.painters = dict(painters) if painters is not None else self._load_models()
        if not self.painters:
            raise PintorError("no model to serve")
        config.outputs.mkdir(parents=True, exist_ok=True)
        self.store = Store(config.db, config.outputs)
        self.recovered = self.store.recover()
        self.default_model = next(iter(self.painters))
        # The library's default scheduler is read from the shared decoder pipeline, which a request with an
        # explicit scheduler replaces; pinning each model's start-up default keeps requests independent.
        self.default_schedulers = {name: p.prepare(GenerationRequest(prompt="default")).scheduler
                                   for name, p in self.painters.items()}
        self.queue = JobQueue(self._run_job, self.store)

    def _load_models(self) -> dict:
        import pintor
        from pintor.registry import DEFAULT_MODEL

        painters = {}
        for ref in self.config.models or [DEFAULT_MODEL]:
            painter = pintor.load(ref, device=self.config.device, dtype=self.config.dtype,
                                  low_vram=self.config.low_vram, lowest_vram=self.config.lowest_vram,
                                  limits=self.config.limits, depth_estimator=self.config.depth_estimator)
            name = painter.spec.name
            if name in painters:
                raise PintorError(f"two models are both named {name!r}: serve each name once")
            painters[name] = painter
            log.info("loaded %s (%s) on %s in %.1f s: %s", name, painter.spec.family, painter.device,
                     painter.load_seconds, ", ".join(painter.modes))
        return painters

    def close(self) -> None:
        self.queue.stop()
        self.store.close()

    # -- models ------------------------------------------------------------------------------------------------
    def model_name(self, requested: str | None, param: str = "model") -> str:
        """The served name a request selects. HTTP clients name models, never paths."""
        if requested is None or not str(requested).strip():
            return self.default_model
        name = str(requested).strip()
        if name in self.painters:
            return name
        if "/" in name or "\\" in name or name.startswith((".", "~")) or ":" in name:
            raise APIError(400, f"model {name[:80]!r} looks like a path: name a served model "
                                f"({', '.join(self.painters)})", param=param)
        from pintor.registry import REGISTRY

        if name in REGISTRY:
            raise APIError(404, f"model {name!r} is in the registry but this server does not serve it: "
                                f"it serves {', '.join(self.painters)}", "model_not_found", param)
        raise APIError(404, f"unknown model {name[:80]!r}: this server serves {', '.join(self.painters)}",
                       "model_not_found", param)

    def models(self) -> list[dict[str, Any]]:
        """The served models, for `/v1/models`, `/sdapi/v1/sd-models` and the UI."""
        out = []
        for name, p in self.painters.items():
            out.append({"name": name, "family": p.spec.family, "modes": list(p.modes), "device": p.device,
                        "dtype": str(p.dtype).replace("torch.", ""), "default": name == self.default_model,
                        "description": p.spec.description if not p.spec.description.startswith("local folder")
                        else "", "defaults": {k: v for k, v in p.defaults.items()
                                              if isinstance(v, int | float | str)}})
        return out

    # -- submitting --------------------------------------------------------------------------------------------
    def prepare(self, req: GenerationRequest) -> GenerationRequest:
        """Validates a request against the limits and the model, and fills its defaults and seed (4xx on error)."""
        name = self.model_name(req.model)
        req = replace(req, model=name, scheduler=req.scheduler or self.default_schedulers[name])
        try:
            req.validate(self.config.limits)  # the server's limits, whatever the painter was loaded with
            return self.painters[name].prepare(req)
        except PintorError as e:
            raise from_pintor_error(e) from None

    def submit(self, req: GenerationRequest, *, api: str, user: str | None = None,
               rerun_of: str | None = None) -> Job:
        """Prepares a request and queues it; returns the job (its seed and sizes are final)."""
        req = self.prepare(req)
        painter = self.painters[req.model]
        job = Job(id=Job.new_id(), request=req, model=req.model, api=api, user=_clip(user), rerun_of=rerun_of,
                  total=expected_steps(req, painter.spec.family))
        try:
            return self.queue.submit(job)
        except PintorError as e:
            raise APIError(503, str(e), "unavailable") from None

    def rerun(self, job_id: str, *, user: str | None = None) -> Job:
        """Queues the recorded request of a job again (same seed, same settings): one call after a failure."""
        row = self.store.get_job(job_id)
        if row is None:
            raise APIError(404, f"no job {job_id[:40]!r}", "not_found", "job_id")
        try:
            req = GenerationRequest.from_json(row["request"])
        except PintorError as e:
            raise APIError(409, f"job {job_id} cannot be re-run: {e}", "conflict") from None
        return self.submit(req, api=row["api"] or "native", user=user or row["user"], rerun_of=job_id)

    # -- inputs ------------------------------------------------------------------------------------------------
    def input_image(self, data: bytes | str, what: str, mode: str = "RGB"):
        """Decodes an upload (bytes, or a base64 string) with the size and pixel guards; returns a PIL image."""
        from pintor.server.uploads import b64_bytes, decode_image

        if isinstance(data, str):
            data = b64_bytes(data, what, self.config.max_upload_bytes)
        return decode_image(data, what, max_bytes=self.config.max_upload_bytes,
                            max_pixels=self.config.max_input_pixels, mode=mode)

    def store_input(self, image) -> Path:
        """Keeps an accepted input on disk so the job's recorded request can be re-run; returns its path."""
        from pintor.server.uploads import save_input

        return save_input(image, self.config.outputs / "inputs")

    def input_path(self, data: bytes | str, what: str) -> Path:
        """`input_image` then `store_input`: what the HTTP layers put in a `GenerationRequest`."""
        return self.store_input(self.input_image(data, what))

    def text_item(self, text: str, what: str = "mix item") -> str:
        """A mix text as given by a client; refused when the library would read it as a file on this machine."""
        from pintor.images import is_image_item

        if not isinstance(text, str) or not text.strip():
            raise APIError(400, f"a {what} text is empty: give a prompt or an image", param="items")
        if is_image_item(text):
            raise APIError(400, f"a {what} text looks like a file name ({text[:60]!r}): send images as base64 "
                                "data, not paths", param="items")
        return text

    # -- waiting -----------------------------------------------------------------------------------------------
    async def wait(self, job: Job) -> Job:
        """Waits for a job; returns it when done, raises the matching `APIError` when it failed or was cancelled."""
        await self.queue.wait(job)
        if job.state == "done":
            return job
        if job.state == "cancelled":
            raise APIError(409, f"job {job.id} was cancelled ({job.error})", "cancelled")
        status = {"out_of_memory": 503, "model_not_available": 503, "internal": 500}.get(job.error_type, 400)
        kind = "server_error" if status == 500 else job.error_type or "invalid_request_error"
        raise APIError(status, job.error or "the job failed", kind)

    # -- running (on the worker thread) ------------------------------------------------------------------------
    def _run_job(self, job: Job) -> list[dict]:
        from pintor.backends.common import RunControl

        painter = self.painters[job.model]
        control = RunControl(progress=job.on_progress, show_progress=False,
                             should_stop=lambda: job.cancel_requested)
        result = painter.run(job.request, control)
        return self.save_outputs(job, result)

    def save_outputs(self, job: Job, result) -> list[dict]:
        """Writes each image atomically with its metadata, then records it; returns the image rows."""
        from pintor.metadata import save_png

        stamp = datetime.fromtimestamp(job.created).strftime("%Y%m%d-%H%M%S")
        slug = _slug(job.request.prompt or job.request.mode)
        queue_seconds = round((job.started or job.created) - job.created, 3)
        rows = []
        for i, (img, record) in enumerate(zip(result.images, result.records, strict=True)):
            record = dict(record, job=job.id, user=job.user, queue_seconds=queue_seconds)
            name = f"{stamp}-{job.id}-{i}-{slug}.png"
            save_png(img, self.config.outputs / name, record)
            image_id = self.store.add_image(job_id=job.id, index=i, file=name, record=record, user=job.user,
                                            queue_seconds=queue_seconds)
            rows.append({"id": image_id, "file": name, "seed": record["seed"], "index": i})
        return rows

    # -- reading back ------------------------------------------------------------------------------------------
    def find_job(self, job_id: str) -> Job | dict:
        """The live job, or its stored row; 404 when neither exists."""
        job = self.queue.get(job_id)
        if job is not None:
            return job
        row = self.store.get_job(job_id)
        if row is None:
            raise APIError(404, f"no job {job_id[:40]!r}", "not_found", "job_id")
        return row

    def job_json(self, job: Job | dict, base_url: str = "") -> dict[str, Any]:
        """The public form of a job, live or stored."""
        if isinstance(job, Job):
            images = job.images
            d = {"id": job.id, "seq": job.seq, "state": job.state, "api": job.api, "user": job.user,
                 "model": job.model, "mode": job.request.mode, "prompt": job.request.prompt, "created": job.created,
                 "started": job.started, "finished": job.finished, "error": job.error, "error_type": job.error_type,
                 "rerun_of": job.rerun_of, "progress": job.progress(), "queue_position": self.queue.position(job),
                 "request": job.request.to_json()}
        else:
            images = [{"id": r["id"], "file": r["file"], "seed": r["seed"], "index": r["idx"]}
                      for r in self.store.images_of(job["id"])]
            d = {k: job[k] for k in ("id", "seq", "state", "api", "user", "model", "mode", "prompt", "created",
                                     "started", "finished", "error", "error_type", "rerun_of")}
            done = job["state"] == "done"
            d.update(progress={"stage": None, "step": None, "total": None, "fraction": 1.0 if done else None,
                               "elapsed": round(job["finished"] - job["started"], 3)
                               if job["finished"] and job["started"] else None, "eta": 0.0 if done else None},
                     queue_position=None, request=job["request"])
        d["images"] = [dict(im, url=f"{base_url}/api/v1/images/{im['id']}.png") for im in images]
        return d

    def image_path(self, image_id: int) -> Path:
        row = self.store.get_image(image_id)
        if row is None:
            raise APIError(404, f"no image {image_id}", "not_found", "image_id")
        path = self.config.outputs / row["file"]
        if not path.is_file():
            raise APIError(404, f"image {image_id} was recorded but its file is gone", "not_found", "image_id")
        return path

    def image_bytes(self, image_id: int) -> bytes:
        return self.image_path(image_id).read_bytes()


def _slug(text: str, limit: int = 40) -> str:
    s = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return s[:limit].rstrip("-") or "image"


def _clip(user: str | None) -> str | None:
    return None if user is None else str(user)[:256]
