"""``BodyLimitMiddleware``: request bodies above the upload limit get 413, bodies that stall get 408."""

from __future__ import annotations

import asyncio
import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import ServiceError

__all__ = ["BodyLimitMiddleware"]


class _BodyTooLargeError(ServiceError):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body is larger than the limit of {_mib(limit)} (--max-upload-mb)")


def _mib(n: int) -> str:
    return f"{n / (1024 * 1024):g} MiB"


class _BodyTimeoutError(ServiceError):
    def __init__(self, timeout: float) -> None:
        super().__init__(408, f"the request body stalled: no data for {timeout:g} s (--body-timeout)")


class BodyLimitMiddleware:
    """Refuse request bodies above ``max_bytes`` (by ``Content-Length`` before reading, else while reading) and
    bodies that stall for more than ``timeout_s`` between two chunks (408; slow clients holding a request)."""

    def __init__(self, app: ASGIApp, max_bytes: int, timeout_s: float | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers") or ()).get(b"content-length")
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                await _send_json(send, 400, f"bad Content-Length header {length.decode('latin-1')!r}")
                return
            if declared > self.max_bytes:
                await _send_json(send, 413, str(_BodyTooLargeError(self.max_bytes)))
                return
        received = 0
        started = False
        body_done = False

        async def _receive() -> Message:
            nonlocal received, body_done
            if body_done or self.timeout_s is None:  # after the body: waiting for a disconnect, no deadline
                message = await receive()
            else:
                try:
                    message = await asyncio.wait_for(receive(), self.timeout_s)
                except TimeoutError as err:
                    raise _BodyTimeoutError(self.timeout_s) from err
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                body_done = not message.get("more_body", False)
                if received > self.max_bytes:
                    raise _BodyTooLargeError(self.max_bytes)
            return message

        async def _send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, _receive, _send)
        except (_BodyTooLargeError, _BodyTimeoutError) as err:  # raised where no handler rendered it
            if started:
                raise
            await _send_json(send, err.status_code, err.detail)


async def _send_json(send: Send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": [*headers, (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})
