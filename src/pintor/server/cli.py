"""`pintor serve`. Only argparse and the standard library at import time, so the `pintor` command starts fast:
FastAPI, Gradio and torch load inside `run`."""

from __future__ import annotations

import argparse
import os
import sys


def add_parser(sub) -> argparse.ArgumentParser:
    """Registers `serve` on the `pintor` command's subparsers."""
    p = sub.add_parser("serve", help="HTTP API (OpenAI- and A1111-compatible), job queue, history and web UI",
                       description="Serve models over HTTP: OpenAI-compatible /v1, A1111-compatible /sdapi/v1, "
                                   "native /api/v1, API docs at /docs and a web UI at /.")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1; any other address needs an API key)")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    p.add_argument("--model", "-m", action="append", default=None, metavar="NAME",
                   help="registry name or local folder to serve; repeat for several (the first is the default; "
                        "default: pintor-shapes)")
    p.add_argument("--api-key", default=None,
                   help="require this key on every route (default: $PINTOR_API_KEY; required off loopback)")
    p.add_argument("--outputs", default="outputs", help="folder of generated images (default: outputs)")
    p.add_argument("--db", default=None, help="SQLite history (default: OUTPUTS/pintor.db)")
    p.add_argument("--device", default=None, help="cuda, mps or cpu (default: the best available)")
    p.add_argument("--dtype", default=None, help="float32, float16 or bfloat16")
    p.add_argument("--low-vram", action="store_true", help="model CPU offload and attention slicing")
    p.add_argument("--lowest-vram", action="store_true", help="sequential CPU offload")
    p.add_argument("--depth-model", default=None, help="hub id or folder of the depth estimator (Control tab)")
    lim = p.add_argument_group("limits (on by default)")
    lim.add_argument("--max-size", type=int, default=2048, help="largest width and height (default 2048)")
    lim.add_argument("--max-n", type=int, default=8, help="most images per request (default 8)")
    lim.add_argument("--max-steps", type=int, default=200, help="most denoising steps (default 200)")
    lim.add_argument("--max-prompt-chars", type=int, default=2000, help="longest prompt (default 2000)")
    lim.add_argument("--max-upload-mb", type=float, default=20, help="largest image upload in MB (default 20)")
    p.add_argument("--cors-origin", action="append", default=[], metavar="ORIGIN",
                   help="allow cross-origin requests from ORIGIN (repeatable; default: CORS off)")
    p.add_argument("--no-ui", action="store_true", help="serve the APIs only, without the web UI")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    return p


def config_from_args(args):
    """Checks the options and builds the `ServerConfig` (raises `PintorError` with one line on bad input)."""
    from pathlib import Path

    from pintor.errors import PintorError
    from pintor.request import Limits
    from pintor.server.config import ServerConfig, is_loopback

    key = args.api_key or os.environ.get("PINTOR_API_KEY") or None
    if not is_loopback(args.host) and not key:
        raise PintorError(f"refusing to listen on {args.host} without an API key: pass --api-key or set "
                          "PINTOR_API_KEY (or bind 127.0.0.1)")
    if not 0 <= args.port <= 65535:
        raise PintorError(f"--port must be from 0 to 65535, got {args.port}")
    for name in ("max_size", "max_n", "max_steps", "max_prompt_chars"):
        if getattr(args, name) < 1:
            raise PintorError(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    if args.max_size < 64:
        raise PintorError(f"--max-size must be at least 64, got {args.max_size}")
    if args.max_upload_mb <= 0:
        raise PintorError(f"--max-upload-mb must be positive, got {args.max_upload_mb}")
    limits = Limits(max_size=args.max_size, max_steps=args.max_steps, max_n=args.max_n,
                    max_prompt_chars=args.max_prompt_chars)
    return ServerConfig(models=list(args.model or []), host=args.host, port=args.port, api_key=key,
                        outputs=Path(args.outputs), db=Path(args.db) if args.db else None, limits=limits,
                        max_upload_bytes=int(args.max_upload_mb * 1024 * 1024), cors_origins=list(args.cors_origin),
                        ui=not args.no_ui, device=args.device, dtype=args.dtype, low_vram=args.low_vram,
                        lowest_vram=args.lowest_vram, depth_estimator=args.depth_model)


def run(args) -> int:
    """Loads the models, then serves until interrupted. Returns the exit code."""
    import logging

    config = config_from_args(args)
    _check_port(config.host, config.port)  # before minutes of model loading, not after
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from pintor.cli import _quiet_libraries

    _quiet_libraries()
    import uvicorn

    from pintor.server.app import create_app

    app = create_app(config)
    service = app.state.service if hasattr(app, "state") else None
    shown = "localhost" if config.host in ("127.0.0.1", "::1") else config.host
    print(f"pintor: serving {', '.join(service.painters) if service else ''} on http://{shown}:{config.port} "
          f"(UI /, API docs /docs; history {config.db})", file=sys.stderr, flush=True)
    uvicorn.run(app, host=config.host, port=config.port, log_level=args.log_level, access_log=False,
                timeout_graceful_shutdown=5)
    return 0


def _check_port(host: str, port: int) -> None:
    import socket

    from pintor.errors import PintorError

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host.strip("[]"), port))
        except OSError as e:
            raise PintorError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
