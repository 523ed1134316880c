"""Running the app under uvicorn with the connection-level limits a public endpoint needs.

uvicorn's defaults accept headers of any size (with httptools), keep connections that never send a
request open forever and admit any number of them. ``uvicorn_config`` therefore runs the h11 parser with
a header limit (``max_header_kb``), ``limit_concurrency`` (connections plus running requests; beyond it
uvicorn answers 503 at once), ``timeout_keep_alive_s`` for idle keep-alive connections, and its own protocol
subclass (``limited_h11_protocol``) that

- answers a request line + headers above the limit with 431 (Request Header Fields Too Large, the status
  h11 hints at; uvicorn itself answers every protocol error with 400), other malformed requests with 400;
- closes a connection whose request headers are not complete ``header_timeout_s`` after it opened or after
  its last response (slow-loris clients).

Stalled request bodies are the app's part (``BodyLimitMiddleware``: a pause longer than ``body_timeout_s``
between two chunks, 10 s by default, is answered 408).

What stays for a reverse proxy in front (nginx, Envoy, a cloud load balancer): TLS; per-client connection
and request-rate limits (one client can still take all ``limit_concurrency`` slots); its own header, body
and idle timeouts, and a minimum upload rate or whole-body deadline (``body_timeout_s`` bounds each pause,
not a body that trickles in a byte every few seconds; nginx buffers the whole body before it forwards it,
``proxy_request_buffering on``, which covers this); and a body size limit at or below ``max_upload_mb``,
so oversized uploads never reach the service.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

if TYPE_CHECKING:
    import uvicorn
    from fastapi import FastAPI

    from service.settings import ServiceSettings

__all__ = ["limited_h11_protocol", "uvicorn_config", "uvicorn_options"]


def limited_h11_protocol(timeout_s: float, max_header_kb: int) -> type[H11Protocol]:
    """uvicorn's h11 protocol answering header floods with 431 and closing connections whose request headers take
    longer than ``timeout_s``.

    The header clock starts when the connection opens and again when a response has been sent; it stops when
    a request's headers are complete (the body has its own deadline in the app). ``max_header_kb`` is only
    quoted in the 431 message: the limit itself is h11's ``max_incomplete_event_size`` (``uvicorn_options``).
    """

    class _LimitedH11Protocol(H11Protocol):
        _header_timer: asyncio.TimerHandle | None = None
        _error_status: int = 400

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            next_event = self.conn.next_event

            def _next_event() -> Any:  # keep h11's status hint, which uvicorn drops
                try:
                    return next_event()
                except h11.RemoteProtocolError as err:
                    self._error_status = err.error_status_hint
                    raise

            self.conn.next_event = _next_event

        def send_400_response(self, msg: str) -> None:
            if self._error_status != 431:
                super().send_400_response(msg)
                return
            self.logger.warning("request headers over %d KiB: 431", max_header_kb)
            text = f"request line and headers larger than the limit of {max_header_kb} KiB (CASCADE_MAX_HEADER_KB)"
            headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"connection", b"close")]
            response = h11.Response(status_code=431, headers=headers, reason=b"Request Header Fields Too Large")
            self.transport.write(self.conn.send(response))
            self.transport.write(self.conn.send(h11.Data(data=text.encode())))
            self.transport.write(self.conn.send(h11.EndOfMessage()))
            self.transport.close()

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._arm_header_timer()

        def connection_lost(self, exc: Exception | None) -> None:
            self._cancel_header_timer()
            super().connection_lost(exc)

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm_header_timer()

        def _arm_header_timer(self) -> None:
            self._cancel_header_timer()
            self._header_timer = self.loop.call_later(timeout_s, self._header_deadline)

        def _cancel_header_timer(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _header_deadline(self) -> None:
            self._header_timer = None
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():  # no complete request head
                self.logger.debug("closing a connection that sent no complete request head in %g s", timeout_s)
                self.transport.close()

    return _LimitedH11Protocol


def uvicorn_options(settings: ServiceSettings, *, log_level: str = "info") -> dict[str, Any]:
    """Keyword arguments of ``uvicorn.run`` / ``uvicorn.Config`` for ``cascade serve``: host, port and the
    connection limits of ``settings``."""
    return {
        "host": settings.host,
        "port": settings.port,
        "log_level": log_level,
        "workers": 1,
        "http": limited_h11_protocol(settings.header_timeout_s, settings.max_header_kb),
        "h11_max_incomplete_event_size": settings.max_header_kb * 1024,
        "limit_concurrency": settings.limit_concurrency,
        "timeout_keep_alive": settings.timeout_keep_alive_s,
    }


def uvicorn_config(app: FastAPI, settings: ServiceSettings, *, log_level: str = "info") -> uvicorn.Config:
    """``uvicorn.Config`` of ``app`` with ``uvicorn_options`` (to run it with ``uvicorn.Server``, e.g. in a thread)."""
    import uvicorn

    return uvicorn.Config(app, **uvicorn_options(settings, log_level=log_level))
