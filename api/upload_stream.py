"""Receiving a multipart form whose file part streams straight to upload storage.

Starlette's ``request.form()`` spools a file part to a temporary file in full before the
endpoint sees it, so an oversized upload without Content-Length would fill the disk first.
Here python-multipart's push parser feeds the file part into ``core.storage.UploadWriter``
as it arrives (1 MiB writes, in the threadpool): the size cap is enforced while receiving,
the sha256 is computed on the way, and memory holds at most one buffer.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from core.errors import BadRequest, ConveyorError, InvalidRequest, PayloadTooLarge
from core.storage import StoredUpload, UploadWriter

FLUSH_BYTES = 1 << 20
MAX_FIELD_BYTES = 64 * 1024
MAX_FIELDS = 32
# Multipart framing around the file (boundaries, part headers, small fields).
FRAMING_ALLOWANCE = 64 * 1024


@dataclass
class ReceivedForm:
    fields: dict[str, str]
    upload: StoredUpload | None
    filename: str | None


@dataclass
class _Part:
    name: str = ""
    filename: str | None = None
    data: bytearray = field(default_factory=bytearray)


class _FormReceiver:
    """python-multipart callbacks; file bytes are buffered here and flushed by the caller."""

    def __init__(
        self,
        file_field: str,
        writer: UploadWriter,
        max_bytes: int,
        quota: tuple[int, ConveyorError] | None = None,
    ) -> None:
        self.file_field = file_field
        self.writer = writer
        self.max_bytes = max_bytes
        self.quota = quota  # (bytes left, the error to raise past them)
        self.ended = False  # the closing boundary was seen
        self.fields: dict[str, str] = {}
        self.filename: str | None = None
        self.file_seen = False
        self.file_bytes = 0
        self.pending = bytearray()
        self._part = _Part()
        self._header_name = b""
        self._header_value = b""
        self._disposition = b""

    def on_part_begin(self) -> None:
        self._part = _Part()
        self._disposition = b""

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def on_header_end(self) -> None:
        if self._header_name.lower() == b"content-disposition":
            self._disposition = self._header_value
        self._header_name, self._header_value = b"", b""

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self._disposition)
        if b"name" not in options:
            raise InvalidRequest("A multipart part has no name.")
        self._part.name = options[b"name"].decode("utf-8", "replace")
        if b"filename" in options:
            if self._part.name != self.file_field or self.file_seen:
                raise InvalidRequest(
                    f"Send exactly one file, in the {self.file_field!r} field.",
                    where={"field": self._part.name},
                )
            self.file_seen = True
            self._part.filename = options[b"filename"].decode("utf-8", "replace")
            self.filename = self._part.filename

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._part.filename is not None:
            self.file_bytes += end - start
            if self.file_bytes > self.max_bytes:
                raise PayloadTooLarge(
                    f"The upload is larger than the {self.max_bytes:,}-byte limit.",
                    where={"field": self.file_field},
                )
            if self.quota is not None and self.file_bytes > self.quota[0]:
                raise self.quota[1]
            self.pending += data[start:end]
            return
        if len(self._part.data) + end - start > MAX_FIELD_BYTES:
            raise InvalidRequest(f"Form field {self._part.name!r} is too long.")
        self._part.data += data[start:end]

    def on_part_end(self) -> None:
        if self._part.filename is not None:
            return
        if len(self.fields) >= MAX_FIELDS:
            raise InvalidRequest("Too many form fields.")
        self.fields[self._part.name] = self._part.data.decode("utf-8", "replace")

    def on_end(self) -> None:
        self.ended = True

    def callbacks(self) -> dict[str, object]:
        return {
            name: getattr(self, name)
            for name in (
                "on_part_begin",
                "on_part_data",
                "on_part_end",
                "on_header_field",
                "on_header_value",
                "on_header_end",
                "on_headers_finished",
                "on_end",
            )
        }


def check_content_length(
    request: Request, max_bytes: int, *, too_large: ConveyorError | None = None
) -> None:
    """Refuse at once what cannot fit, before reading the body."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes + FRAMING_ALLOWANCE:
        raise too_large or PayloadTooLarge(
            f"The upload is larger than the {max_bytes:,}-byte limit."
        )


def _boundary(request: Request) -> bytes:
    media_type, options = parse_options_header(request.headers.get("content-type"))
    if media_type != b"multipart/form-data" or b"boundary" not in options:
        raise InvalidRequest(
            "Send the CSV as multipart/form-data (a 'file' part and form fields).",
            where={"header": "Content-Type"},
        )
    return options[b"boundary"]


async def receive_form(
    request: Request,
    *,
    writer: UploadWriter,
    file_field: str,
    max_bytes: int,
    quota: tuple[int, ConveyorError] | None = None,
) -> ReceivedForm:
    """Parse the request's multipart body; the file part goes into ``writer``.

    The caller owns ``writer`` (and aborts it on any error raised here). A body that ends
    before its closing boundary (a client that died mid-upload, a proxy that cut it) is
    refused as malformed: its file part would be a truncated CSV.
    """
    receiver = _FormReceiver(file_field, writer, max_bytes, quota)
    parser = MultipartParser(_boundary(request), receiver.callbacks())  # type: ignore[arg-type]
    try:
        async for chunk in request.stream():
            parser.write(chunk)
            if len(receiver.pending) >= FLUSH_BYTES:
                await _flush(receiver)
        parser.finalize()
    except MultipartParseError as error:
        raise BadRequest(f"Malformed multipart body: {str(error)[:200]}") from error
    if not receiver.ended:
        raise BadRequest(
            "The multipart body ended before its closing boundary (truncated upload); "
            "nothing was stored."
        )
    await _flush(receiver)
    upload = await run_in_threadpool(writer.finish) if receiver.file_seen else None
    return ReceivedForm(fields=receiver.fields, upload=upload, filename=receiver.filename)


async def _flush(receiver: _FormReceiver) -> None:
    if receiver.pending:
        chunk = bytes(receiver.pending)
        receiver.pending.clear()
        await run_in_threadpool(receiver.writer.write, chunk)
