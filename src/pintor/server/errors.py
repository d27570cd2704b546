"""HTTP errors: every client error is a 4xx JSON body with one clear message; nothing else ever reaches a client.

Routes under `/v1/` answer in OpenAI's shape, `{"error": {"message", "type", "param", "code"}}`; all other
routes answer `{"detail": message, "error": type}` (FastAPI's `detail`, plus A1111's `error`).
"""

from __future__ import annotations

import logging

from pintor.errors import ModelNotAvailableError, ModeNotSupportedError, OutOfMemoryError, PintorError

log = logging.getLogger("pintor.server")


class APIError(Exception):
    """An error with an HTTP status and a message meant for the client.

    Args:
        status (`int`): the HTTP status code.
        message (`str`): one line saying what was wrong and what is allowed.
        kind (`str`): a short machine-readable type (`invalid_request_error`, `not_found`...).
        param (`str`, *optional*): the request field at fault.
    """

    def __init__(self, status: int, message: str, kind: str = "invalid_request_error", param: str | None = None,
                 headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.kind, self.param, self.headers = status, message, kind, param, headers


def from_pintor_error(e: PintorError, param: str | None = None) -> APIError:
    """The HTTP form of a library error: bad input is 400; a server that cannot run the request is 503."""
    if isinstance(e, OutOfMemoryError):
        return APIError(503, str(e), "out_of_memory")
    if isinstance(e, ModelNotAvailableError):
        return APIError(503, str(e), "model_not_available")
    if isinstance(e, ModeNotSupportedError):
        return APIError(400, str(e), "mode_not_supported", param)
    return APIError(400, str(e), "invalid_request_error", param)


def body(path: str, status: int, message: str, kind: str, param: str | None = None) -> dict:
    if path.startswith("/v1/"):
        return {"error": {"message": message, "type": kind, "param": param, "code": None}}
    return {"detail": message, "error": kind}


def install(app) -> None:
    """Adds the exception handlers that turn every failure into JSON."""
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException

    def respond(request, status, message, kind, param=None, headers=None):
        return JSONResponse(body(request.url.path, status, message, kind, param), status_code=status, headers=headers)

    @app.exception_handler(APIError)
    async def _api_error(request, exc: APIError):
        return respond(request, exc.status, exc.message, exc.kind, exc.param, exc.headers)

    @app.exception_handler(PintorError)
    async def _pintor_error(request, exc: PintorError):
        e = from_pintor_error(exc)
        return respond(request, e.status, e.message, e.kind)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request, exc: RequestValidationError):
        errors = exc.errors()
        first = errors[0] if errors else {}
        loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path", "form")]
        field = ".".join(loc) or None
        msg = first.get("msg", "invalid request")
        message = f"{field}: {msg}" if field else msg
        if len(errors) > 1:
            message += f" (and {len(errors) - 1} more problem(s))"
        return respond(request, 422, message, "invalid_request_error", field)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request, exc: StarletteHTTPException):
        kind = {401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
                413: "too_large"}.get(exc.status_code, "http_error")
        message = exc.detail if isinstance(exc.detail, str) else "request failed"
        return respond(request, exc.status_code, message, kind, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request, exc: Exception):
        # Never a traceback to the client: it is logged here, with the route, for whoever runs the server.
        from pintor.server.security import BodyTooLarge

        if isinstance(exc, BodyTooLarge):
            return respond(request, 413, str(exc), "too_large")
        log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return respond(request, 500, "internal server error: see the server log", "server_error")
