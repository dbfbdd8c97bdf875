"""``multipart/form-data`` uploads streamed to a temp file with a size limit (python-multipart's streaming parser):
the file part goes to disk as it arrives, never whole into memory, and an upload over the limit stops there."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import Request

from tunesmith.server.http import APIError

MAX_FIELD_BYTES = 4096  # the form's other fields (purpose, ...) are short


@dataclass
class Upload:
    fields: dict[str, str] = field(default_factory=dict)
    filename: str | None = None
    size: int = 0


async def receive_upload(request: Request, temp: Path, limit: int) -> Upload:
    """Parse the form; the part named ``file`` is written to ``temp``. 413 past ``limit`` bytes, 400 if malformed."""
    from python_multipart.multipart import MultipartParser, parse_options_header

    kind, options = parse_options_header(request.headers.get("content-type", ""))
    boundary = options.get(b"boundary")
    if kind != b"multipart/form-data" or not boundary:
        raise APIError(400, "upload the file as multipart/form-data with fields 'file' and 'purpose'")
    declared = request.headers.get("content-length", "")
    too_big = APIError(413, f"the upload is too large; the limit is {limit} bytes", code="file_too_large")
    if declared.isdigit() and int(declared) > limit:
        raise too_big
    upload, state = Upload(), _PartState()
    handle = temp.open("wb")
    try:
        parser = MultipartParser(boundary, _callbacks(upload, state, handle))
        received = 0
        async for chunk in request.stream():
            received += len(chunk)
            if received > limit:
                raise too_big
            parser.write(chunk)
        parser.finalize()
    except APIError:
        raise
    except Exception as exc:  # python-multipart's parse errors
        raise APIError(400, f"malformed multipart body: {exc}") from None
    finally:
        handle.close()
    if upload.filename is None:
        raise APIError(400, "the form has no 'file' part", param="file")
    return upload


@dataclass
class _PartState:
    headers: dict[bytes, bytes] = field(default_factory=dict)
    header_field: bytes = b""
    header_value: bytes = b""
    name: str | None = None
    is_file: bool = False
    value: bytearray = field(default_factory=bytearray)


def _callbacks(upload: Upload, state: _PartState, handle: Any) -> dict[str, Any]:
    from python_multipart.multipart import parse_options_header

    def part_begin() -> None:
        state.headers, state.name, state.is_file, state.value = {}, None, False, bytearray()

    def header_field(data: bytes, start: int, end: int) -> None:
        state.header_field += data[start:end]

    def header_value(data: bytes, start: int, end: int) -> None:
        state.header_value += data[start:end]

    def header_end() -> None:
        state.headers[state.header_field.lower()] = state.header_value
        state.header_field, state.header_value = b"", b""

    def headers_finished() -> None:
        _, options = parse_options_header(state.headers.get(b"content-disposition", b""))
        state.name = options.get(b"name", b"").decode("utf-8", "replace")
        filename = options.get(b"filename")
        state.is_file = state.name == "file" and filename is not None
        if state.is_file:
            if upload.filename is not None:
                raise APIError(400, "upload one file per request", param="file")
            upload.filename = filename.decode("utf-8", "replace")

    def part_data(data: bytes, start: int, end: int) -> None:
        if state.is_file:
            handle.write(data[start:end])
            upload.size += end - start
            return
        state.value += data[start:end]
        if len(state.value) > MAX_FIELD_BYTES:
            raise APIError(400, f"form field {state.name!r} is longer than {MAX_FIELD_BYTES} bytes")

    def part_end() -> None:
        if not state.is_file and state.name:
            with contextlib.suppress(UnicodeDecodeError):
                upload.fields[state.name] = state.value.decode("utf-8")

    return {
        "on_part_begin": part_begin,
        "on_header_field": header_field,
        "on_header_value": header_value,
        "on_header_end": header_end,
        "on_headers_finished": headers_finished,
        "on_part_data": part_data,
        "on_part_end": part_end,
    }
