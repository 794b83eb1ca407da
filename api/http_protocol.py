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
        self._in_head = True  # until the first request's headers are complete
        self._heads_done = 0
        self._head_bytes = 0

    def data_received(self, data: bytes) -> None:
        was_in_head, heads_done = self._in_head, self._heads_done
        super().data_received(data)
        if not was_in_head or self._heads_done != heads_done:
            # Body bytes, or a head that ended in this read (whatever follows it in the same
            # read, a body or a pipelined head, is at most one read).
            self._head_bytes = 0
            return
        self._head_bytes += len(data)
        if self._head_bytes > MAX_HEAD_BYTES and not self.transport.is_closing():
            self.transport.write(_TOO_LARGE % (len(_BODY), _BODY))
            self.transport.close()

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._heads_done += 1
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_head = True  # a kept-alive connection's next request starts
