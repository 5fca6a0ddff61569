"""What the async and sync clients share for Upload: the header, the file's chunks, resume rules.

The protocol (see job_service.proto): send the header, read `started` with the
committed offset, send chunks from there and `finish` with the size and
SHA-256, then read acks until `completed`. After a broken stream a new one
names the upload_id and continues from the committed offset it reports.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from client._requests import EnumLike, RetryPolicy, parse_compression, parse_file_format
from client.errors import DataLossError, DatamillError
from datamill.v1 import job_service_pb2, schema_pb2

#: Chunk size: 1 MiB is the fastest over gRPC (PITFALLS.md) and the largest the server takes.
CHUNK_SIZE = 1024 * 1024
_EXTENSIONS = {".csv": "csv", ".tsv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet"}
_COMPRESSED = {".gz": "gzip", ".zst": "zstd", ".zstd": "zstd"}

UploadProgress = Callable[[int, int, int], Any]
"""Called with (bytes sent, bytes committed by the server, file size) as the upload goes on."""

#: An Upload that was resumed this many times without the committed offset moving gives up.
UPLOAD_RETRY = RetryPolicy(max_attempts=10, initial_backoff=0.2, max_backoff=5.0)


@dataclass(frozen=True, slots=True)
class UploadOptions:
    """How the server should read an uploaded file.

    Attributes:
        format: "csv", "jsonl" or "parquet"; guessed from the file name when None.
        compression: "gzip", "zstd" or "none"; the server detects it when None.
        columns: (name, type) or (name, type, nullable) tuples; inferred by the server when empty.
        delimiter, header, quote, encoding: CSV options (server defaults: ",", True, '"', "utf-8").
        skip_malformed_rows: Skip and count rows that cannot be imported instead of failing.
    """

    format: EnumLike | None = None
    compression: EnumLike | None = None
    columns: Sequence[tuple[str, str] | tuple[str, str, bool]] = ()
    delimiter: str = ""
    header: bool | None = None
    quote: str = ""
    encoding: str = ""
    skip_malformed_rows: bool = False


def guess_format(path: Path) -> tuple[str | None, str | None]:
    """(format, compression) from a file name such as ``people.csv.gz``; None where it does not say."""
    suffixes = [s.lower() for s in path.suffixes]
    compression = _COMPRESSED.get(suffixes[-1]) if suffixes else None
    if compression is not None:
        suffixes = suffixes[:-1]
    return (_EXTENSIONS.get(suffixes[-1]) if suffixes else None), compression


def header_request(
    path: Path, dataset_name: str, options: UploadOptions, *, size: int, request_id: str
) -> job_service_pb2.UploadRequest:
    guessed_format, guessed_compression = guess_format(path)
    file_format = options.format or guessed_format
    if file_format is None:
        raise ValueError(f"cannot tell the format of {path.name!r}; pass format= (csv, jsonl or parquet)")
    compression = options.compression or guessed_compression
    delimiter = options.delimiter or ("\t" if path.suffixes[:1] == [".tsv"] else "")
    header = job_service_pb2.UploadHeader(
        file_name=path.name,
        format=parse_file_format(file_format),
        compression=parse_compression(compression) if compression else job_service_pb2.COMPRESSION_UNSPECIFIED,
        total_size=size,
        dataset_name=dataset_name,
        columns=[
            schema_pb2.Column(name=c[0], type=c[1], nullable=bool(c[2]) if len(c) > 2 else True)
            for c in options.columns
        ],
        csv_options=job_service_pb2.CsvOptions(
            delimiter=delimiter, header=options.header, quote=options.quote, encoding=options.encoding
        ),
        request_id=request_id,
        skip_malformed_rows=options.skip_malformed_rows,
    )
    return job_service_pb2.UploadRequest(header=header)


def resume_request(upload_id: str) -> job_service_pb2.UploadRequest:
    return job_service_pb2.UploadRequest(header=job_service_pb2.UploadHeader(upload_id=upload_id))


class FileSender:
    """The file's chunks from any offset, then `finish`; keeps the SHA-256 of everything before.

    A resume from an offset behind what was hashed re-reads the file's start,
    which costs a local read only when a stream broke.
    """

    def __init__(self, path: Path, *, chunk_size: int = CHUNK_SIZE) -> None:
        self.path = path
        self.size = os.stat(path).st_size
        self._chunk_size = chunk_size
        self._sha256 = hashlib.sha256()
        self._hashed = 0
        self.sent = 0

    def requests_from(self, offset: int) -> Iterator[job_service_pb2.UploadRequest]:
        if not 0 <= offset <= self.size:
            raise DataLossError(
                f"the server has {offset} bytes of this upload, but the file has {self.size}: is it the same file?"
            )
        with self.path.open("rb") as source:
            if offset < self._hashed:
                self._sha256, self._hashed = hashlib.sha256(), 0
            source.seek(self._hashed)
            while self._hashed < offset:  # hash what the server already has
                data = source.read(min(self._chunk_size, offset - self._hashed))
                if not data:
                    raise DataLossError(f"{self.path} shrank while uploading")
                self._sha256.update(data)
                self._hashed += len(data)
            self.sent = offset
            while data := source.read(self._chunk_size):
                self._sha256.update(data)
                self._hashed += len(data)
                yield job_service_pb2.UploadRequest(
                    chunk=job_service_pb2.UploadChunk(write_offset=self.sent, data=data)
                )
                self.sent += len(data)
        if self.sent != self.size:
            raise DataLossError(f"{self.path} changed size while uploading")
        yield job_service_pb2.UploadRequest(
            finish=job_service_pb2.UploadFinish(total_size=self.size, sha256=self._sha256.hexdigest())
        )


def is_resumable(error: DatamillError) -> bool:
    """A broken stream (server gone, connection reset) is resumed; anything the server said is final."""
    return error.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED, grpc.StatusCode.UNKNOWN) or (
        error.code == grpc.StatusCode.INTERNAL and "RST_STREAM" in error.message
    )
