"""What Upload and Export share about files: formats, compressions, CSV options and media types."""

from __future__ import annotations

import codecs
from dataclasses import dataclass

from server.core.errors import FieldViolation

COMPRESSIONS = ("none", "gzip", "zstd")

CONTENT_TYPES = {
    "csv": "text/csv",
    "jsonl": "application/x-ndjson",
    "parquet": "application/vnd.apache.parquet",
    "sql": "application/sql",
}
COMPRESSED_CONTENT_TYPES = {"gzip": "application/gzip", "zstd": "application/zstd"}
EXTENSIONS = {"csv": ".csv", "jsonl": ".jsonl", "parquet": ".parquet", "sql": ".sql"}
COMPRESSED_EXTENSIONS = {"gzip": ".gz", "zstd": ".zst"}


@dataclass(frozen=True, slots=True)
class CsvSpec:
    """CSV options as the client sent them (empty strings and None: not set)."""

    delimiter: str = ""
    header: bool | None = None
    quote: str = ""
    encoding: str = ""


def text_encoding(name: str) -> str | None:
    """Python's canonical name of a text encoding, or None if `name` is not one.

    `codecs.lookup` also knows codecs that are not text encodings (rot13, zlib,
    quopri); `str.encode` and `bytes.decode` refuse those, and a name with NUL
    makes lookup raise ValueError.
    """
    try:
        "".encode(name)
        b"".decode(name)
        return codecs.lookup(name).name
    except (LookupError, ValueError):
        return None


def compression_violations(fmt: str, compression: str, field: str, parquet_hint: str) -> list[FieldViolation]:
    """Problems of a file compression: a known one, and none of the text ones on Parquet (`parquet_hint` says why)."""
    if compression and compression not in COMPRESSIONS:
        return [FieldViolation(field, "must be NONE, GZIP or ZSTD")]
    if fmt == "parquet" and compression in ("gzip", "zstd"):
        return [FieldViolation(field, f"Parquet compresses its own columns{parquet_hint}")]
    return []


def csv_violations(csv: CsvSpec, path: str) -> list[FieldViolation]:
    """Problems of the delimiter, quote and encoding.

    Delimiter and quote are one printable ASCII character (or a tab): what both
    pyarrow's CSV reader (Upload) and PostgreSQL's COPY (Export) take.
    """
    violations = []
    for name, value in (("delimiter", csv.delimiter), ("quote", csv.quote)):
        if not value:
            continue
        if len(value) != 1 or not value.isascii() or (not value.isprintable() and value != "\t"):
            violations.append(FieldViolation(f"{path}.{name}", "must be one printable ASCII character or a tab"))
    if (csv.delimiter or ",") == (csv.quote or '"'):
        violations.append(FieldViolation(f"{path}.quote", "must differ from the delimiter"))
    if csv.encoding and text_encoding(csv.encoding) is None:
        violations.append(FieldViolation(f"{path}.encoding", f"unknown text encoding {csv.encoding!r}"))
    return violations
