"""Turning user-given images (paths, PIL images, arrays) into pixels, with clear errors."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from pintor.errors import PintorError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
# Pillow's own guard warns at ~89M pixels; we refuse anything this large outright (decompression bombs).
MAX_PIXELS = 64 * 1024 * 1024


def is_image_item(item: Any) -> bool:
    """Whether a `mix` item is an image (a PIL image, an array, a Path, or a string naming an image file)."""
    if isinstance(item, Path):
        return True
    if isinstance(item, str):
        return item.lower().endswith(IMAGE_SUFFIXES) or (len(item) < 4096 and Path(item).is_file())
    return _is_pil(item) or hasattr(item, "__array__")


def _is_pil(x) -> bool:
    from PIL import Image

    return isinstance(x, Image.Image)


def load_image(x: Any, what: str = "image", mode: str = "RGB"):
    """Returns a PIL image in `mode` from a path, a PIL image or an HxW / HxWxC array.

    Args:
        x: the image.
        what (`str`): what the image is for, used in error messages ("mask", "depth map"...).
        mode (`str`): the Pillow mode to convert to ("RGB" or "L").

    Raises:
        `PintorError`: the file is missing, is not an image, is corrupt, or is implausibly large.
    """
    from PIL import Image

    if _is_pil(x):
        img = x
    elif isinstance(x, str | Path):
        path = Path(x)
        if not path.exists():
            raise PintorError(f"{what} file not found: {path}")
        if not path.is_file():
            raise PintorError(f"{what} path is not a file: {path}")
        try:
            with Image.open(path) as im:
                if im.width * im.height > MAX_PIXELS:
                    raise PintorError(f"{what} {path} is {im.width}x{im.height}: at most {MAX_PIXELS} pixels allowed")
                im.load()
                img = im.copy()
        except PintorError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise PintorError(f"{what} {path} is too large to decode safely") from None
        except (OSError, SyntaxError, ValueError) as e:
            raise PintorError(f"{what} {path} is not a readable image ({type(e).__name__}: {_first_line(e)})") from None
    elif hasattr(x, "__array__"):
        import numpy as np

        arr = np.asarray(x)
        if arr.dtype != np.uint8:
            if arr.size and (arr.min() < 0 or arr.max() > 1.0 + 1e-6):
                raise PintorError(f"{what} array of dtype {arr.dtype} must hold values in [0, 1] (or be uint8)")
            arr = (arr * 255).round().astype(np.uint8)
        if arr.ndim == 3 and arr.shape[-1] == 1:
            arr = arr[..., 0]
        if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] not in (3, 4)):
            raise PintorError(f"{what} array must be HxW, HxWx3 or HxWx4, got shape {arr.shape}")
        img = Image.fromarray(arr)
    else:
        raise PintorError(f"{what} must be a path, a PIL image or an array, got {type(x).__name__}")
    if img.width * img.height > MAX_PIXELS:
        raise PintorError(f"{what} is {img.width}x{img.height}: at most {MAX_PIXELS} pixels allowed")
    if img.mode == "RGBA" and mode == "RGB":
        # Composite on white so a transparent PNG looks as it does in a viewer.
        bg = Image.new("RGB", img.size, (255, 255, 255))
        bg.paste(img, mask=img.getchannel("A"))
        return bg
    return img.convert(mode)


def describe_image(x: Any) -> dict:
    """A JSON-ready record of an image input: its path when it has one, and a digest of its pixels."""
    if isinstance(x, str | Path) and not _is_pil(x):
        return {"path": str(Path(x).resolve())}
    try:
        img = load_image(x)
    except PintorError:
        return {"path": None}
    return {"path": None, "sha256": hashlib.sha256(img.tobytes()).hexdigest()[:16], "size": list(img.size)}


def _first_line(e: BaseException) -> str:
    s = str(e).strip().splitlines()
    return s[0] if s else ""
