"""pintor: a text-to-image studio for the Kandinsky 2.x family.

```py
import pintor
images = pintor.load().generate("a red circle above a blue square", seed=0)
```
Heavy modules (torch, diffusers) are imported on first use, so `import pintor` and the CLI start fast.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["load", "Painter", "GenerationRequest", "Limits", "PintorError", "save_image", "read_metadata",
           "REGISTRY", "ModelSpec", "__version__"]


def __getattr__(name):
    if name in ("load", "Painter", "Result"):
        from pintor import painter

        return getattr(painter, name)
    if name in ("GenerationRequest", "Limits"):
        from pintor import request

        return getattr(request, name)
    if name == "PintorError":
        from pintor.errors import PintorError

        return PintorError
    if name in ("REGISTRY", "ModelSpec"):
        from pintor import registry

        return getattr(registry, name)
    if name == "read_metadata":
        from pintor.metadata import read_metadata

        return read_metadata
    raise AttributeError(f"module 'pintor' has no attribute {name!r}")


def save_image(image, path) -> None:
    """Saves an image returned by a `Painter` as PNG with its metadata chunks (A1111 `parameters` and `pintor`)."""
    import json

    from pintor.metadata import save_png

    raw = image.info.get("pintor")
    record = json.loads(raw) if raw else {"request": {}, "version": __version__}
    save_png(image, path, record)
