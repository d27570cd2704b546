"""The job queue: FIFO, one worker thread, one job on the device at a time.

A job is `queued`, `running`, `done`, `failed` or `cancelled`. It reports progress as step and total over all
its denoising loops (prior, then decoder) with an ETA. A queued job can be cancelled; a running one is
interrupted between steps (the library polls `RunControl.should_stop`). Every state change is written to the
`Store` before anyone is told about it.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pintor.errors import ModelNotAvailableError, ModeNotSupportedError, OutOfMemoryError, PintorError
from pintor.request import GenerationRequest

log = logging.getLogger("pintor.server")

STATES = ("queued", "running", "done", "failed", "cancelled")
FINISHED = ("done", "failed", "cancelled")
# How many finished jobs stay in memory for fast polling; older ones are read back from the store.
KEEP_FINISHED = 500


@dataclass
class Job:
    """One request on its way through the queue.

    `request` is already prepared by the model (validated, seed drawn, defaults filled), so what is recorded
    at submission is exactly what runs.
    """

    id: str
    request: GenerationRequest
    model: str
    api: str
    user: str | None = None
    rerun_of: str | None = None
    seq: int = 0
    created: float = field(default_factory=time.time)
    state: str = "queued"
    started: float | None = None
    finished: float | None = None
    error: str | None = None
    error_type: str | None = None
    stage: str | None = None
    step: int = 0
    total: int = 0
    images: list[dict] = field(default_factory=list)
    cancel_requested: bool = False
    version: int = 0  # bumped on every change; progress streams poll it
    _base: int = 0
    _stage_total: int = 0
    _stage_step: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _done: threading.Event = field(default_factory=threading.Event, repr=False)
    _waiters: list = field(default_factory=list, repr=False)

    @staticmethod
    def new_id() -> str:
        return uuid.uuid4().hex[:12]

    # -- progress ----------------------------------------------------------------------------------------------
    def on_progress(self, stage: str, step: int, total: int) -> None:
        """`RunControl.progress`: folds each loop's (step, total) into one count over the whole job."""
        if stage != self.stage or step <= self._stage_step:
            # A new loop (the decoder after the prior, or the next prior run of a mix): bank the last one.
            self._base += self._stage_total if self.stage is not None else 0
        self.stage, self._stage_step, self._stage_total = stage, step, total
        self.step = self._base + step
        self.total = max(self.total, self._base + total)
        self.version += 1

    def progress(self) -> dict[str, Any]:
        """`{stage, step, total, fraction, elapsed, eta}` (seconds; `eta` is None until a step has run)."""
        now = time.time()
        elapsed = (self.finished or now) - self.started if self.started else 0.0
        total = max(self.total, 1)
        fraction = 1.0 if self.state == "done" else min(self.step / total, 1.0)
        eta = None
        if self.state == "running" and self.step > 0:
            eta = round(elapsed / self.step * max(total - self.step, 0), 2)
        elif self.state == "done":
            eta = 0.0
        return {"stage": self.stage, "step": self.step, "total": self.total, "fraction": round(fraction, 4),
                "elapsed": round(elapsed, 3), "eta": eta}

    @property
    def is_finished(self) -> bool:
        return self.state in FINISHED

    def wait(self, timeout: float | None = None) -> bool:
        """Blocks a thread until the job has finished or `timeout` passed; returns whether it finished."""
        return self._done.wait(timeout)


def expected_steps(req: GenerationRequest, family: str) -> int:
    """The number of denoising steps a prepared request will report, for the progress total."""
    decoder = req.steps or 0
    if req.mode == "img2img":
        decoder = int(decoder * req.strength)
    if not family.startswith("kandinsky"):
        return decoder
    prior_runs = 1
    if req.mode in ("mix", "variations"):
        # `interpolate` runs the prior once per text item and once more for the negative embedding.
        prior_runs = sum(isinstance(it, str) for it in req.items) + 1
    return decoder + (req.prior_steps or 0) * prior_runs


class JobQueue:
    """FIFO queue with a single worker thread.

    Args:
        runner (`Callable[[Job], list[dict]]`): runs a job on the device and returns its recorded images
            (rows of the store's `images` table). It raises `Interrupted` when the job's `should_stop` fires.
        store (`Store`): where every state change is written.
    """

    def __init__(self, runner: Callable[[Job], list[dict]], store):
        self.runner, self.store = runner, store
        self._queue: collections.deque[Job] = collections.deque()
        self._jobs: collections.OrderedDict[str, Job] = collections.OrderedDict()
        self._cond = threading.Condition()
        self._current: Job | None = None
        self._stopping = False
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is None:
            self._stopping = False
            self._thread = threading.Thread(target=self._work, name="pintor-worker", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Interrupts the running job, cancels the queued ones and joins the worker."""
        with self._cond:
            self._stopping = True
            if self._current is not None:
                self._current.cancel_requested = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        for job in list(self._queue):
            self._finish(job, "cancelled", "the server shut down before this job ran", "cancelled")
        self._queue.clear()

    # -- submitting and looking up -----------------------------------------------------------------------------
    def submit(self, job: Job) -> Job:
        """Records a job and appends it to the queue; returns it."""
        with self._cond:
            if self._stopping:
                raise PintorError("the server is shutting down: no new jobs are accepted")
            # Inserting under the lock keeps the store's sequence numbers in queue order.
            job.seq = self.store.add_job(job.id, api=job.api, user=job.user, request=job.request.to_json(),
                                         created=job.created, rerun_of=job.rerun_of)
            self._jobs[job.id] = job
            self._queue.append(job)
            self._trim()
            self._cond.notify_all()
        return job

    def get(self, job_id: str) -> Job | None:
        """The in-memory job (recent or active), or None (the store may still know it)."""
        return self._jobs.get(job_id)

    @property
    def current(self) -> Job | None:
        return self._current

    def queued(self) -> list[Job]:
        with self._cond:
            return list(self._queue)

    def position(self, job: Job) -> int | None:
        """0 for the running job, 1.. for queued jobs in order, None when finished."""
        with self._cond:
            if job is self._current:
                return 0
            for i, j in enumerate(self._queue):
                if j is job:
                    return i + 1
        return None

    def cancel(self, job: Job) -> bool:
        """Cancels a queued job, or asks a running one to stop between steps. False if it already finished."""
        with self._cond:
            if job.is_finished:
                return False
            if job.state == "queued":
                try:
                    self._queue.remove(job)
                except ValueError:
                    pass
                else:
                    self._finish(job, "cancelled", "cancelled before it started", "cancelled")
                    return True
            job.cancel_requested = True
            job.version += 1
            return True

    def interrupt(self) -> Job | None:
        """Interrupts the running job (A1111's `/interrupt`); returns it, or None if idle."""
        job = self._current
        if job is not None:
            self.cancel(job)
        return job

    async def wait(self, job: Job) -> Job:
        """Waits, without blocking the event loop, until the job has finished."""
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        with job._lock:
            if job._done.is_set():
                return job
            job._waiters.append((loop, fut))
        await fut
        return job

    # -- the worker --------------------------------------------------------------------------------------------
    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._stopping:
                    self._cond.wait()
                if self._stopping:
                    return
                job = self._queue.popleft()
                self._current = job
            try:
                self._run(job)
            finally:
                with self._cond:
                    self._current = None

    def _run(self, job: Job) -> None:
        from pintor.backends.common import Interrupted

        job.started = time.time()
        job.state = "running"
        job.version += 1
        try:
            self.store.update_job(job.id, state="running", started=job.started)
            if job.cancel_requested:
                raise Interrupted("cancelled before it started")
            job.images = self.runner(job)
        except Interrupted:
            why = "the server shut down during this job" if self._stopping else "interrupted"
            self._finish(job, "cancelled", f"{why} at step {job.step}/{job.total}", "cancelled")
        except PintorError as e:
            self._finish(job, "failed", str(e), error_type(e))
        except Exception:  # a bug or a library failure: the client gets a clean message, the log the traceback
            log.exception("job %s failed", job.id)
            self._finish(job, "failed", "internal error while generating: see the server log", "internal")
        else:
            self._finish(job, "done", None, None)

    def _finish(self, job: Job, state: str, error: str | None, kind: str | None) -> None:
        job.state, job.error, job.error_type = state, error, kind
        if state == "done":
            job.step = job.total  # loops the library skipped (cached embeddings) count as run
        job.finished = time.time()
        job.version += 1
        try:
            self.store.update_job(job.id, state=state, finished=job.finished, error=error, error_type=kind)
        except Exception:  # noqa: BLE001 - the waiters must still be released
            log.exception("could not record the end of job %s", job.id)
        with job._lock:
            job._done.set()
            waiters, job._waiters = job._waiters, []
        for loop, fut in waiters:
            try:
                loop.call_soon_threadsafe(_resolve, fut)
            except RuntimeError:  # that event loop has closed; nobody is waiting any more
                pass

    def _trim(self) -> None:
        finished = [k for k, j in self._jobs.items() if j.is_finished]
        for k in finished[: max(0, len(finished) - KEEP_FINISHED)]:
            del self._jobs[k]


def _resolve(fut: asyncio.Future) -> None:
    if not fut.done():
        fut.set_result(None)


def error_type(e: PintorError) -> str:
    """A short kind for a library error, which the HTTP layers map to a status code."""
    if isinstance(e, OutOfMemoryError):
        return "out_of_memory"
    if isinstance(e, ModelNotAvailableError):
        return "model_not_available"
    if isinstance(e, ModeNotSupportedError):
        return "mode_not_supported"
    return "invalid_request"
