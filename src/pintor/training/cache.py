"""Encodings of a training pool kept beside a trainer's checkpoints, so that `--resume` does not encode it again.

Encoding a pool with the frozen MoVQ and CLIP image tower (and sampling the prior for each caption) can take
longer than a stretch of training: 40 000 shapes-world images take about 20 minutes on a 2-core CPU. The
trainers keep what they compute in `OUT/cache/`, keyed by a digest of everything it depends on (the pool's
pixels and captions, the encoder's weights, the device and settings), and read it back only when that digest
matches, so a changed pool or encoder is encoded afresh rather than trained on stale latents.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

import torch


def fingerprint(*parts) -> str:
    """A hex digest of tensors, modules (their state dicts), and plain values (by `repr`), in order.

    Tensors count by dtype, shape and bytes, so a pool or weights that differ in one pixel or one bit give
    another digest; anything else counts by its `repr` (use JSON-able settings: strings, numbers, lists).
    """
    h = hashlib.blake2b(digest_size=16)
    for part in parts:
        if isinstance(part, torch.nn.Module):
            for name, value in sorted(part.state_dict().items()):
                h.update(name.encode())
                _update(h, value)
        elif isinstance(part, torch.Tensor):
            _update(h, part)
        else:
            h.update(repr(part).encode())
        h.update(b"\0")  # keeps ("ab", "c") apart from ("a", "bc")
    return h.hexdigest()


def _update(h, t: torch.Tensor) -> None:
    t = t.detach().to("cpu").contiguous()
    h.update(f"{t.dtype}{tuple(t.shape)}".encode())
    if t.numel():
        h.update(t.reshape(-1).view(torch.uint8).numpy().data)


def load_or_compute(path: str | Path | None, key: str, compute: Callable[[], dict[str, torch.Tensor]]
                    ) -> dict[str, torch.Tensor]:
    """The tensors stored at `path` under `key`, or `compute()`'s, which are then stored there.

    Args:
        path (`str` or `Path`, *optional*): a safetensors file; `None` computes without storing.
        key (`str`): the digest (`fingerprint`) of what the tensors depend on; a file with another key is
            computed again and overwritten.
        compute: returns the tensors by name.
    """
    if path is None:
        return compute()
    path = Path(path)
    if path.is_file():
        from safetensors import safe_open
        from safetensors.torch import load_file

        try:
            with safe_open(str(path), "pt") as f:
                stored = (f.metadata() or {}).get("key")
        except Exception:  # a file cut short by a crash: compute it again
            stored = None
        if stored == key:
            return load_file(path)
    out = compute()
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.detach().cpu().contiguous() for k, v in out.items()}, str(tmp), metadata={"key": key})
    os.replace(tmp, path)  # a crash while writing leaves the old file or none, never half of one
    return out


def processor_settings(image_processor) -> str:
    """The image processor's settings as JSON, for `fingerprint`."""
    to_dict = getattr(image_processor, "to_dict", None)
    return json.dumps(to_dict() if to_dict else repr(image_processor), sort_keys=True, default=str)
