"""Parameters recorded in every PNG: A1111's `parameters` text chunk and pintor's own JSON chunk."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from pintor.errors import PintorError

PINTOR_KEY = "pintor"
A1111_KEY = "parameters"


def a1111_parameters(record: dict[str, Any]) -> str:
    """Formats a record as A1111's `parameters` text: prompt, `Negative prompt:`, then key: value pairs."""
    r = record["request"]
    lines = [r.get("prompt") or _items_text(r)]
    if r.get("negative_prompt"):
        lines.append(f"Negative prompt: {r['negative_prompt']}")
    pairs = [
        ("Steps", r.get("steps")),
        ("Sampler", r.get("scheduler") or record.get("scheduler")),
        ("CFG scale", r.get("guidance_scale")),
        ("Seed", record.get("seed")),
        ("Size", f"{r.get('width')}x{r.get('height')}"),
        ("Model", record.get("model") or r.get("model")),
        ("Prior steps", r.get("prior_steps")),
        ("Prior CFG scale", r.get("prior_guidance_scale")),
        ("Mode", r.get("mode")),
        ("Candidates", r.get("candidates") if (r.get("candidates") or 1) > 1 else None),
        ("Autoguidance", r.get("autoguidance_scale") or None),
    ]
    if r.get("mode") == "img2img":
        pairs.append(("Denoising strength", r.get("strength")))
    pairs.append(("Version", f"pintor {record.get('version')}"))
    lines.append(", ".join(f"{k}: {v}" for k, v in pairs if v is not None))
    return "\n".join(lines)


def _items_text(r: dict) -> str:
    items = r.get("items") or []
    if not items:
        return ""
    parts = []
    for it, w in zip(items, r.get("weights") or [], strict=False):
        name = it if isinstance(it, str) else Path((it.get("image") or {}).get("path") or "<image>").name
        parts.append(f"{name}:{w}")
    return "mix " + " | ".join(parts)


def save_png(image, path: str | Path, record: dict[str, Any]) -> Path:
    """Writes `image` to `path` atomically (temp file + rename) with both metadata chunks."""
    from PIL.PngImagePlugin import PngInfo

    path = Path(path)
    info = PngInfo()
    info.add_text(A1111_KEY, a1111_parameters(record))
    info.add_text(PINTOR_KEY, json.dumps(record, sort_keys=True))
    fd, tmp = tempfile.mkstemp(prefix=".pintor-", suffix=".png", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            image.save(f, format="PNG", pnginfo=info)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_metadata(path: str | Path) -> dict[str, Any]:
    """Returns `{"parameters": str | None, "pintor": dict | None}` from a PNG written by pintor (or A1111)."""
    from PIL import Image

    from pintor.images import load_image

    load_image(path, what="image")  # one clear error for missing or corrupt files
    with Image.open(path) as im:
        text = dict(getattr(im, "text", {}) or {})
    raw = text.get(PINTOR_KEY)
    record = None
    if raw is not None:
        try:
            record = json.loads(raw)
        except json.JSONDecodeError:
            raise PintorError(f"{path} has a corrupt pintor metadata chunk") from None
    return {"parameters": text.get(A1111_KEY), "pintor": record}
