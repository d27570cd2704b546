"""Choosing the device and dtype."""

from __future__ import annotations

from pintor.errors import PintorError

DTYPES = ("float32", "float16", "bfloat16")


def default_device() -> str:
    """cuda, then mps, then cpu."""
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def resolve(device: str | None, dtype: str | None):
    """Returns `(device, torch.dtype)`: fp16 on GPUs (bf16 where asked), fp32 on CPU."""
    import torch

    device = device or default_device()
    kind = device.split(":")[0]
    if kind not in ("cpu", "cuda", "mps", "xpu"):
        raise PintorError(f"unknown device {device!r}: expected cpu, cuda[:N], mps or xpu")
    if kind == "cuda" and not torch.cuda.is_available():
        raise PintorError("device 'cuda' was asked for but torch sees no CUDA GPU: use --device cpu")
    if dtype is None:
        dtype = "float32" if kind == "cpu" else "float16"
    aliases = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16", "half": "float16"}
    dtype = aliases.get(dtype, dtype)
    if dtype not in DTYPES:
        raise PintorError(f"unknown dtype {dtype!r}: expected one of {', '.join(DTYPES)} (or fp32/fp16/bf16)")
    return device, getattr(torch, dtype)
