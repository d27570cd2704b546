"""The API key check and the request-body cap.

With a key configured, every route needs it: `Authorization: Bearer KEY` (OpenAI clients), or HTTP Basic
with the key as password and any user name (A1111 clients such as `webuiapi` send Basic auth; browsers
opening `/docs` get a Basic prompt). The web UI asks for it on its login page.
"""

from __future__ import annotations

import base64
import binascii
import hmac

from fastapi import HTTPException, Request

from pintor.server.config import megabytes
from pintor.server.errors import APIError


class BodyTooLarge(HTTPException):
    """A request body grew past the cap while it was being read (bodies sent without a Content-Length)."""

    def __init__(self, limit: int):
        super().__init__(413, f"request body is larger than {megabytes(limit)}")


def presented_key(request: Request) -> str | None:
    """The key a request carries (Bearer token or Basic password), or None."""
    scheme, _, cred = request.headers.get("authorization", "").partition(" ")
    scheme, cred = scheme.lower(), cred.strip()
    if scheme == "bearer" and cred:
        return cred
    if scheme == "basic" and cred:
        try:
            _, _, password = base64.b64decode(cred, validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            return None
        return password or None
    return None


def key_matches(given: str | None, key: str) -> bool:
    # Constant-time comparison: response timing must not reveal how much of a guess was right.
    return given is not None and hmac.compare_digest(given.encode("utf-8"), key.encode("utf-8"))


def require_api_key(request: Request) -> None:
    """FastAPI dependency: passes when no key is configured or the request carries the right one."""
    key = request.app.state.service.config.api_key
    if not key:
        return
    given = presented_key(request)
    if key_matches(given, key):
        return
    docs = request.url.path in ("/docs", "/openapi.json") or request.url.path.startswith("/docs/")
    challenge = 'Basic realm="pintor", charset="UTF-8"' if docs else 'Bearer realm="pintor"'
    message = ("this server needs an API key: send 'Authorization: Bearer <key>'" if given is None
               else "the API key is not valid")
    raise APIError(401, message, "unauthorized", headers={"WWW-Authenticate": challenge})


class BodyLimitMiddleware:
    """Refuses request bodies over `max_bytes` before they are read (413), so an upload cannot fill memory.

    A declared Content-Length over the cap is refused at once; a body without one is counted as it streams.
    """

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            try:
                size = int(declared)
            except ValueError:
                size = -1
            if size < 0 or size > self.max_bytes:
                from fastapi.responses import JSONResponse

                from pintor.server.errors import body

                status, msg = ((400, "invalid Content-Length") if size < 0 else
                               (413, f"request body is {megabytes(size)}: at most {megabytes(self.max_bytes)}"))
                response = JSONResponse(body(scope.get("path", ""), status, msg, "too_large" if status == 413
                                             else "invalid_request_error"), status_code=status,
                                        headers={"Connection": "close"})
                return await response(scope, receive, send)
        received = 0

        async def limited():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        await self.app(scope, limited, send)
