"""What every backend shares: loading with clear errors, progress reporting, seeds, memory modes."""

from __future__ import annotations

import contextlib
import types
from collections.abc import Callable
from dataclasses import dataclass, field

from pintor.errors import ModelNotAvailableError, OutOfMemoryError

ProgressFn = Callable[[str, int, int], None]


class Interrupted(Exception):
    """Raised between denoising steps when a run is interrupted."""


@dataclass
class RunControl:
    """How a run reports progress and how it can be stopped between steps.

    Args:
        progress (`Callable[[str, int, int], None]`, *optional*): called with (stage, step, total) after each step.
        show_progress (`bool`): draw tqdm bars on stderr.
        should_stop (`Callable[[], bool]`, *optional*): polled between steps; True interrupts the run.
    """

    progress: ProgressFn | None = None
    show_progress: bool = True
    should_stop: Callable[[], bool] | None = None
    stages: list[str] = field(default_factory=list)


def attach_progress(pipe, stage: str, control: RunControl) -> None:
    """Routes a diffusers pipeline's step loop through our bar, callback and interrupt check.

    Every diffusers pipeline iterates its timesteps through `self.progress_bar(...)`; replacing that one
    method on the instance gives uniform progress and interruption for all of them, including those
    without `callback_on_step_end` (the Kandinsky ControlNet pipeline has none).
    """
    from tqdm.auto import tqdm

    def progress_bar(self, iterable=None, total=None):
        items = list(iterable) if iterable is not None else range(total)
        n = len(items)
        bar = tqdm(total=n, desc=stage, disable=not control.show_progress, leave=False, dynamic_ncols=True)

        def gen():
            try:
                for i, item in enumerate(items):
                    if control.should_stop is not None and control.should_stop():
                        raise Interrupted(f"interrupted during {stage} at step {i}/{n}")
                    yield item
                    bar.update(1)
                    if control.progress is not None:
                        control.progress(stage, i + 1, n)
            finally:
                bar.close()

        if iterable is None:
            # Pipelines that use `with self.progress_bar(total=...) as bar: bar.update()`.
            return _ManualBar(bar, stage, n, control)
        return gen()

    pipe.progress_bar = types.MethodType(progress_bar, pipe)


class _ManualBar:
    def __init__(self, bar, stage, total, control):
        self.bar, self.stage, self.total, self.control, self.i = bar, stage, total, control, 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.bar.close()

    def update(self, k=1):
        self.i += k
        self.bar.update(k)
        if self.control.progress is not None:
            self.control.progress(self.stage, self.i, self.total)
        if self.control.should_stop is not None and self.control.should_stop():
            raise Interrupted(f"interrupted during {self.stage} at step {self.i}/{self.total}")


def generators(seed: int, n: int):
    """One CPU generator per image, seeded `seed + i`: image i is reproducible on its own, on any device."""
    import torch

    return [torch.Generator("cpu").manual_seed(seed + i) for i in range(n)]


def dtype_kwargs(dtype) -> dict:
    """`dtype=` on diffusers that has it (it deprecated `torch_dtype=`), `torch_dtype=` on older ones."""
    import diffusers.utils.deprecation_utils as du

    return {"dtype": dtype} if hasattr(du, "_resolve_dtype") else {"torch_dtype": dtype}


def from_pretrained(cls, source: str, what: str, model_name: str, **kwargs):
    """`cls.from_pretrained(source, ...)` with safetensors only, and one clear line when weights are missing."""
    from pathlib import Path

    kwargs.setdefault("use_safetensors", True)
    is_local = Path(source).exists()
    try:
        return cls.from_pretrained(source, **kwargs)
    except (OSError, ValueError, EnvironmentError) as e:  # noqa: UP024 - hub errors subclass OSError
        if is_local:
            raise ModelNotAvailableError(
                f"cannot load the {what} of {model_name} from {source}: {_first_line(e)}") from None
        raise ModelNotAvailableError(
            f"weights of {model_name} ({source}) are not on disk and the hub can't be reached: run "
            f"`pintor download {model_name}` on a connected machine, or point HF_HOME at a cache that has them "
            f"(set HF_HUB_OFFLINE=1 to skip the network)") from None


def _first_line(e: BaseException) -> str:
    s = str(e).strip().splitlines()
    return s[0] if s else type(e).__name__


@contextlib.contextmanager
def oom_as_error():
    """Turns an out-of-memory error into a one-line `OutOfMemoryError` that suggests the memory modes."""
    import torch

    try:
        yield
    except torch.OutOfMemoryError:
        raise OutOfMemoryError("out of memory on the device: try --low-vram (model offload, attention slicing), "
                               "--lowest-vram (sequential offload), a smaller size or fewer images") from None
    except RuntimeError as e:
        if "out of memory" in str(e).lower():
            raise OutOfMemoryError("out of memory: try --low-vram or --lowest-vram, a smaller size or fewer images") from None
        raise


def apply_memory_mode(pipe, device: str, low_vram: bool, lowest_vram: bool) -> None:
    """Model offload (+ attention slicing) or sequential offload on accelerators; nothing to do on CPU."""
    if device == "cpu" or not (low_vram or lowest_vram):
        return
    if lowest_vram:
        pipe.enable_sequential_cpu_offload(device=device)
    else:
        pipe.enable_model_cpu_offload(device=device)
    if hasattr(pipe, "enable_attention_slicing"):
        pipe.enable_attention_slicing()
