"""Settings of one server process. Standard library only, so the CLI can build them without heavy imports."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

from pintor.request import Limits

# The server's bounds are tighter than the library's: a network client should not be able to ask for hours of work.
SERVER_LIMITS = Limits(max_size=2048, max_steps=200, max_n=8, max_prompt_chars=2000)
MAX_UPLOAD_BYTES = 20 * 1024 * 1024
# Inputs are resized to the output size anyway; 4096x4096 is plenty and bounds decode memory (~50 MB as RGB).
MAX_INPUT_PIXELS = 4096 * 4096


@dataclass
class ServerConfig:
    """Everything `create_app` needs.

    Args:
        models (`list[str]`): registry names or folders to load; the first is the default. Empty means
            `pintor-shapes`.
        host (`str`), port (`int`): where uvicorn listens (recorded for messages; `create_app` does not bind).
        api_key (`str`, *optional*): when set, every API route needs `Authorization: Bearer KEY` (or HTTP Basic
            with the key as password) and the UI asks for it at login.
        outputs (`Path`): folder of generated PNGs (and of uploaded inputs, under `inputs/`).
        db (`Path`, *optional*): the SQLite history; defaults to `outputs/pintor.db`.
        limits (`Limits`): bounds on sizes, steps, counts and prompt length.
        max_upload_bytes (`int`): largest accepted image upload, in bytes.
        max_input_pixels (`int`): largest accepted image upload, in pixels (decompression bombs).
        cors_origins (`list[str]`): origins allowed by CORS; empty (the default) means no CORS headers at all.
        ui (`bool`): mount the Gradio web UI at `/`.
        device, dtype, low_vram, lowest_vram, depth_estimator: passed to `pintor.load`.
    """

    models: list[str] = field(default_factory=list)
    host: str = "127.0.0.1"
    port: int = 7860
    api_key: str | None = None
    outputs: Path = Path("outputs")
    db: Path | None = None
    limits: Limits = SERVER_LIMITS
    max_upload_bytes: int = MAX_UPLOAD_BYTES
    max_input_pixels: int = MAX_INPUT_PIXELS
    cors_origins: list[str] = field(default_factory=list)
    ui: bool = True
    device: str | None = None
    dtype: str | None = None
    low_vram: bool = False
    lowest_vram: bool = False
    depth_estimator: str | None = None

    def __post_init__(self):
        self.outputs = Path(self.outputs)
        if self.db is None:
            self.db = self.outputs / "pintor.db"
        self.db = Path(self.db)

    @property
    def max_body_bytes(self) -> int:
        # An image and a mask, base64-encoded (4/3), plus room for the other fields.
        return 3 * self.max_upload_bytes + 1024 * 1024


def megabytes(n: float) -> str:
    """`20971520` -> `"20 MB"`, `50000` -> `"0.0477 MB"`: sizes in messages, in the unit of `--max-upload-mb`."""
    return f"{n / (1024 * 1024):.3g} MB"


def is_loopback(host: str) -> bool:
    """Whether `host` only accepts connections from this machine."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
