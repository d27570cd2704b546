"""Turning what clients upload (base64 strings, multipart files) into images, safely.

Bytes are capped before anything is decoded; the header's pixel count is checked before any pixel is
(decompression bombs); then `pintor.images.load_image` converts with the library's own guard. Accepted
inputs are stored once, by content, under `outputs/inputs/`, so every recorded request can be re-run.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import re
from pathlib import Path

from pintor.errors import PintorError
from pintor.server.config import megabytes
from pintor.server.errors import APIError

_DATA_URL = re.compile(r"^data:[\w/+.-]*;base64,", re.IGNORECASE)
_SIZE = re.compile(r"^\s*(\d{1,5})\s*[xX×]\s*(\d{1,5})\s*$")


def b64_bytes(text: str, what: str, max_bytes: int) -> bytes:
    """Decodes a base64 string (optionally a `data:` URL), refusing more than `max_bytes` before decoding."""
    if not isinstance(text, str) or not text.strip():
        raise APIError(400, f"{what} is empty: expected a base64-encoded PNG, JPEG or WebP", param=what)
    text = _DATA_URL.sub("", text.strip(), count=1)
    if len(text) * 3 // 4 > max_bytes:
        raise APIError(413, f"{what} is about {megabytes(len(text) * 3 / 4)}: at most {megabytes(max_bytes)}",
                       "too_large", what)
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise APIError(400, f"{what} is not valid base64", param=what) from None


def decode_image(data: bytes, what: str, *, max_bytes: int, max_pixels: int, mode: str = "RGB"):
    """Returns a PIL image in `mode` from uploaded bytes, or raises a 4xx `APIError` saying what was wrong."""
    from PIL import Image

    from pintor.images import load_image

    if not data:
        raise APIError(400, f"{what} is empty", param=what)
    if len(data) > max_bytes:
        raise APIError(413, f"{what} is {megabytes(len(data))}: at most {megabytes(max_bytes)}",
                       "too_large", what)
    try:
        im = Image.open(io.BytesIO(data))  # reads the header only
        if im.width * im.height > max_pixels:
            raise APIError(413, f"{what} is {im.width}x{im.height} pixels: at most {max_pixels} pixels "
                                f"(about {int(max_pixels ** 0.5)}x{int(max_pixels ** 0.5)})", "too_large", what)
        return load_image(im, what, mode=mode)
    except APIError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise APIError(413, f"{what} is too large to decode safely", "too_large", what) from None
    except PintorError as e:
        raise APIError(400, str(e), param=what) from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        # Unknown format, truncated or corrupt data: say so, without echoing the bytes.
        kind = "not a readable image" if isinstance(e, Image.UnidentifiedImageError) else "a corrupt image"
        raise APIError(400, f"{what} is {kind}: expected a PNG, JPEG or WebP file", param=what) from None


def parse_size(size: str | None) -> tuple[int | None, int | None]:
    """`"512x768"` -> (512, 768); `None`, `""` and `"auto"` mean the model's default size."""
    if size is None or not str(size).strip() or str(size).strip().lower() == "auto":
        return None, None
    m = _SIZE.match(str(size))
    if not m:
        raise APIError(400, f"size must be WIDTHxHEIGHT (like 512x512) or 'auto', got {str(size)[:40]!r}",
                       param="size")
    return int(m.group(1)), int(m.group(2))


def save_input(image, folder: Path) -> Path:
    """Stores an accepted input image once, named by the hash of its pixels; returns its path."""
    import os
    import tempfile

    folder.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256(image.mode.encode() + repr(image.size).encode() + image.tobytes()).hexdigest()[:24]
    path = folder / f"{digest}.png"
    if not path.exists():
        # Temp file + rename, so a concurrent identical upload or a crash never leaves a half-written input.
        fd, tmp = tempfile.mkstemp(prefix=".pintor-", suffix=".png", dir=folder)
        try:
            with os.fdopen(fd, "wb") as f:
                image.save(f, format="PNG")
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    return path.resolve()
