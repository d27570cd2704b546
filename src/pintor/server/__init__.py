"""`pintor serve`: an HTTP server (OpenAI-, A1111-compatible and native APIs), a job queue, a SQLite history and a
Gradio web UI, all over one loaded `Painter` per model.

Importing this package is cheap: FastAPI, Gradio and torch load only when the server is built (`create_app`).
"""

from __future__ import annotations

__all__ = ["ServerConfig", "create_app"]


def __getattr__(name):
    if name == "ServerConfig":
        from pintor.server.config import ServerConfig

        return ServerConfig
    if name == "create_app":
        from pintor.server.app import create_app

        return create_app
    raise AttributeError(f"module 'pintor.server' has no attribute {name!r}")
