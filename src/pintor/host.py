"""What machine and library versions a measurement ran on, for the JSON that benchmarks, evaluations and
training runs write: a step time or an image time means little without the device it was taken on."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def host_info(device: str) -> dict:
    """The machine as a JSON-able dict: platform, CPU count, torch threads, `device` and its `device_name`
    (the GPU's name and memory on CUDA, the processor's model name otherwise)."""
    import torch

    out = {"platform": platform.platform(), "machine": platform.machine(), "python": platform.python_version(),
           "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
           "torch_threads": torch.get_num_threads(), "device": device}
    if device.startswith("cuda"):
        props = torch.cuda.get_device_properties(torch.device(device))
        out.update(device_name=props.name, device_memory_gb=round(props.total_memory / 2**30, 1),
                   cuda=torch.version.cuda, sm_count=props.multi_processor_count)
    else:
        out["device_name"] = cpu_name()
    return out


def cpu_name() -> str:
    """`"CPU <model name>"` from /proc/cpuinfo, else what `platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return "CPU " + line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "CPU " + (platform.processor() or platform.machine())


def versions() -> dict:
    """Versions of pintor and the libraries that compute its results."""
    import diffusers
    import torch
    import transformers

    import pintor

    return {"pintor": pintor.__version__, "torch": torch.__version__, "diffusers": diffusers.__version__,
            "transformers": transformers.__version__}
