"""uvicorn's httptools protocol with a bound on the request head (request line + headers).

httptools has no limit of its own: measured, a 20 MB header line is buffered and handed to
the app. h11 has one (``--h11-max-incomplete-event-size``) but costs throughput. Here the
bytes received while a request's head is incomplete are counted after each read; past
``MAX_HEAD_BYTES`` the client gets ``431`` and the connection is closed, so memory held for
one head is at most the bound plus one read. Used by ``conveyor api``
(``--http api.http_protocol:BoundedHttpToolsProtocol``).
"""

from __future__ import annotations

from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

MAX_HEAD_BYTES = 64 * 1024
_TOO_LARGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
    b"content-type: application/problem+json\r\n"
    b"connection: close\r\n"
    b"content-length: %d\r\n\r\n%s"
)
_BODY = (
    b'{"type":"https://conveyor.dev/problems/headers_too_large",'
    b'"title":"Request Header Fields Too Large","status":431,"code":"headers_too_large",'
    b'"message":"The request line and headers exceed 64 KiB.",'
    b'"detail":"The request line and headers exceed 64 KiB.","where":null,"request_id":null}'
)


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_complete = False
        self._head_bytes = 0

    def data_received(self, data: bytes) -> None:
        in_head = not self._head_complete
        super().data_received(data)
        if not in_head or self._head_complete:
            return
        self._head_bytes += len(data)
        if self._head_bytes > MAX_HEAD_BYTES and not self.transport.is_closing():
            self.transport.write(_TOO_LARGE % (len(_BODY), _BODY))
            self.transport.close()

    def on_headers_complete(self) -> None:
        self._head_complete = True
        self._head_bytes = 0
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._head_complete = False  # a kept-alive connection's next request starts
